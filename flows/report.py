"""Flow `report`: the paper's six findings, each a set of paired comparisons stored as data.

The story: read back each problem's outcomes from what every stage stored (the scored
bank, search selections, the revision sweep, the held-out allocation outcomes, the
FLOPs-matched exchange); compare the side the paper says wins with the other on the same
problems at the same charged budget, with paired bootstrap intervals (tasks/findings.py);
store every comparison in the `findings` table; render `reports/findings.md` (a verdict
table, a forest plot, the comparisons) from those rows to the reports folder, MLflow and
the Prefect UI. A finding whose stage did not run is "not measured", never guessed; a
model that stopped at its wall-clock cap is named at the top.
"""

from __future__ import annotations

import pyarrow as pa
from prefect import flow, get_run_logger

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.flows.difficulty import difficulty_ids
from ttscale.flows.revise import sweep_ids
from ttscale.tasks.selection import candidates_by_problem
from ttscale.flows.stage import stage_run, user_errors
from ttscale.tasks.allocation import budget_ratio
from ttscale.tasks.findings import (Finding, allocation_comparisons, easy_and_hard, exchange_comparisons,
                            findings_table_rows, problem_levels, revision_comparisons, search_comparisons,
                            stored_revision_outcomes, stored_search_outcomes, verifier_budgets,
                            verifier_comparisons)
from ttscale.tasks.reports.bank import unlearned_warning
from ttscale.tasks.reports.findings import findings_markdown, plot_forest
from ttscale.tasks.reports.revision import RevisionFindings
from ttscale.tasks.sampling import stable_hash
from ttscale.tasks.tracking import log_metrics, publish_report, set_tags
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, read_record
from ttscale.warehouse.store import Warehouse, latest_run

STAGE = "report"


def capped_models(wd: Workdir) -> list[str]:
    """Warnings for every model in the workdir whose training stopped at the wall-clock cap."""
    out = []
    for folder in sorted(p for p in wd.models.glob("*") if p.is_dir()):
        record = read_record(folder) or {}
        if record.get("stopped_by") == "time cap":
            out.append(f"the `{folder.name}` model stopped at its wall-clock cap ({record.get('train_seconds_cap')} s) "
                       f"after {record.get('updates')} of {record.get('max_updates')} updates, so it is not the model "
                       f"these settings describe and every figure below is from a different run than on a faster "
                       f"machine (raise `train_seconds` and retrain)")
    return out


@flow(name=STAGE, log_prints=True)
@user_errors
def report(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Compare, store and write the findings report; returns its path."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    bank, scorer_id = difficulty_ids(config, wd)
    seed = config.allocation.seed
    with Warehouse(wd.warehouse) as wh:
        easy, hard = easy_and_hard(wh, bank)
        levels = problem_levels(wh)

        # 1: best-of-N weighted vs majority on the scored bank, at the larger half of the budgets
        candidates = candidates_by_problem(wh, bank, scorer_id)
        scored = {p: v for p, v in candidates.items() if v[1].scores[config.scoring.aggregation].any()}
        found = [Finding(1, tuple(verifier_comparisons(scored, verifier_budgets(config.bank.n), config.scoring.aggregation,
                                                       config.scoring.resamples, seed) if scored else ()))]

        # 2 and 3: search selections, per problem and seed
        outcomes = stored_search_outcomes(wh, scorer_id)
        search = search_comparisons(outcomes, levels, easy, seed) if outcomes else []
        found += [Finding(2, tuple(c for c in search if c.finding == 2)),
                  Finding(3, tuple(c for c in search if c.finding == 3))]

        # 4: the revision sweep, per problem and chain set
        try:
            chain_set_id, sweep_run, _, _ = sweep_ids(config, wd)
            problems = sorted({r["problem_id"] for r in wh.query(
                "SELECT DISTINCT problem_id FROM revision_selections WHERE chain_set_id = ? AND run_id = ?",
                [chain_set_id, sweep_run]).to_pylist()})
            revision = RevisionFindings.read(wh, chain_set_id, sweep_run, problems, bank, config.revisions.chains.rule)
            outcomes = stored_revision_outcomes(wh, chain_set_id, sweep_run, revision.rule)
            comparisons = revision_comparisons(outcomes, levels, easy, hard, revision.rule, seed) if problems else []
            found.append(Finding(4, tuple(comparisons), tuple(revision.measurements()) if problems else ()))
        except FileNotFoundError:  # no revision model in this workdir
            found.append(Finding(4, ()))

        # 5: held-out outcomes of the compute-optimal policy, and the budget it saves
        rows = wh.query("SELECT * FROM allocation_outcomes WHERE run_id = ?",
                        [latest_run(wh, "allocate") or ""]).to_pylist()
        found.append(Finding(5, tuple(allocation_comparisons(rows, budget_ratio, seed))))

        # 6: the FLOPs-matched exchange, per problem
        rows = wh.query("SELECT * FROM exchange_outcomes WHERE run_id = ?",
                        [latest_run(wh, "exchange") or ""]).to_pylist()
        found.append(Finding(6, tuple(exchange_comparisons(rows, seed))))

        warnings = capped_models(wd)
        if config.generator.model == "base":
            by_level = wh.query("SELECT p.level, avg(c.correct::INT) AS pass_at_1 FROM candidates c JOIN problems p "
                                "USING (problem_id) WHERE c.bank_id = ? GROUP BY 1", [bank]).to_pylist()
            if warning := unlearned_warning({r["level"]: r["pass_at_1"] for r in by_level if r["level"]}, "base"):
                warnings.append(warning)
        ids = {"bank_id": bank, "scorer_id": scorer_id}
        run_id = stable_hash(STAGE, bank, scorer_id, [c.row() for f in found for c in f.comparisons], warnings)
        forest = plot_forest(found, wd.reports / "findings-forest.png")
        markdown = findings_markdown(found, f"The paper's findings on this run ({config.name})", warnings, forest.name)
        plots = sorted(p.name for p in wd.reports.glob("*.png") if p != forest)
        markdown += "\n## Plots behind them\n\n" + "\n".join(f"![{name}]({name})" for name in plots) + "\n"
        with stage_run(wh, wd, STAGE, run_id, config, {"findings": [f.verdict for f in found], "warnings": warnings},
                       ids) as ml_id:
            with wh.transaction():
                wh.insert("findings", pa.Table.from_pylist(findings_table_rows(found, run_id, ids)))
            log_metrics(ml_id, [(f"finding_{f.number}/{key}", float(v), i) for f in found
                                for i, c in enumerate(f.comparisons) if c.decides
                                for key, v in (("effect", c.effect), ("lo", c.lo), ("hi", c.hi))])
            set_tags(ml_id, {"warnings": "; ".join(warnings) or "none"})
            publish_report(wd.reports, "findings", markdown, forest, "findings", "the paper's six findings, here")
    path = wd.reports / "findings.md"
    logger.info("findings: %s; report at %s", ", ".join(f"{f.number} {f.verdict}" for f in found), path)
    for w in warnings:
        logger.warning(w)
    return str(path)
