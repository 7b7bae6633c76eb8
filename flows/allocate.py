"""Flow `allocate`: the compute-optimal policy per difficulty bin, its gain over best-of-N, the global allocator.

The story: read each problem's outcome under every stored strategy and budget (search
runs and the revision sweep); for oracle and predicted bins, choose the best strategy
per (bin, budget) on one half of the problems and score it on the other (2-fold
cross-validation over several splits), keeping each problem's held-out outcome per split
(`allocation_outcomes`, what the findings report's paired comparisons read); find the
best-of-N budget that matches it (the efficiency ratio, with and without charging the
difficulty estimate, only where two or more strategies could be chosen); let the global
allocator spend the same total compute across problems; store the policy fitted on all
problems for serving (`Policy`), and publish the report.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
from prefect import flow, get_run_logger

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.flows.difficulty import difficulty_ids
from ttscale.flows.revise import sweep_ids
from ttscale.flows.stage import stage_run, user_errors
from ttscale.tasks.allocation import (Outcomes, budget_ratio, choosable, cross_validate, efficiency, evaluate_allocator,
                              fit_policy, shared_problems)
from ttscale.tasks.reports.allocation import allocation_markdown, plot_allocation
from ttscale.tasks.difficulty import agreement
from ttscale.tasks.findings import allocation_comparisons
from ttscale.tasks.reports.findings import comparison_lines
from ttscale.tasks.metrics import wilson
from ttscale.tasks.sampling import stable_hash
from ttscale.tasks.reports.search import variant
from ttscale.tasks.tracking import log_metrics, publish_report
from ttscale.workdir import DEFAULT_WORKDIR, Workdir
from ttscale.warehouse.store import Warehouse

STAGE = "allocate"
# bumped when what this stage stores changes, so a workdir from before recomputes instead of skipping
METHOD = "held-out outcomes per problem and split, ratios only where a choice exists"


def search_outcomes(wh: Warehouse, scorer_id: str) -> Outcomes:
    """(strategy variant, charged budget) -> problem -> share of seeds that got it right."""
    rows = wh.query("SELECT strategy, width, lookahead, charged, problem_id, avg(correct::INT) AS accuracy "
                    "FROM selections WHERE scorer_id = ? GROUP BY ALL", [scorer_id]).to_pylist()
    out: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for r in rows:
        out[(variant(r), r["charged"])][r["problem_id"]] = r["accuracy"]
    return out


def revision_outcomes(wh: Warehouse, chain_set_id: str, run_id: str) -> Outcomes:
    """(chain length and rule, budget) -> problem -> share of chain sets that got it right (no oracle)."""
    rows = wh.query("SELECT rule, length, budget, problem_id, avg(correct::INT) AS accuracy FROM revision_selections "
                    "WHERE chain_set_id = ? AND run_id = ? AND rule <> 'oracle' GROUP BY ALL",
                    [chain_set_id, run_id]).to_pylist()
    out: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for r in rows:
        out[(f"revisions L={r['length']} {r['rule']}", r["budget"])][r["problem_id"]] = r["accuracy"]
    return out


@flow(name=STAGE, log_prints=True)
@user_errors
def allocate(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Fit and cross-validate the compute-optimal policy; returns this allocation's run id."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    cfg = config.allocation
    bank, scorer_id = difficulty_ids(config, wd)
    sources: dict[str, tuple[Outcomes, str]] = {}
    with Warehouse(wd.warehouse) as wh:
        bins_rows = wh.query("SELECT kind, problem_id, value, bin, samples, flops FROM difficulty "
                             "WHERE bank_id = ? AND scorer_id IN ('-', ?)", [bank, scorer_id]).to_pylist()
        if not bins_rows:
            raise ValueError(f"no difficulty bins for bank {bank}: run `ttscale difficulty` first")
        search = search_outcomes(wh, scorer_id)
        if search:
            sources["search"] = (search, cfg.search_baseline)
        try:
            chain_set_id, sweep_run, _, _ = sweep_ids(config, wd)
            revisions = revision_outcomes(wh, chain_set_id, sweep_run)
            if revisions:
                sources["revisions"] = (revisions, cfg.revision_baseline)
        except FileNotFoundError:
            pass  # no revision model in this workdir: search only
        if not sources:
            raise ValueError("no search or revision results to allocate over: run `ttscale search` or `ttscale revise`")
        for name, (outcomes, baseline) in sources.items():
            if not any(key[0] == baseline for key in outcomes):
                raise ValueError(f"allocation: baseline {baseline!r} is not among the {name} strategies "
                                 f"({sorted({k[0] for k in outcomes})})")
        run_id = stable_hash(STAGE, METHOD, bank, scorer_id, cfg.model_dump(),
                             {n: sorted((k, len(v)) for k, v in o.items()) for n, (o, _) in sources.items()})
        if wh.is_finished(run_id):
            logger.info("allocation %s already computed", run_id)
            return run_id
        bins = {kind: {r["problem_id"]: r["bin"] for r in bins_rows if r["kind"] == kind}
                for kind in ("oracle", "predicted")}
        values = {kind: {r["problem_id"]: r["value"] for r in bins_rows if r["kind"] == kind}
                  for kind in ("oracle", "predicted")}
        charge = {kind: max(r["samples"] for r in bins_rows if r["kind"] == kind) for kind in ("oracle", "predicted")}
        with stage_run(wh, wd, STAGE, run_id, config, {"allocation": cfg.model_dump(), "sources": list(sources)},
                       {"bank_id": bank, "scorer_id": scorer_id}) as ml_id:
            results, policy_rows, held_out_rows = [], [], []
            for name, (outcomes, baseline) in sources.items():
                for kind in ("oracle", "predicted"):
                    cv = cross_validate(outcomes, bins[kind], baseline, cfg.splits, cfg.seed)
                    # each kind of bin pays for its own estimate: the oracle reads the whole bank
                    allocator = evaluate_allocator(outcomes, bins[kind], baseline, cfg.splits, charge[kind], cfg.seed)
                    plain = {e.budget: e for e in efficiency(cv.accuracy, cv.baseline)}
                    charged = {e.budget: e for e in efficiency(cv.accuracy, cv.baseline, charge[kind])}
                    for (n, p), per_split in sorted(cv.held_out.items()):
                        if (baseline, n) in outcomes:
                            held_out_rows += [dict(run_id=run_id, source=name, bin_kind=kind, budget=n, split=i,
                                                   problem_id=p, bin=bins[kind][p], optimal=v,
                                                   baseline=outcomes[(baseline, n)][p], baseline_name=baseline,
                                                   choosable=choosable(outcomes, n)) for i, v in enumerate(per_split)]
                    for n, e in plain.items():
                        # a ratio needs a choice: at N = 1 (or with one strategy) it measures noise only
                        if n not in cv.baseline or choosable(outcomes, n) < 2:
                            continue
                        n_problems = len(shared_problems(outcomes, bins[kind]))
                        lo, hi = wilson(e.target, n_problems)
                        results.append(dict(run_id=run_id, source=name, bin_kind=kind, budget=n, baseline=baseline,
                                            problems=n_problems, optimal_accuracy=e.target, optimal_lo=lo,
                                            optimal_hi=hi, baseline_accuracy=cv.baseline[n],
                                            equivalent_budget=e.equivalent, ratio=e.ratio,
                                            ratio_charged=charged[n].ratio, censored=e.censored,
                                            allocator_accuracy=allocator[n][0],
                                            allocator_free_accuracy=allocator[n][1],
                                            uniform_accuracy=allocator[n][2]))
                    problems = shared_problems(outcomes, bins[kind])
                    for (b, n), (strategy, acc) in fit_policy(outcomes, bins[kind], problems, baseline).items():
                        members = [values[kind][p] for p in problems if bins[kind][p] == b]
                        policy_rows.append(dict(run_id=run_id, source=name, bin_kind=kind, bin=b, budget=n,
                                                strategy=strategy, accuracy=acc, problems=len(members),
                                                value_min=min(members), value_max=max(members)))
            with wh.transaction():
                wh.insert("allocation_results", pa.Table.from_pylist(results))
                wh.insert("allocation_policy", pa.Table.from_pylist(policy_rows))
                wh.insert("allocation_outcomes", pa.Table.from_pylist(held_out_rows))
            agree = agreement(values["oracle"], values["predicted"], config.difficulty.bins, config.difficulty.seed)
            costs = {kind: sum(r["flops"] for r in bins_rows if r["kind"] == kind) / max(1, len(bins[kind]))
                     for kind in ("oracle", "predicted")}
            log_metrics(ml_id, [(f"allocation/{r['source']}/{r['bin_kind']}/{key}", r[key], r["budget"])
                                for r in results for key in ("optimal_accuracy", "baseline_accuracy", "ratio",
                                                             "ratio_charged", "allocator_accuracy",
                                                             "allocator_free_accuracy")])
            plot = plot_allocation(results, wd.reports / f"{STAGE}-{run_id}.png")
            publish_report(wd.reports, f"{STAGE}-{run_id}",
                           allocation_markdown(results, policy_rows, agree, costs,
                                               f"Compute-optimal allocation ({config.name})",
                                               comparison_lines(allocation_comparisons(held_out_rows, budget_ratio,
                                                                                       cfg.seed))),
                           plot, "allocation", "compute-optimal policy vs best-of-N, global allocator")
    logger.info("allocation %s: report at %s", run_id, wd.reports)
    return run_id
