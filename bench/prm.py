"""PRM scoring throughput and what labeling cost: prints figures, asserts nothing.

    python bench/prm.py --workdir .ttscale [--candidates 2000] [--batch-sizes 16,64,256]

Needs a workdir where `ttscale run` has finished (a trained PRM, a bank, step labels).
1. Step prefixes scored per second by the trained PRM on bank candidates, per batch size
   (one forward pass scores every prefix of a candidate).
2. Labeling cost per problem, read from the warehouse's `labeling_cost` view: samples,
   rollouts, tokens, FLOPs, and the wall time of the label-steps run.
"""

from __future__ import annotations

import argparse
import os
import time

from ttscale.workdir import Workdir, quiet_services


def scoring_throughput(wd: Workdir, candidates: int, batch_sizes: list[int], threads: int) -> None:
    from ttscale.configs import load_config
    from ttscale.models.prm import PRM
    from ttscale.tasks.problems import load_problems
    from ttscale.tasks.sampling import prompt_for
    from ttscale.warehouse.store import Warehouse

    with Warehouse(wd.warehouse, read_only=True) as wh:
        rows = wh.query(
            """SELECT c.problem_id, list(s.text ORDER BY s.step_index) AS steps FROM candidates c
               JOIN steps s USING (candidate_id) WHERE c.method = 'sample'
               GROUP BY c.candidate_id, c.problem_id ORDER BY c.candidate_id LIMIT ?""", [candidates]).to_pylist()
    by_id = {p.problem_id: p for p in load_problems(load_config("tiny").task)}
    rows = [r for r in rows if r["problem_id"] in by_id]
    prompts, steps = [prompt_for(by_id[r["problem_id"]]) for r in rows], [r["steps"] for r in rows]
    prefixes = sum(len(s) for s in steps)
    for batch in batch_sizes:
        scorer = PRM(wd.models / "prm", batch_size=batch, threads=threads)
        scorer.score(prompts[:batch], steps[:batch])  # warm-up
        start = time.perf_counter()
        _, tokens = scorer.score_with_tokens(prompts, steps)
        seconds = time.perf_counter() - start
        n_tokens = sum(t[-1] for t in tokens if t)
        print(f"PRM scoring, batch {batch:4d}: {prefixes / seconds:9.0f} step prefixes/s, "
              f"{len(rows) / seconds:7.0f} candidates/s, {n_tokens / seconds:9.0f} tokens/s "
              f"({len(rows)} candidates, {prefixes} prefixes, {seconds:.1f}s)")


def labeling_cost(wd: Workdir) -> None:
    from ttscale.warehouse.store import Warehouse

    with Warehouse(wd.warehouse, read_only=True) as wh:
        rows = wh.query(
            """SELECT label_bank_id, count(*) AS problems, avg(samples) AS samples, avg(rollouts) AS rollouts,
                      avg(tokens) AS tokens, avg(flops) AS flops FROM labeling_cost GROUP BY 1""").to_pylist()
        wall = wh.query("""SELECT epoch(finished_at - started_at) AS s FROM runs WHERE stage = 'label-steps'
                           AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1""").column("s").to_pylist()
    for r in rows:
        seconds = wall[0] if wall else float("nan")
        print(f"labeling {r['label_bank_id']}: {r['problems']} problems; per problem {r['samples']:.0f} samples, "
              f"{r['rollouts']:.0f} rollouts, {r['tokens']:.0f} tokens, {r['flops']:.3g} FLOPs; "
              f"last label-steps run took {seconds:.0f}s ({seconds / max(1, r['problems']):.2f}s per problem)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=".ttscale")
    parser.add_argument("--candidates", type=int, default=2000)
    parser.add_argument("--batch-sizes", default="16,64,256")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    quiet_services()
    wd = Workdir.at(args.workdir)
    print(f"machine: {os.cpu_count()} CPUs, {args.threads} torch threads")
    scoring_throughput(wd, args.candidates, [int(b) for b in args.batch_sizes.split(",")], args.threads)
    labeling_cost(wd)


if __name__ == "__main__":
    main()
