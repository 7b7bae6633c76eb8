"""Flow `report`: one report per pipeline run that states each of the paper's six findings.

The story: read back what every stage stored (verifier curves, search curves, the
revision sweep, the latest allocation and FLOPs-matched exchange), let each stage's own
statements decide its finding (tasks/findings.py), and publish one markdown report to
the reports folder, MLflow and the Prefect UI. A finding whose stage did not run is
"not measured", never guessed.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from configs.schema import PipelineConfig
from flows.difficulty import difficulty_ids
from flows.revise import sweep_ids
from flows.stage import stage_run
from tasks.allocation_report import statements as allocation_statements
from tasks.findings import (allocation_finding, exchange_finding, findings_markdown, revision_finding,
                            search_findings, verifier_finding)
from tasks.revision_report import RevisionFindings
from tasks.sampling import stable_hash
from tasks.search_report import findings as search_statements
from tasks.tracking import publish_report
from tasks.verifier_report import points_from_table, verdict
from ttscale.workdir import DEFAULT_WORKDIR, Workdir
from warehouse.store import Warehouse

STAGE = "report"


def latest_run(wh: Warehouse, stage: str) -> str | None:
    rows = wh.query("SELECT run_id FROM runs WHERE stage = ? AND status = 'finished' ORDER BY finished_at DESC "
                    "LIMIT 1", [stage]).to_pylist()
    return rows[0]["run_id"] if rows else None


@flow(name=STAGE, log_prints=True)
def report(config: PipelineConfig = PipelineConfig(), workdir: str = DEFAULT_WORKDIR) -> str:
    """Write the findings report; returns its path."""
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    bank, scorer_id = difficulty_ids(config, wd)
    with Warehouse(wd.warehouse) as wh:
        points = points_from_table(wh.query("SELECT * FROM verifier_curves WHERE bank_id = ? AND scorer_id = ?",
                                            [bank, scorer_id]))
        found = [verifier_finding(verdict(points, "last", min_n=max(1, config.bank.n // 2)))]
        curve = wh.query("SELECT * FROM accuracy_vs_budget WHERE scorer_id = ?", [scorer_id]).to_pylist()
        found += search_findings(search_statements(curve) if curve else [])
        try:
            chain_set_id, sweep_run, _, _ = sweep_ids(config, wd)
            problems = [r["problem_id"] for r in wh.query(
                "SELECT DISTINCT problem_id FROM revision_selections WHERE chain_set_id = ? AND run_id = ?",
                [chain_set_id, sweep_run]).to_pylist()]
            revision = RevisionFindings.read(wh, chain_set_id, sweep_run, problems, bank, config.revisions.chains.rule)
            found.append(revision_finding(revision.statements() if revision.curves else []))
        except FileNotFoundError:  # no revision model in this workdir
            found.append(revision_finding([]))
        allocation = latest_run(wh, "allocate")
        results = wh.query("SELECT * FROM allocation_results WHERE run_id = ?", [allocation or ""]).to_pylist()
        found.append(allocation_finding(results, allocation_statements(results)))
        exchange = latest_run(wh, "exchange")
        found.append(exchange_finding(wh.query("SELECT * FROM flops_exchange WHERE run_id = ? ORDER BY ratio, bin",
                                               [exchange or ""]).to_pylist()))
        run_id = stable_hash(STAGE, bank, scorer_id, [(f.number, f.verdict, f.evidence) for f in found])
        markdown = findings_markdown(found, f"The paper's findings on this run ({config.name})")
        plots = sorted(p.name for p in wd.reports.glob("*.png"))
        markdown += "\n## Plots behind them\n\n" + "\n".join(f"![{name}]({name})" for name in plots) + "\n"
        with stage_run(wh, wd, STAGE, run_id, config, {"findings": [f.verdict for f in found]}, {"bank_id": bank}):
            publish_report(wd.reports, "findings", markdown, None, "findings", "the paper's six findings, here")
    path = wd.reports / "findings.md"
    logger.info("findings: %s; report at %s", ", ".join(f"{f.number} {f.verdict}" for f in found), path)
    return str(path)
