"""Flow `score-bank`: the PRM scores every step of every bank candidate; verifier curves follow.

The story: resolve the step scorer (this workdir's trained PRM, a registry version, or
an external PRM folder); score the candidates not yet scored by it, chunk by chunk, each
chunk one transaction; then resample N-subsets of the bank to get accuracy vs N for
best-of-N, best-of-N weighted and majority under every aggregation, with intervals,
and publish them to the warehouse, MLflow and the Prefect UI.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.tasks.sampling import sampling_spec
from ttscale.flows.stage import stage_run, user_errors
from ttscale.models.prm import StepScorer
from ttscale.models.scorers import ORACLE, ScorerSource, open_scorer, resolve_prm, scorer_key
from ttscale.tasks import arith
from ttscale.tasks.adaptive import (adaptive_points, markdown as adaptive_markdown,
                                    metrics_rows as adaptive_metrics_rows, mlflow_metrics as adaptive_mlflow_metrics)
from ttscale.tasks.findings import verifier_budgets, verifier_comparisons
from ttscale.tasks.reports.findings import comparison_lines
from ttscale.tasks.problems import Problem, load_problems
from ttscale.tasks.sampling import bank_id, prompt_for, stable_hash
from ttscale.tasks.selection import CurvePoint, ProblemCandidates, candidates_by_problem, curves
from ttscale.tasks.tracking import log_metrics, publish_report
from ttscale.tasks.reports.verifier import (Diagnosis, Quality, curve_metrics, curves_markdown, curves_table, diagnose,
                                   plot_curves, points_from_table)
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint
from ttscale.warehouse.store import Warehouse

STAGE = "score-bank"
SCORE_SCHEMA = pa.schema([("scorer_id", pa.string()), ("candidate_id", pa.string()), ("step_index", pa.int32()),
                          ("run_id", pa.string()), ("score", pa.float64()), ("prefix_tokens", pa.int32())])


@task(cache_policy=NO_CACHE)
def score_chunk(scorer: StepScorer, rows: list[dict], problems: dict[str, Problem], scorer_id: str, run_id: str) -> pa.Table:
    scores, tokens = scorer.score_with_tokens([prompt_for(problems[r["problem_id"]]) for r in rows],
                                              [r["steps"] for r in rows])
    out: dict[str, list] = {name: [] for name in SCORE_SCHEMA.names}
    for r, s, t in zip(rows, scores, tokens):
        for i, (score, n_tokens) in enumerate(zip(s, t)):
            for name, value in zip(SCORE_SCHEMA.names, (scorer_id, r["candidate_id"], i, run_id, score, n_tokens)):
                out[name].append(value)
    return pa.table(out, schema=SCORE_SCHEMA)


def unscored(wh: Warehouse, bank: str, scorer_id: str) -> list[dict]:
    """Candidates of the bank with steps and no scores from this scorer (chunks commit whole)."""
    return wh.query(
        """SELECT c.candidate_id, c.problem_id, list(s.text ORDER BY s.step_index) AS steps
           FROM candidates c JOIN steps s USING (candidate_id)
           WHERE c.bank_id = ? AND NOT EXISTS (
               SELECT 1 FROM step_scores x WHERE x.scorer_id = ? AND x.candidate_id = c.candidate_id)
           GROUP BY c.candidate_id, c.problem_id ORDER BY c.problem_id, c.candidate_id""",
        [bank, scorer_id],
    ).to_pylist()


@dataclass(frozen=True)
class Measured:
    """One scorer over the bank: what it knows within a problem, and the curves it gives."""

    name: str
    scorer_id: str
    diagnosis: Diagnosis
    by_problem: dict[str, tuple[int, ProblemCandidates]]
    points: list[CurvePoint]


def score_and_measure(wh: Warehouse, source: ScorerSource, name: str, bank: str, config: PipelineConfig,
                      problems: dict[str, Problem], run_id: str) -> Measured:
    """Score the bank's candidates this scorer has not scored (chunk by chunk, each one transaction),
    then diagnose it against step truth and store its curves (replaced whole: derived data)."""
    cfg = config.scoring
    scorer_id = scorer_key(source, cfg.step_separator)
    todo = unscored(wh, bank, scorer_id)
    get_run_logger().info("scorer %s (%s): %d candidates of bank %s to score", name, scorer_id, len(todo), bank)
    if todo:
        scorer = open_scorer(source, cfg)
        grouped: dict[str, list[dict]] = defaultdict(list)
        for r in todo:
            grouped[r["problem_id"]].append(r)
        ids = list(grouped)
        chunks = [ids[i : i + cfg.problems_per_chunk] for i in range(0, len(ids), cfg.problems_per_chunk)]
        for chunk in tqdm(chunks, desc=f"{STAGE} ({name})", unit="chunk"):
            table = score_chunk(scorer, [r for pid in chunk for r in grouped[pid]], problems, scorer_id, run_id)
            with wh.transaction():
                wh.insert("step_scores", table)
    diagnosis = diagnose(wh.query(DIAGNOSIS_SQL, [scorer_id, bank]).to_pylist(), cfg.aggregation)
    by_problem = candidates_by_problem(wh, bank, scorer_id)  # read once: curves and comparisons
    points = curves(list(by_problem.values()), cfg.resamples, seed=config.bank.seed)
    with wh.transaction():
        wh.con.execute("DELETE FROM selection_curves WHERE bank_id = ? AND scorer_id = ?", [bank, scorer_id])
        wh.insert("selection_curves", curves_table(points, bank, scorer_id, run_id, cfg.resamples))
    points = points_from_table(wh.query(
        "SELECT * FROM verifier_curves WHERE bank_id = ? AND scorer_id = ?", [bank, scorer_id]))
    return Measured(name, scorer_id, diagnosis, by_problem, points)


def baseline_sources(config: PipelineConfig, wd: Workdir, main: ScorerSource) -> dict[str, ScorerSource]:
    """The configured baselines this task allows, without the one that is already the main scorer."""
    out = {}
    for name in config.scoring.baselines:
        if name == ORACLE and config.task.kind != "arith":
            get_run_logger().info("no oracle baseline: only the embedded task has exact step checks")
            continue
        source = resolve_prm(name, wd, config.generator)
        if source != main:
            out[name] = source
    return out


@flow(name=STAGE, log_prints=True)
@user_errors
def score_bank(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Score the bank with the configured PRM (and the baselines) and write verifier curves; returns the
    scorer id."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    model_dir = wd.require_model(config.generator.model)
    bank = bank_id(fingerprint(model_dir), sampling_spec(config.bank))
    source = resolve_prm(config.scoring.prm, wd, config.generator, config.scoring.prm_format)
    baselines = baseline_sources(config, wd, source)
    scorer_id = scorer_key(source, config.scoring.step_separator)
    run_id = stable_hash(STAGE, bank, scorer_id, config.scoring.resamples, config.scoring.adaptive_leads,
                         config.scoring.adaptive_weighted,
                         *[scorer_key(b, config.scoring.step_separator) for b in baselines.values()])
    problems = {p.problem_id: p for p in load_problems(config.task)}
    cfg = config.scoring
    with Warehouse(wd.warehouse) as wh:
        if not wh.query("SELECT 1 FROM candidates WHERE bank_id = ? LIMIT 1", [bank]).num_rows:
            raise ValueError(f"bank {bank} is empty: run `ttscale sample-bank` first")
        if wh.is_finished(run_id) and not unscored(wh, bank, scorer_id):
            logger.info("nothing new to score; the curves are in the warehouse and MLflow")
            return scorer_id
        with stage_run(wh, wd, STAGE, run_id, config, {"scoring": cfg.model_dump(), "source": str(source)},
                       {"bank_id": bank, "scorer_id": scorer_id}) as ml_id:
            if config.task.kind == "arith":
                fill_step_truth(wh, problems)
            main = score_and_measure(wh, source, config.scoring.prm, bank, config, problems, run_id)
            others = [score_and_measure(wh, s, name, bank, config, problems, run_id) for name, s in baselines.items()]
            wh.insert("metrics", main.diagnosis.metrics_table(run_id))
            # the answer-only baseline that spends less where answers agree (no scorer: once per bank)
            adaptive = adaptive_points(main.by_problem, cfg.adaptive_leads, config.bank.n, cfg.resamples,
                                       config.bank.seed)
            if cfg.adaptive_weighted:  # the same stop with the main scorer's votes (DeepConf-style)
                adaptive += adaptive_points(main.by_problem, cfg.adaptive_leads, config.bank.n, cfg.resamples,
                                            config.bank.seed, cfg.aggregation)
            if adaptive:
                wh.insert("metrics", pa.Table.from_pylist(adaptive_metrics_rows(adaptive, run_id)))
            for o in others:
                wh.insert("metrics", o.diagnosis.metrics_table(run_id, prefix=f"baseline/{o.name}/"))
            quality = _prm_quality(wh, source)
            cost = wh.query("SELECT count(*) AS candidates, sum(scored_tokens) AS tokens FROM candidate_scores "
                            "WHERE bank_id = ? AND scorer_id = ?", [bank, scorer_id]).to_pylist()[0]
            per_scorer = [(f"{prefix}{n}" if level == 0 else f"{prefix}{n}/level_{level}", v, 0)
                          for m, prefix in [(main, "")] + [(o, f"baseline/{o.name}/") for o in others]
                          for n, level, v in m.diagnosis.metrics() if v == v]
            log_metrics(ml_id, curve_metrics(main.points) + per_scorer
                        + [m for o in others for m in curve_metrics(o.points, prefix=f"baseline/{o.name}/")]
                        + adaptive_mlflow_metrics(adaptive)
                        + [("scored_candidates", cost["candidates"], 0),
                           ("scored_tokens", float(cost["tokens"] or 0), 0)])
            plot = plot_curves(main.points, wd.reports / f"{STAGE}-{bank}-{scorer_id}.png", cfg.aggregation,
                               {o.name: o.points for o in others})
            comparisons = verifier_comparisons(main.by_problem, verifier_budgets(config.bank.n), cfg.aggregation,
                                               cfg.resamples, config.bank.seed)
            markdown = curves_markdown(main.points, f"Verifier curves: bank {bank}, scorer {scorer_id} ({config.name})",
                                       quality, main.diagnosis.within_auc.get(0, float("nan")),
                                       comparison_lines(comparisons))
            markdown += "\n" + "\n".join(main.diagnosis.markdown()) + "\n"
            if others:
                markdown += "\n" + "\n".join(baselines_markdown(main, others, cfg.aggregation)) + "\n"
            if adaptive:
                markdown += "\n" + "\n".join(adaptive_markdown(adaptive, config.bank.n, config.scoring.prm)) + "\n"
            publish_report(wd.reports, f"{STAGE}-{bank}-{scorer_id}", markdown, plot, "verifier-curves",
                           f"accuracy vs N by selection rule, bank {bank}")
    logger.info("verifier curves for bank %s, scorer %s: report at %s", bank, scorer_id, wd.reports)
    return scorer_id


def baselines_markdown(main: Measured, others: Sequence[Measured], aggregation: str) -> list[str]:
    """The PRM beside the scorers that need no training: within-problem AUC, best-of-N weighted and plain
    best-of-N per level. Both rules, because a scorer whose values sit close together (token confidences)
    barely moves a weighted vote off majority even where its argmax picks the right candidate."""
    everyone = [main, *others]
    levels = sorted({p.level for p in main.points} | set(main.diagnosis.within_auc))
    n_max = max(p.n for p in main.points)
    lines = [f"Against the baselines (within-problem AUC; best-of-N weighted; best-of-N, both ({aggregation}) "
             f"at N = {n_max}):", "",
             "| level | " + " | ".join(m.name for m in everyone) + " |", "|---|" + "---|" * len(everyone)]
    for level in levels:
        cells = []
        for m in everyone:
            at_n = {p.rule: p.accuracy for p in m.points if (p.aggregation, p.level, p.n) == (aggregation, level, n_max)}
            cells.append("; ".join([f"{m.diagnosis.within_auc.get(level, float('nan')):.3f}"]
                                   + [f"{at_n[rule]:.3f}" for rule in ("weighted", "best_of_n") if rule in at_n]))
        lines.append(f"| {'all' if level == 0 else level} | " + " | ".join(cells) + " |")
    return lines


# per bank candidate: its level, correctness, step scores by this scorer and exact step truth (if any)
DIAGNOSIS_SQL = """
WITH sc AS (SELECT candidate_id, list(score ORDER BY step_index) AS scores FROM step_scores WHERE scorer_id = ?
            GROUP BY 1),
     tr AS (SELECT candidate_id, list(error ORDER BY step_index) AS errors FROM step_truth GROUP BY 1)
