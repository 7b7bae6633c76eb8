"""Flow `solve`: new problems, each solved with the strategy the compute-optimal policy serves.

The story: load the search policy the latest `allocate` run fitted (per difficulty bin
and budget); for each new problem, estimate its difficulty from a few fresh samples
(the PRM's mean final-step score, or with `solve.bins: oracle` their pass rate); ask
the policy which search strategy to run at the budget; run each chosen strategy on its
group of problems (one generator and one PRM kept open); store the answer, the outcome
and what estimating and searching cost in `policy_solutions`. Problems already solved
by this run are skipped on a re-run.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.warehouse.store import latest_run
from ttscale.models.scorers import resolve_prm, scorer_key
from ttscale.tasks.search import run_search
from ttscale.flows.stage import stage_run, user_errors
from ttscale.models.generator import SamplingSpec, open_generator
from ttscale.models.scorers import open_scorer
from ttscale.tasks.allocation import Policy
from ttscale.tasks.grading import grade, split_steps
from ttscale.tasks.problems import load_problems
from ttscale.tasks.sampling import prompt_for, stable_hash
from ttscale.tasks.search import SearchParams
from ttscale.tasks.reports.search import parse_variant
from ttscale.tasks.tracking import log_metrics, publish_report
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint
from ttscale.warehouse.store import Warehouse

# A Prefect task, so each call shows in the flow run's graph.
run_search_task = task(run_search, name="run-search", cache_policy=NO_CACHE)

STAGE = "solve"


@flow(name=STAGE, log_prints=True)
@user_errors
def solve(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Solve `solve.count` test problems after `solve.first` with the served policy; returns the run id."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    cfg = config.solve
    model_dir = wd.require_model(config.generator.model)
    source = resolve_prm(config.scoring.prm, wd, config.generator, config.scoring.prm_format)
    scorer_id = scorer_key(source, config.scoring.step_separator)
    problems = [p for p in load_problems(config.task) if p.split == "test"][cfg.first : cfg.first + cfg.count]
    if not problems:
        raise ValueError(f"no test problems after the first {cfg.first}: lower solve.first or raise task.n_test")
    with Warehouse(wd.warehouse) as wh:
        allocation = latest_run(wh, "allocate")
        rows = wh.query("SELECT * FROM allocation_policy WHERE run_id = ? AND source = 'search' AND bin_kind = ?",
                        [allocation or "", cfg.bins]).to_pylist()
        if not rows:
            raise ValueError("no fitted search policy: run `ttscale search`, `ttscale difficulty` and `ttscale allocate`")
        policy = Policy(tuple(rows))
        run_id = stable_hash(STAGE, allocation, scorer_id, fingerprint(model_dir), cfg.model_dump(),
                             [p.problem_id for p in problems])
        done = set(wh.query("SELECT problem_id FROM policy_solutions WHERE run_id = ?", [run_id])
                   .column("problem_id").to_pylist())
        todo = [p for p in problems if p.problem_id not in done]
        logger.info("solve: %d of %d problems to solve at budget %d with policy %s", len(todo), len(problems),
                    cfg.budget, allocation)
        with stage_run(wh, wd, STAGE, run_id, config, {"solve": cfg.model_dump(), "allocation": allocation},
                       {"scorer_id": scorer_id}) as ml_id:
            if todo:
                scorer = open_scorer(source, config.scoring)
                estimate = SamplingSpec(n=config.difficulty.samples, temperature=config.bank.temperature,
                                        max_tokens=config.bank.max_tokens, seed=cfg.seed)
                with open_generator(config.generator, model_dir) as generator:
                    # 1. Difficulty from fresh samples: what a deployed system can know before it answers.
                    samples = generator.generate([prompt_for(p) for p in todo], estimate)
                    value, cost, flops = {}, {}, {}
                    for p, outs in zip(todo, samples):
                        scores, read = scorer.score_with_tokens([prompt_for(p)] * len(outs),
                                                                [split_steps(c.text) for c in outs])
                        oracle = [grade(p, c.text)[1] for c in outs]
                        value[p.problem_id] = (sum(s[-1] if s else 0.0 for s in scores) / len(outs)
                                               if cfg.bins == "predicted" else sum(oracle) / len(outs))
                        gen_tokens = sum(c.prompt_tokens + c.generated_tokens for c in outs)
                        prm_tokens = sum(r[-1] if r else 0 for r in read)
                        cost[p.problem_id] = gen_tokens + prm_tokens
                        flops[p.problem_id] = 2.0 * (generator.n_params * gen_tokens + scorer.n_params * prm_tokens)
                    # 2. The policy's choice per problem, then one search run per distinct choice.
                    groups = defaultdict(list)
                    for p in todo:
                        label, charged = policy.choose(value[p.problem_id], cfg.budget)
                        groups[(label, charged)].append(p)
                    out: dict[str, list] = defaultdict(list)
                    for (label, charged), members in groups.items():
                        strategy, width, depth = parse_variant(label)
                        params = SearchParams(strategy, charged // (depth + 1), width, depth, cfg.seed,
                                              config.search.temperature, config.search.max_rounds,
                                              config.search.step_tokens, config.search.max_tokens, context=run_id)
                        _, picked = run_search_task(params, members, generator, scorer, run_id, scorer_id)
                        for r in picked.to_pylist():
                            pid = r["problem_id"]
                            for k, v in dict(run_id=run_id, problem_id=pid, budget=cfg.budget, value=value[pid],
                                             bin=policy.bin_of(value[pid]), strategy=label, charged=charged,
                                             answer=r["answer"], correct=r["correct"], estimate_tokens=cost[pid],
                                             search_tokens=r["prompt_tokens"] + r["generated_tokens"],
                                             flops=flops[pid] + r["flops"]).items():
                                out[k].append(v)
                with wh.transaction():
                    wh.insert("policy_solutions", pa.table(dict(out)))
            summary = wh.query("SELECT count(*) AS problems, avg(correct::INT) AS accuracy, avg(estimate_tokens) AS "
                               "estimate_tokens, avg(search_tokens) AS search_tokens FROM policy_solutions "
                               "WHERE run_id = ?", [run_id]).to_pylist()[0]
            chosen = wh.query("SELECT bin, strategy, count(*) AS problems, avg(correct::INT) AS accuracy FROM "
                              "policy_solutions WHERE run_id = ? GROUP BY ALL ORDER BY bin", [run_id]).to_pylist()
            log_metrics(ml_id, [(f"solve_{k}", float(v or 0), cfg.budget) for k, v in summary.items()])
            lines = [f"## Solved with the served policy ({config.name}, budget {cfg.budget}, {cfg.bins} bins)", "",
                     f"{summary['problems']} new problems, accuracy {summary['accuracy']:.3f}; per problem "
                     f"{summary['estimate_tokens']:.0f} tokens to estimate difficulty, {summary['search_tokens']:.0f} "
                     "to search.", "", "| bin | strategy | problems | accuracy |", "|---|---|---|---|"]
            lines += [f"| {c['bin']} | {c['strategy']} | {c['problems']} | {c['accuracy']:.3f} |" for c in chosen]
            publish_report(wd.reports, f"{STAGE}-{run_id}", "\n".join(lines) + "\n", None, "solve",
                           "new problems solved with the compute-optimal policy")
    logger.info("solve %s: %d problems, accuracy %.3f", run_id, summary["problems"], summary["accuracy"] or 0)
    return run_id
