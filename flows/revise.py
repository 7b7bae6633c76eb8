"""Flow `revise`: revision chains on the test problems and the sequential:parallel sweep.

The story: grow one staircase of chains per problem with the revision model (every
(budget N, chain length L) is cut from it; one generator call per round, each round one
transaction); score every attempt with the ORM and, when there is one, the PRM's
last step; let each selection rule pick an answer for every (N, L); then read the
`revision_curves` view back, state the paper's revision findings, and publish a heat map.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.tasks.sampling import sampling_spec
from ttscale.models.scorers import resolve_prm, scorer_key
from ttscale.flows.stage import stage_run, user_errors
from ttscale.tasks.revisions import chain_editor, chain_model, chain_set_key, chain_spec, run_chains
from ttscale.workdir import read_record
from ttscale.models.generator import open_generator
from ttscale.models.prm import StepScorer
from ttscale.models.scorers import ScorerSource, open_scorer
from ttscale.tasks.findings import easy_and_hard, problem_levels, revision_comparisons, stored_revision_outcomes
from ttscale.tasks.reports.findings import comparison_lines
from ttscale.tasks.grading import split_steps
from ttscale.tasks.problems import Problem, load_problems
from ttscale.tasks.reports.revision import (RevisionFindings, plot_heatmaps, revision_markdown, revision_metrics,
                                            teacher_forced_lines)
from ttscale.tasks.revision_sweep import RULES, ChainAttempt, selections_table, sweep
from ttscale.tasks.revisions import staircase
from ttscale.tasks.sampling import bank_id, problems_table, prompt_for, stable_hash
from ttscale.tasks.tracking import log_metrics, publish_report
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint
from ttscale.warehouse.store import Warehouse

# A Prefect task, so each call shows in the flow run's graph.
run_chains_task = task(run_chains, name="run-chains", cache_policy=NO_CACHE)

STAGE = "revise"
SCORE_SCHEMA = pa.schema([("attempt_id", pa.string()), ("verifier", pa.string()), ("scorer_id", pa.string()),
                          ("score", pa.float64())])


@task(cache_policy=NO_CACHE)
def score_attempts(wh: Warehouse, chain_set_id: str, verifier: str, scorer: StepScorer, scorer_id: str,
                   problems: dict[str, Problem], steps_of: Callable[[str], list[str]]) -> int:
    """Score every attempt of the set this scorer has not scored; the last step's score is the attempt's."""
    rows = wh.query("SELECT attempt_id, problem_id, text FROM revision_attempts a WHERE chain_set_id = ? AND NOT EXISTS "
                    "(SELECT 1 FROM revision_scores s WHERE s.attempt_id = a.attempt_id AND s.verifier = ? "
                    "AND s.scorer_id = ?) ORDER BY attempt_id", [chain_set_id, verifier, scorer_id]).to_pylist()
    for i in range(0, len(rows), 500):
        chunk = rows[i : i + 500]
        scores = scorer.score([prompt_for(problems[r["problem_id"]]) for r in chunk],
                              [steps_of(r["text"]) for r in chunk])
        table = pa.table({"attempt_id": [r["attempt_id"] for r in chunk], "verifier": [verifier] * len(chunk),
                          "scorer_id": [scorer_id] * len(chunk), "score": [s[-1] if s else 0.0 for s in scores]},
                         schema=SCORE_SCHEMA)
        with wh.transaction():
            wh.insert("revision_scores", table)
    return len(rows)


def verifiers(config: PipelineConfig, wd: Workdir) -> dict[str, tuple[ScorerSource, str | None, Callable[[str], list[str]]]]:
    """verifier -> (weights, step separator, how an attempt becomes steps). The PRM joins when one exists."""
    out = {"orm": (ScorerSource("prm", wd.models / "orm"), None, lambda text: [text])}
    if not out["orm"][0].path.is_dir():
        raise FileNotFoundError(f"no ORM at {out['orm'][0].path}: run `ttscale train-orm` first")
    try:
        out["prm"] = (resolve_prm(config.scoring.prm, wd, config.generator, config.scoring.prm_format), config.scoring.step_separator, split_steps)
    except (FileNotFoundError, ValueError):
        pass  # no PRM in this workdir: the sweep runs with the ORM and majority only
    return out


def sweep_ids(config: PipelineConfig, wd: Workdir, scorer_dirs: dict | None = None,
              problems: Sequence[Problem] | None = None) -> tuple[str, str, dict[str, str], list[str]]:
    """(chain set id, sweep run id, verifier -> scorer id, rules): what identifies this config's sweep.

    Other stages (allocate, report) call it with the config alone to find the sweep's rows."""
    cfg = config.revisions.chains
    lengths = staircase(cfg.budget) * cfg.chain_sets
    chain_set_id = chain_set_key("sweep", chain_model(config, wd), lengths, cfg.window, chain_spec(config),
                                 config.generator.backend, cfg.edit)
    scorers = {v: scorer_key(path, sep) for v, (path, sep, _) in (scorer_dirs or verifiers(config, wd)).items()}
    rules = [r for r in RULES if r.split("_")[0] in ("oracle", "majority", *scorers)]
    if problems is None:
        problems = [p for p in load_problems(config.task) if p.split == "test"][: cfg.problems]
    ids = [p.problem_id for p in problems]
    return chain_set_id, stable_hash(STAGE, chain_set_id, ids, scorers, rules, cfg.seed), scorers, rules


