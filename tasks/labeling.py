"""Monte-Carlo step labels (Math-Shepherd style): what the PRM learns from.

For each problem, K solutions are sampled (round 1). From every proper step prefix of
every solution, R rollouts run to the end (round 2); a step's soft label is the share
of its rollouts whose final answer is right, an estimate of the base policy's value
after that step. The last step needs no rollouts: the solution itself ends there and
is graded as it is. Labels are by outcome, never by matching the reference steps
(DESIGN.md: a verifier trained on exact-step labels lost to majority vote).

Each round is ONE generator call for all problems of a chunk, so vLLM batches every
rollout together and its prefix cache shares the common prefixes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace

import pyarrow as pa

from ttscale.models.generator import Generator, SamplingSpec
from ttscale.tasks import arith
from ttscale.tasks.grading import grade
from ttscale.tasks.problems import Problem
from ttscale.tasks.sampling import prompt_for, response_prefix, sample_chunk, stable_hash
from ttscale.configs.schema import LabelConfig

METHOD = "label"
DELIMITER = arith.STEP_DELIMITER

LABEL_SCHEMA = pa.schema([
    ("candidate_id", pa.string()), ("step_index", pa.int32()), ("run_id", pa.string()), ("kind", pa.string()),
    ("rollouts", pa.int32()), ("correct", pa.int32()), ("label", pa.float64()),
    ("prompt_tokens", pa.int64()), ("generated_tokens", pa.int64()), ("flops", pa.float64()),
])


def label_chunk(
    generator: Generator,
    problems: Sequence[Problem],
    spec: SamplingSpec,
    rollouts: int,
    label_bank: str,
    run_id: str,
    model_name: str,
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Sample spec.n solutions per problem and label every step; returns (candidates, steps, step_labels)."""
    candidates, steps = sample_chunk(generator, problems, spec, label_bank, run_id, model_name, method=METHOD)
    by_id = {p.problem_id: p for p in problems}
    step_texts: dict[str, list[str]] = {}
    for cid, text in zip(steps.column("candidate_id").to_pylist(), steps.column("text").to_pylist()):
        step_texts.setdefault(cid, []).append(text)

    # Round 2: one request per proper prefix (steps 1..S-1), R rollouts each.
    requests: list[tuple[str, int, Problem, list[str]]] = []
    for cid, pid in zip(candidates.column("candidate_id").to_pylist(), candidates.column("problem_id").to_pylist()):
        parts = step_texts.get(cid, [])
        requests += [(cid, i, by_id[pid], parts) for i in range(len(parts) - 1)]
    rollout_spec = replace(spec, n=rollouts)
    outs = generator.generate([prompt_for(p) for _, _, p, _ in requests], rollout_spec,
                              prefixes=[response_prefix(parts[: i + 1]) for _, i, _, parts in requests])

    rows: dict[str, list] = {name: [] for name in LABEL_SCHEMA.names}

    def add(cid: str, index: int, kind: str, n: int, right: int, prompt_tokens: int, generated: int) -> None:
        values = (cid, index, run_id, kind, n, right, right / n, prompt_tokens, generated,
                  2.0 * generator.n_params * (prompt_tokens + generated))
        for name, value in zip(LABEL_SCHEMA.names, values):
            rows[name].append(value)

    for (cid, i, problem, parts), completions in zip(requests, outs):
        head = DELIMITER.join(parts[: i + 1]) + DELIMITER
        right = sum(grade(problem, head + c.text)[1] for c in completions)
        add(cid, i, "rollouts", len(completions), right,
            sum(c.prompt_tokens for c in completions), sum(c.generated_tokens for c in completions))
    for cid, correct in zip(candidates.column("candidate_id").to_pylist(), candidates.column("correct").to_pylist()):
        if step_texts.get(cid):
            add(cid, len(step_texts[cid]) - 1, "outcome", 1, int(correct), 0, 0)
    return candidates, steps, pa.table(rows, schema=LABEL_SCHEMA)


def label_bank_id(model_fingerprint: str, labels: LabelConfig) -> str:
    """Labels are identified by the model and how they were sampled, like a sample bank."""
    return stable_hash(METHOD, model_fingerprint, asdict(label_spec(labels)), labels.rollouts)


def label_spec(labels: LabelConfig) -> SamplingSpec:
    return SamplingSpec(n=labels.samples, temperature=labels.temperature, max_tokens=labels.max_tokens,
                        seed=labels.seed)
