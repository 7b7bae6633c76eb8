"""Search wall time per generated token, relative to best-of-N at the same budget: prints, asserts nothing.

    python bench/search.py --workdir .ttscale [--problems 20] [--budget 16] [--width 4] [--backend vllm]

Needs a workdir where `ttscale run` has trained the base model and the PRM. The goal
(issue 4) is at most 1.5x best-of-N's seconds per generated token for beam search and
DVTS: every round sends all live beams of all problems to the generator in one call.
Wall time includes PRM scoring, which on CPU is often the larger share; it is printed
separately.

Measured here (2 vCPUs, vLLM CPU, tiny preset models, 2026-11-29), beam / DVTS per token
relative to best-of-N:
    20 problems, N = 16, M = 4:   1.25x / 1.20x   (was 1.73x / 1.88x)
    100 problems, N = 16, M = 4:  1.14x / 1.38x
    20 problems, N = 64, M = 4:   1.34x / 1.38x
Two changes got there: the PRM keeps each beam's prefix KV from one round to the next
(scoring.prefix_cache_mb), so it reads only the new step; and vLLM's CPU KV block is 32
tokens instead of 128 (generator.vllm_cpu_block_size), so the prefixes re-sent each round
hit the prefix cache. Overlapping PRM scoring with generation (problems in two cohorts)
was tried and dropped: on 2 cores the two compete for the same threads and beam search
took 2.2x. Run-to-run noise is about +-0.1x.
"""

from __future__ import annotations

import argparse
import os
import time

from ttscale.workdir import Workdir, quiet_services


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=".ttscale")
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--budget", type=int, default=16)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--backend", default="vllm", choices=["hf", "vllm"])
    args = parser.parse_args()
    quiet_services()
    from ttscale.configs import load_config
    from ttscale.models.generator import open_generator
    from ttscale.models.prm import PRM
    from ttscale.tasks.problems import load_problems
    from ttscale.tasks.search import STRATEGIES, SearchParams

    wd = Workdir.at(args.workdir)
    tiny = load_config("tiny")
    problems = [p for p in load_problems(tiny.task) if p.split == "test"][: args.problems]
    scorer = PRM.for_scoring(wd.models / "prm", tiny.scoring)
    spent = {"score": 0.0}

    def timed(method):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent["score"] += time.perf_counter() - start
        return wrapper

    # time the PRM's share of each strategy, whichever scoring entry point it uses
    scorer.score_with_tokens = timed(scorer.score_with_tokens)
    scorer.score_extensions = timed(scorer.score_extensions)
    print(f"machine: {os.cpu_count()} CPUs; backend {args.backend}; {len(problems)} problems, N={args.budget}, "
          f"M={args.width}")
    with open_generator(tiny.generator.model_copy(update={"backend": args.backend}), wd.models / "base") as gen:
        base_rate = None
        for strategy in ("best_of_n", "beam", "dvts"):
            params = SearchParams(strategy, args.budget, args.width, seed=0, step_tokens=tiny.search.step_tokens)
            spent["score"] = 0.0
            start = time.perf_counter()
            searches = STRATEGIES[strategy](problems, gen, scorer, params)
            seconds = time.perf_counter() - start
            tokens = sum(n.generated_tokens for s in searches.values() for n in s.nodes)
            rate = seconds / max(1, tokens)
            base_rate = base_rate or rate
            print(f"{strategy:10s} {seconds:7.1f}s ({spent['score']:5.1f}s PRM), {tokens:8d} generated tokens, "
                  f"{1e3 * rate:6.3f} ms/token = {rate / base_rate:4.2f}x best-of-N")


if __name__ == "__main__":
    main()