def chains_by_problem(wh: Warehouse, chain_set_id: str, scorers: dict[str, str]) -> dict[str, dict[int, list[ChainAttempt]]]:
    rows = wh.query("SELECT a.problem_id, a.chain, a.position, a.final_answer, a.correct, "
                    "map_from_entries(list((s.verifier, s.score)) FILTER (WHERE s.verifier IS NOT NULL)) AS scores "
                    "FROM revision_attempts a LEFT JOIN revision_scores s ON s.attempt_id = a.attempt_id "
                    "AND list_contains(?, s.scorer_id) WHERE a.chain_set_id = ? GROUP BY ALL "
                    "ORDER BY a.problem_id, a.chain, a.position", [list(scorers.values()), chain_set_id]).to_pylist()
    out: dict[str, dict[int, list[ChainAttempt]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[r["problem_id"]][r["chain"]].append(ChainAttempt(r["final_answer"], r["correct"], dict(r["scores"] or {})))
    return out


@flow(name=STAGE, log_prints=True)
@user_errors
def revise(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Run the revision sweep on the first test problems; returns the chain set id."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    cfg = config.revisions.chains
    base_dir = wd.require_model(config.generator.model)
    model = chain_model(config, wd)  # the revision model (or the base model, for restarts): asked for first
    spec = chain_spec(config)
    lengths = staircase(cfg.budget) * cfg.chain_sets
    all_problems = load_problems(config.task)
    problems = [p for p in all_problems if p.split == "test"][: cfg.problems]
    scorer_dirs = verifiers(config, wd)
    chain_set_id, run_id, scorers, rules = sweep_ids(config, wd, scorer_dirs, problems)
    with Warehouse(wd.warehouse) as wh:
        wh.insert("problems", problems_table(all_problems))
        if wh.is_finished(run_id):
            logger.info("revision sweep %s already done; the curves are in the warehouse and MLflow", chain_set_id)
            return chain_set_id
        with stage_run(wh, wd, STAGE, run_id, config, {"revisions.chains": cfg.model_dump(), "scorers": scorers},
                       {"chain_set_id": chain_set_id}) as ml_id:
            with open_generator(config.generator, model) as generator:
                run_chains_task(generator, chain_editor(config, model), problems, lengths, spec, chain_set_id, run_id,
                                wh, STAGE)
            by_id = {p.problem_id: p for p in problems}
            for verifier, (path, sep, steps_of) in scorer_dirs.items():
                scorer = open_scorer(path, config.scoring.model_copy(update={"step_separator": sep}))
                score_attempts(wh, chain_set_id, verifier, scorer, scorers[verifier], by_id, steps_of)
            chains = chains_by_problem(wh, chain_set_id, scorers)
            rows = sweep({p.problem_id: chains[p.problem_id] for p in problems}, cfg.budget, cfg.chain_sets, rules,
                         cfg.seed)
            with wh.transaction():  # derived from the attempts: replaced whole
                wh.con.execute("DELETE FROM revision_selections WHERE chain_set_id = ? AND run_id = ?",
                               [chain_set_id, run_id])
                wh.insert("revision_selections", selections_table(rows, chain_set_id, run_id))
            bank = bank_id(fingerprint(base_dir), sampling_spec(config.bank))
            found = RevisionFindings.read(wh, chain_set_id, run_id, [p.problem_id for p in problems], bank, cfg.rule)
            easy, hard = easy_and_hard(wh, bank)
            comparisons = revision_comparisons(stored_revision_outcomes(wh, chain_set_id, run_id, found.rule),
                                               problem_levels(wh), easy, hard, found.rule, config.allocation.seed)
            log_metrics(ml_id, revision_metrics(found))
            plot = plot_heatmaps(found, wd.reports / f"{STAGE}-{chain_set_id}.png")
            publish_report(wd.reports, f"{STAGE}-{chain_set_id}",
                           revision_markdown(found, f"Sequential revisions ({config.name}, chain set {chain_set_id})",
                                             comparison_lines(comparisons) + found.measurements()
                                             + (teacher_forced_lines(wh, (read_record(model) or {}).get("run_id"))
                                                if cfg.uses_reviser else [])),
                           plot, "revision-sweep", "accuracy over (budget N, chain length L) per level")
    logger.info("revision sweep %s: report at %s", chain_set_id, wd.reports)
    return chain_set_id
