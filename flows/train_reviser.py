"""Flow `train-reviser`: fine-tune the base model into the revision model.

The story: read the revision trajectories; turn each into (the problem with its
incorrect attempts in context, the correct attempt); fine-tune with the loss on the
correct attempt only (models/reviser.py); save safetensors and register
`ttscale-reviser` in MLflow. Re-running with the same data and settings returns at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig, ReviserConfig
from ttscale.flows.revision_data import data_ids
from ttscale.flows.stage import stage_run, user_errors
from ttscale.models.reviser import ContextRoom, ReviserTrainResult, train_reviser as fit_reviser
from ttscale.tasks.problems import Problem, load_problems
from ttscale.tasks.revisions import fitted, revision_prompt
from ttscale.tasks.sampling import stable_hash
from ttscale.tasks.tracking import log_metrics, register_model
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint, staged_dir, trained_record, write_record
from ttscale.warehouse.store import Warehouse

STAGE = "train-reviser"
REGISTERED_NAME = "ttscale-reviser"


@task(cache_policy=NO_CACHE)
def fit(cfg: ReviserConfig, base_dir: Path, examples: Sequence[tuple[str, str]], out_dir: Path) -> ReviserTrainResult:
    return fit_reviser(cfg, base_dir, examples, out_dir)


def training_examples(rows: Sequence[dict], problems: dict[str, Problem], room: ContextRoom
                      ) -> tuple[list[tuple[str, str]], int]:
    """(revision prompt, target) per stored trajectory, each within reviser.max_seq_len: a context too
    long loses its oldest wrong attempts. Returns the examples and how many were shortened."""
    examples, shortened = [], 0
    for r in rows:
        if (problem := problems.get(r["problem_id"])) is None:
            continue
        after = room.tokens(r["target"]) + 1  # the target and <eos>
        context = fitted(problem, r["context"], lambda prompt: room.fits(prompt, after))
        shortened += len(context) < len(r["context"])
        examples.append((revision_prompt(problem, context), r["target"]))
    return examples, shortened


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
                               "version": version, "revision_data_id": data_id})
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
