"""The sample bank: N candidates per problem, split into steps, graded, keyed for idempotence.

A bank is identified by the model and the sampling spec (`bank_id`), not by the run
that made it: a second run with the same model and spec finds the bank already full
and samples nothing, and a killed run finds its committed chunks and goes on from there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone

import pyarrow as pa

from ttscale.configs.schema import BankConfig, WorkerConfig
from ttscale.models.generator import Generator, SamplingSpec
from ttscale.tasks import arith
from ttscale.tasks.benchmarks import for_source
from ttscale.tasks.grading import grade_all, split_steps
from ttscale.tasks.problems import Problem
from ttscale.warehouse.store import Warehouse


def stable_hash(*parts: object) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def bank_id(model_fingerprint: str, spec: SamplingSpec) -> str:
    return stable_hash("bank", model_fingerprint, asdict(spec))


def prompt_for(problem: Problem) -> str:
    if problem.source == arith.SOURCE:
        return arith.prompt(problem.question)
    return for_source(problem.source).prompt.format(question=problem.question)


def response_prefix(steps: Sequence[str]) -> str:
    """A partial solution as the model continues it: its steps so far, each closed by the delimiter,
    so the next generation is a fresh step. Labeling rollouts and every search round send it beside
    `prompt_for(problem)` (the generator puts it after a chat model's assistant header)."""
    return "".join(s + arith.STEP_DELIMITER for s in steps)


def pending(wh: Warehouse, bank: str, problems: Sequence[Problem], n: int, method: str = "sample") -> list[Problem]:
    """Problems whose bank is not yet complete (chunks commit whole, so this is exact)."""
    done = wh.query(
        "SELECT problem_id FROM candidates WHERE bank_id = ? AND method = ? "
        "GROUP BY problem_id HAVING count(*) >= ?",
        [bank, method, n],
    ).column("problem_id").to_pylist()
    finished = set(done)
    return [p for p in problems if p.problem_id not in finished]


def problem_chunks(problems: Sequence[Problem], workers: WorkerConfig, size: int, group: str
                   ) -> list[tuple[str, list[Problem]]]:
    """This worker's share of the problems in chunks of `size`, each with an id stable across re-runs,
    so a re-run worker skips the chunks it already wrote."""
    mine = [p for p in problems if workers.owns(p.index)]
    chunks = [mine[i : i + size] for i in range(0, len(mine), size)]
    return [(stable_hash(group, [p.problem_id for p in chunk]), chunk) for chunk in chunks]


def sample_chunk(
    generator: Generator,
    problems: Sequence[Problem],
    spec: SamplingSpec,
    bank: str,
    run_id: str,
    model_name: str,
    method: str = "sample",
) -> tuple[pa.Table, pa.Table]:
    """Generate spec.n candidates for each problem; return (candidates, steps) Arrow tables."""
    completions = generator.generate([prompt_for(p) for p in problems], spec)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    cand: dict[str, list] = {k: [] for k in _CANDIDATE_COLUMNS}
    steps: dict[str, list] = {"candidate_id": [], "step_index": [], "text": []}
    graded = iter(grade_all([(problem, c.text) for problem, outs in zip(problems, completions) for c in outs]))
    for problem, outs in zip(problems, completions):
        for i, c in enumerate(outs):
            cid = stable_hash(bank, problem.problem_id, i)
            answer, correct = next(graded)
            parts = split_steps(c.text)
            row = dict(
                candidate_id=cid, bank_id=bank, run_id=run_id, problem_id=problem.problem_id,
                method=method, budget=spec.n, sample_index=i, seed=spec.seed, model=model_name,
                text=c.text, final_answer=answer, correct=correct, n_steps=len(parts),
                prompt_tokens=c.prompt_tokens, generated_tokens=c.generated_tokens,
                finish_reason=c.finish_reason,
                flops=2.0 * generator.n_params * (c.prompt_tokens + c.generated_tokens), created_at=now,
            )
            for k in _CANDIDATE_COLUMNS:
                cand[k].append(row[k])
            for j, s in enumerate(parts):
                steps["candidate_id"].append(cid)
                steps["step_index"].append(j)
                steps["text"].append(s)
    return pa.table(cand), pa.table(steps)


_CANDIDATE_COLUMNS = (
    "candidate_id", "bank_id", "run_id", "problem_id", "method", "budget", "sample_index", "seed", "model",
    "text", "final_answer", "correct", "n_steps", "prompt_tokens", "generated_tokens", "finish_reason",
    "flops", "created_at",
)


def problems_table(problems: Sequence[Problem]) -> pa.Table:
    return pa.Table.from_pylist([p.row() for p in problems])


def sampling_spec(bank: BankConfig) -> SamplingSpec:
    """How the bank was sampled: part of every id built on the bank (search, difficulty, revisions)."""
    return SamplingSpec(n=bank.n, temperature=bank.temperature, top_p=bank.top_p,
                        max_tokens=bank.max_tokens, seed=bank.seed)
