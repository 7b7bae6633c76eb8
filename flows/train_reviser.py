"""Flow `train-reviser`: fine-tune the base model into the revision model.

The story: read the revision trajectories; turn each into (the problem with its
incorrect attempts in context, the correct attempt); fine-tune with the loss on the
correct attempt only (models/reviser.py); save safetensors and register
`ttscale-reviser` in MLflow; then measure whether it reads its context: on trajectories
built the same way from the bank's test-split solutions (problems it never saw), how much
a target's loss falls with its wrong attempts in the prompt against none, paired by
problem (`reviser_context_gain` in MLflow and `metrics`). Re-running with the same data
and settings returns at once.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig, ReviserConfig
from ttscale.flows.revision_data import data_ids
from ttscale.flows.stage import stage_run, user_errors
from ttscale.models.reviser import (ContextRoom, ReviserTrainResult, first_edit, target_nll,
                                    train_reviser as fit_reviser)
from ttscale.tasks.comparison import Comparison, paired
from ttscale.tasks.problems import Problem, load_problems
from ttscale.tasks.revisions import fitted, revision_prompt, trajectories
from ttscale.tasks.sampling import bank_id, prompt_for, sampling_spec, stable_hash
from ttscale.tasks.tracking import log_metrics, register_model
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint, staged_dir, trained_record, write_record
from ttscale.warehouse.store import Warehouse

STAGE = "train-reviser"
REGISTERED_NAME = "ttscale-reviser"


@task(cache_policy=NO_CACHE)
def fit(cfg: ReviserConfig, base_dir: Path, examples: Sequence[tuple[str, str, int | None]], out_dir: Path
        ) -> ReviserTrainResult:
    return fit_reviser(cfg, base_dir, examples, out_dir)


def training_examples(rows: Sequence[dict], problems: dict[str, Problem], room: ContextRoom
                      ) -> tuple[list[tuple[str, str, int | None]], int]:
    """(revision prompt, target, first edit) per stored trajectory, each within reviser.max_seq_len: a
    context too long loses its oldest wrong attempts. Returns the examples and how many were shortened."""
    examples, shortened = [], 0
    for r in rows:
        if (problem := problems.get(r["problem_id"])) is None:
            continue
        after = room.tokens(r["target"]) + 1  # the target and <eos>
        context = fitted(problem, r["context"], lambda prompt: room.fits(prompt, after))
        shortened += len(context) < len(r["context"])
        examples.append((revision_prompt(problem, context), r["target"], first_edit(r["target"], context)))
    return examples, shortened


@task(cache_policy=NO_CACHE)
def context_gain(wh: Warehouse, config: PipelineConfig, base_dir: Path, model_dir: Path,
                 problems: dict[str, Problem]) -> list[tuple[int, Comparison]]:
    """The reviser's loss on held-out correct targets without their context minus with it (nats per target,
    paired by problem; above zero: the context helps it), as (level, comparison), level 0 (all) first.
    Trajectories are built as for training (two per problem), from the bank's test-split solutions and the problem's
    reference solution where it has one (so hard problems with no correct sample count too); only those
    with a context count."""
    bank = bank_id(fingerprint(base_dir), sampling_spec(config.bank))
    rows = wh.query("SELECT problem_id, text, correct FROM candidates WHERE bank_id = ? AND method = 'sample' "
                    "ORDER BY problem_id, sample_index", [bank]).to_pylist()
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if (p := problems.get(r["problem_id"])) is not None and p.split == "test":
            by_problem[r["problem_id"]].append(r)
    built = []
    for pid, group in sorted(by_problem.items()):
        rng = random.Random(stable_hash("context-gain", pid))
        reference = problems[pid].meta.get("reference_solution")
        texts = [r["text"] for r in group] + ([reference] if reference else [])
        correct = [r["correct"] for r in group] + ([True] if reference else [])
        built += [{"problem_id": pid, "context": t.context, "target": t.target}
                 for t in trajectories(pid, texts, correct, config.revisions.data.max_context, 2, rng)]
    examples, _ = training_examples(built, problems, ContextRoom(model_dir))  # every row's problem is known
    kept = [(problems[r["problem_id"]], prompt, target) for r, (prompt, target, edit) in zip(built, examples)
            if edit is not None]  # a context survived the fitting
    if not kept:
        return []
    # one model load: the targets with their context, then the same targets after the bare problem
    nll = target_nll(model_dir, [(prompt, target) for _, prompt, target in kept]
                     + [(prompt_for(p), target) for p, _, target in kept], config.revisions.reviser.threads)
    shown, bare = nll[: len(kept)], nll[len(kept):]
    out = []
    for level in [0, *sorted({p.level for p, *_ in kept})]:
        a: dict[str, list[float]] = defaultdict(list)
        b: dict[str, list[float]] = defaultdict(list)
        for (p, *_), s, n in zip(kept, shown, bare):
            if level in (0, p.level):
                a[p.problem_id].append(-s)
                b[p.problem_id].append(-n)
        out.append((level, paired(a, b, finding=4, claim="the reviser reads its context", a_name="with context",
                                  b_name="without", stratum=f"level {level}" if level else "all", unit="nats",
                                  decides=level == 0)))
    return out


def gain_values(c: Comparison) -> tuple[tuple[str, float], ...]:
    """(name suffix, value) of one context-gain comparison, the same in `metrics` and MLflow."""
    return (("", c.effect), ("_lo", c.lo), ("_hi", c.hi), ("_problems", float(c.problems)))


def gain_table(gains: Sequence[tuple[int, Comparison]], run_id: str) -> pa.Table:
    """`metrics` rows reviser_context_gain[_lo|_hi|_problems] per level (0 = all levels)."""
    return pa.Table.from_pylist([{"run_id": run_id, "name": f"reviser_context_gain{suffix}", "level": level, "k": 0,
                                  "value": value} for level, c in gains for suffix, value in gain_values(c)])


@flow(name=STAGE, log_prints=True)
@user_errors
def train_reviser(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Train (or find already trained) the revision model; returns its folder."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    base_dir = wd.require_model(config.generator.model)
    _, data_id = data_ids(fingerprint(base_dir), config.revisions.data)
    cfg = config.revisions.reviser
    out = wd.models / "reviser"
    key = stable_hash(STAGE, data_id, cfg.model_dump(), fingerprint(base_dir))
    if trained_record(out, key) is not None:
        logger.info("revision model already trained on %s with these settings: %s", data_id, out)
        return str(out)
    problems = {p.problem_id: p for p in load_problems(config.task)}
    with Warehouse(wd.warehouse) as wh:
        rows = wh.query("SELECT problem_id, context, target FROM revision_trajectories WHERE data_id = ? "
                        "ORDER BY trajectory_id", [data_id]).to_pylist()
        if not rows:
            raise ValueError(f"no revision trajectories {data_id}: run `ttscale revision-data` first")
        examples, shortened = training_examples(rows, problems, ContextRoom(base_dir, cfg.max_seq_len))
        run_id = stable_hash(STAGE, key)
        with staged_dir(out) as tmp, stage_run(wh, wd, STAGE, run_id, config,
                                               {"revisions.reviser": cfg.model_dump(), "revision_data_id": data_id,
                                                "trajectories": len(examples)},
                                               {"revision_data_id": data_id}) as ml_id:
            result = fit(cfg, base_dir, examples, tmp)
            log_metrics(ml_id, [("reviser_train_loss", loss, step) for step, loss in result.losses]
                        + [("reviser_updates", result.updates, 0), ("reviser_examples", result.examples, 0),
                           ("reviser_skipped_too_long", result.skipped_too_long, 0),
                           ("reviser_contexts_shortened", shortened, 0),
                           ("reviser_train_tokens", result.tokens, 0),
                           ("reviser_train_flops", 6.0 * result.trainable_params * result.tokens, 0)])
            version = register_model(ml_id, tmp, "reviser", REGISTERED_NAME)
            write_record(tmp, {"key": key, "mlflow_run_id": ml_id, "registered": REGISTERED_NAME,
                               "version": version, "revision_data_id": data_id, "run_id": run_id})
            gains = context_gain(wh, config, base_dir, tmp, problems)
            wh.insert("metrics", gain_table(gains, run_id))
            log_metrics(ml_id, [(f"reviser_context_gain{suffix}" + (f"/level_{level}" if level else ""), value, 0)
                                for level, c in gains for suffix, value in gain_values(c)])
    if gains:
        whole = gains[0][1]
        logger.info("context gain on %d held-out test problems: %+.3f [%+.3f, %+.3f] nats per target (%s)",
                    whole.problems, whole.effect, whole.lo, whole.hi, whole.verdict)
    else:
        logger.info("no test-split bank solutions with a context: the context gain was not measured")
    if shortened:
        logger.info("%d of %d trajectories lost their oldest attempts to fit reviser.max_seq_len=%d",
                    shortened, len(examples), cfg.max_seq_len)
    if result.skipped_too_long:
        logger.warning("%d trajectories longer than reviser.max_seq_len=%d were skipped",
                       result.skipped_too_long, cfg.max_seq_len)
    logger.info("revision model (%s) on %d trajectories: %d updates, final loss %.3f; registered %s v%d",
                cfg.mode, result.examples, result.updates, result.losses[-1][1] if result.losses else float("nan"),
                REGISTERED_NAME, version)
    return str(out)