SELECT c.problem_id, p.level, c.correct, sc.scores, tr.errors
FROM candidates c JOIN problems p USING (problem_id) LEFT JOIN sc USING (candidate_id) LEFT JOIN tr USING (candidate_id)
WHERE c.bank_id = ? ORDER BY c.problem_id, c.candidate_id"""


def fill_step_truth(wh: Warehouse, problems: dict[str, Problem]) -> int:
    """Exact step checks (tasks/arith.py) for every stored embedded-task candidate not checked yet."""
    rows = wh.query("""SELECT c.candidate_id, c.problem_id, list(s.text ORDER BY s.step_index) AS steps
                       FROM candidates c JOIN steps s USING (candidate_id)
                       WHERE NOT EXISTS (SELECT 1 FROM step_truth t WHERE t.candidate_id = c.candidate_id)
                       GROUP BY ALL""").to_pylist()
    out: dict[str, list] = {"candidate_id": [], "step_index": [], "error": []}
    for r in rows:
        if r["problem_id"] not in problems:
            continue
        for i, error in enumerate(arith.step_truth(problems[r["problem_id"]].question, r["steps"])):
            out["candidate_id"].append(r["candidate_id"])
            out["step_index"].append(i)
            out["error"].append(error)
    with wh.transaction():
        return wh.insert("step_truth", pa.table(out, schema=pa.schema([("candidate_id", pa.string()),
                                                                        ("step_index", pa.int32()),
                                                                        ("error", pa.string())])))


def _prm_quality(wh: Warehouse, source: ScorerSource) -> Quality | None:
    """The held-out quality train-prm measured for this PRM (external PRMs and the random scorer have none)."""
    record = source.record()
    rows = wh.query("SELECT name, value FROM metrics WHERE run_id = ?", [record.get("warehouse_run_id", "")])
    values = dict(zip(rows.column("name").to_pylist(), rows.column("value").to_pylist()))
    if "prm_step_auc" not in values:
        return None
    return Quality(values["prm_step_auc"], values["prm_ece"], values["prm_brier"], int(values["prm_val_steps"]), [])
