"""Flow `search`: majority, best-of-N, beam search, lookahead and DVTS against the PRM, every node stored.

The story: plan one search run per (strategy, M, k, budget N, seed) on the first
`search.problems` test problems; skip the runs already in the warehouse; run the rest
with one generator and one PRM kept open, each run's nodes and selections committed in
one transaction; then read accuracy vs budget back from the `accuracy_vs_budget` view,
compare beam, lookahead and best-of-N per problem (the paired comparisons of findings 2
and 3, tasks/findings.py), and publish curves to MLflow and Prefect.
With `workers.output: shards` a worker on another machine runs every planned search on
its share of the problems into Parquet chunk folders instead, for `load-shards`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig, SearchConfig
from ttscale.tasks.sampling import sampling_spec
from ttscale.models.scorers import resolve_prm, scorer_key
from ttscale.flows.stage import stage_run, user_errors
from ttscale.models.generator import RepeatedRequests, open_generator
from ttscale.models.scorers import ScorerSource, open_scorer
from ttscale.tasks.findings import easy_and_hard, problem_levels, search_comparisons, stored_search_outcomes
from ttscale.tasks.reports.findings import comparison_lines
from ttscale.tasks.problems import Problem, load_problems
from ttscale.tasks.sampling import bank_id, problems_table, stable_hash
from ttscale.tasks.search import SearchParams, run_search
from ttscale.tasks.reports.search import plot_search, search_markdown, search_metrics
from ttscale.tasks.tracking import log_metrics, publish_report
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint
from ttscale.warehouse.shards import pending_chunks, write_chunk
from ttscale.warehouse.store import Warehouse

# A Prefect task, so each call shows in the flow run's graph.
run_search_task = task(run_search, name="run-search", cache_policy=NO_CACHE)

STAGE = "search"


def plan(cfg: SearchConfig, context: str) -> list[SearchParams]:
    """Every search run the config asks for; M > N (nothing to keep) is skipped."""
    runs: list[SearchParams] = []
    common = dict(temperature=cfg.temperature, max_rounds=cfg.max_rounds, step_tokens=cfg.step_tokens,
                  max_tokens=cfg.max_tokens, context=context)
    for strategy in cfg.strategies:
        shapes = [(1, 0)] if strategy in ("best_of_n", "majority") else [
            (m, k) for m in cfg.widths for k in (cfg.lookahead_depths if strategy == "lookahead" else [0])]
        for m, k in shapes:
            for n in cfg.budgets:
                if m > n:
                    continue
                runs += [SearchParams(strategy, n, m, k, seed, **common) for seed in cfg.seeds]
    return runs


@flow(name=STAGE, log_prints=True)
@user_errors
def search(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Run every planned search not yet in the warehouse; returns the scorer id the curves belong to."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    model_dir = wd.require_model(config.generator.model)
    source = resolve_prm(config.scoring.prm, wd, config.generator, config.scoring.prm_format)
    scorer_id = scorer_key(source, config.scoring.step_separator)
    context = stable_hash(fingerprint(model_dir), scorer_id, config.generator.backend)
    all_problems = load_problems(config.task)
    problems = [p for p in all_problems if p.split == "test"][: config.search.problems]
    runs = plan(config.search, context)
    run_id = stable_hash(STAGE, context, [r.key() for r in runs])
    if config.workers.to_shards:  # a worker: never opens the warehouse (one writer per file)
        return _search_to_shards(config, wd, model_dir, source, problems, runs, context, run_id, scorer_id)
    with Warehouse(wd.warehouse) as wh:
        wh.insert("problems", problems_table(all_problems))
        done = set(wh.query("SELECT search_key FROM selections GROUP BY 1 HAVING count(*) >= ?",
                            [len(problems)]).column("search_key").to_pylist())
        todo = [r for r in runs if r.key() not in done]
        logger.info("search: %d of %d runs to do on %d problems", len(todo), len(runs), len(problems))
        if not todo and wh.is_finished(run_id):
            logger.info("nothing new to search; the curves are in the warehouse and MLflow")
            return scorer_id
        with stage_run(wh, wd, STAGE, run_id, config, {"search": config.search.model_dump(), "scorer_id": scorer_id},
                       {"scorer_id": scorer_id}) as ml_id:
            if todo:
                scorer = open_scorer(source, config.scoring)
                with open_generator(config.generator, model_dir) as served:
                    generator = RepeatedRequests(served)  # identical requests across runs: sampled once
                    for params in tqdm(todo, desc=STAGE, unit="run"):
                        nodes, selections = run_search_task(params, problems, generator, scorer, run_id, scorer_id)
                        with wh.transaction():
                            wh.insert("search_nodes", nodes)
                            wh.insert("selections", selections)
            curve = wh.query("SELECT * FROM accuracy_vs_budget WHERE scorer_id = ?", [scorer_id]).to_pylist()
            log_metrics(ml_id, search_metrics(curve))
            plot = plot_search(curve, wd.reports / f"{STAGE}-{scorer_id}.png")
            easy, _ = easy_and_hard(wh, bank_id(fingerprint(model_dir), sampling_spec(config.bank)))
            comparisons = search_comparisons(stored_search_outcomes(wh, scorer_id), problem_levels(wh), easy,
                                             config.allocation.seed)
            markdown = search_markdown(curve, f"Search against the PRM ({config.name}, scorer {scorer_id})",
                                       comparison_lines(comparisons))
            publish_report(wd.reports, f"{STAGE}-{scorer_id}", markdown, plot, "search-curves",
                           "accuracy vs budget per search strategy")
    logger.info("search curves for scorer %s: report at %s", scorer_id, wd.reports)
    return scorer_id


def _search_to_shards(config: PipelineConfig, wd: Workdir, model_dir: Path, source: ScorerSource, problems: list[Problem],
                      runs: list[SearchParams], context: str, run_id: str, scorer_id: str) -> str:
    """Every planned search on this worker's share of the problems, one chunk folder per search run."""
    workers = config.workers
    root = wd.shards / STAGE / context
    mine = [p for p in problems if workers.owns(p.index)]
    chunks = [(stable_hash(r.key(), [p.problem_id for p in mine]), r) for r in runs] if mine else []
    todo = pending_chunks(root, chunks)
    get_run_logger().info("worker %d/%d of search %s: %d of %d runs to do on %d problems into %s",
                          workers.shard_index, workers.shard_count, context, len(todo), len(chunks), len(mine), root)
    if todo:
        scorer = open_scorer(source, config.scoring)
        with open_generator(config.generator, model_dir) as served:
            generator = RepeatedRequests(served)
            for cid, params in tqdm(todo, desc=f"{STAGE} shard {workers.shard_index}", unit="run"):
                nodes, selections = run_search_task(params, mine, generator, scorer, run_id, scorer_id)
                write_chunk(root, cid, {"problems": problems_table(mine), "search_nodes": nodes,
                                        "selections": selections})
    return scorer_id
