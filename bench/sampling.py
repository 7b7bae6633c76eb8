"""Sampling and ingest throughput: prints figures, asserts nothing.

    python bench/sampling.py --workdir .ttscale [--problems 50] [--n 16] [--skip-vllm]

1. Generated tokens/s of each backend on the embedded model (and SmolLM2 when converted).
2. The same sampling through the `sample-bank` flow, and its overhead in % over the raw backend.
3. DuckDB ingest rows/s for 1M candidate rows as one Arrow batch through the warehouse writer.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from ttscale.workdir import Workdir, quiet_services


def backend_tokens_per_s(backend: str, model_dir: Path, prompts: list[str], n: int, max_tokens: int,
                         chat: bool = False) -> tuple[float, float]:
    from ttscale.configs.schema import GeneratorConfig
    from ttscale.models.generator import SamplingSpec, open_generator

    with open_generator(GeneratorConfig(backend=backend, chat_template=chat), model_dir) as gen:
        gen.generate(prompts[:2], SamplingSpec(n=1, max_tokens=8))  # warm-up
        start = time.perf_counter()
        out = gen.generate(prompts, SamplingSpec(n=n, temperature=1.0, max_tokens=max_tokens, seed=0))
        seconds = time.perf_counter() - start
    tokens = sum(c.generated_tokens for row in out for c in row)
    return tokens / seconds, seconds


def flow_seconds(workdir: Path, problems: int, n: int, backend: str) -> tuple[float, int]:
    from ttscale.configs import load_config
    from ttscale.flows.sample_bank import sample_bank

    base = load_config("tiny")
    cfg = base.model_copy(update={
        "task": base.task.model_copy(update={"n_test": problems, "seed": int(time.time())}),
        "bank": base.bank.model_copy(update={"n": n, "problems_per_chunk": problems}),
        "generator": base.generator.model_copy(update={"backend": backend}),
    })
    scratch = Path(tempfile.mkdtemp(prefix="bench-flow-"))
    (scratch / "models").symlink_to(workdir / "models")
    start = time.perf_counter()
    sample_bank(config=cfg, workdir=str(scratch))
    seconds = time.perf_counter() - start
    import duckdb

    with duckdb.connect(str(scratch / "ttscale.duckdb"), read_only=True) as con:
        tokens = con.execute("SELECT sum(generated_tokens) FROM candidates").fetchall()[0][0]
    return seconds, int(tokens)


def ingest_rows_per_s(rows: int = 1_000_000) -> float:
    from ttscale.warehouse.store import Warehouse

    rng = np.random.default_rng(0)
    table = pa.table({
        "candidate_id": [f"{i:016x}" for i in range(rows)], "bank_id": ["b"] * rows, "run_id": ["r"] * rows,
        "problem_id": [f"p{i // 64}" for i in range(rows)], "method": ["sample"] * rows,
        "budget": np.full(rows, 64, np.int32), "sample_index": (np.arange(rows) % 64).astype(np.int32),
        "seed": np.zeros(rows, np.int64), "model": ["base"] * rows,
        "text": ["00: 4821+0357=5178\n\nans=5178"] * rows, "final_answer": rng.integers(0, 9999, rows).astype(str),
        "correct": rng.random(rows) < 0.5, "n_steps": np.full(rows, 2, np.int32),
        "prompt_tokens": np.full(rows, 40, np.int32), "generated_tokens": np.full(rows, 120, np.int32),
        "finish_reason": ["stop"] * rows, "flops": np.full(rows, 3.2e8),
        "created_at": pa.array(np.full(rows, np.datetime64("2026-01-01T00:00:00", "us"))),
    })
    with tempfile.TemporaryDirectory() as tmp, Warehouse(Path(tmp) / "bench.duckdb") as wh:
        start = time.perf_counter()
        added = wh.insert("candidates", table)
        seconds = time.perf_counter() - start
    assert added == rows
    return rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=".ttscale", help="workdir with a trained base model (ttscale train-base)")
    parser.add_argument("--problems", type=int, default=50)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--skip-vllm", action="store_true")
    args = parser.parse_args()
    quiet_services()
    wd = Workdir.at(args.workdir)
    base = wd.model_dir("base")
    from ttscale.configs import load_config
    from ttscale.tasks.problems import load_problems
    from ttscale.tasks.sampling import prompt_for

    tiny = load_config("tiny")
    problems = [p for p in load_problems(tiny.task.model_copy(update={"n_test": args.problems})) if p.split == "test"]
    prompts = [prompt_for(p) for p in problems]
    print(f"machine: {os.cpu_count()} CPUs; {args.problems} problems x {args.n} samples")
    backends = ["hf"] + ([] if args.skip_vllm else ["vllm"])
    raw: dict[str, float] = {}
    for backend in backends:
        tps, secs = backend_tokens_per_s(backend, base, prompts, args.n, args.max_tokens)
        raw[backend] = tps
        print(f"{backend:5s} embedded model: {tps:8.0f} generated tokens/s ({secs:.1f}s)")
    smol = wd.model_dir("smollm2")
    if (smol / "model.safetensors").exists():
        for backend in backends:
            tps, secs = backend_tokens_per_s(backend, smol, ["What is 12 + 30?"] * 2, 2, 48, chat=True)
            print(f"{backend:5s} SmolLM2-135M:   {tps:8.1f} generated tokens/s ({secs:.1f}s)")
    for backend in backends:
        seconds, tokens = flow_seconds(wd.root, args.problems, args.n, backend)
        through = tokens / seconds
        print(f"{backend:5s} through the flow: {through:8.0f} tokens/s, overhead {100 * (raw[backend] / through - 1):+.0f}% "
              f"(includes engine start, grading, warehouse writes, MLflow and the report)")
    print(f"DuckDB ingest: {ingest_rows_per_s():,.0f} candidate rows/s (1M rows, one Arrow batch, INSERT OR IGNORE)")


if __name__ == "__main__":
    main()
