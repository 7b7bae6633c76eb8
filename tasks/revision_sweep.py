"""The sequential:parallel sweep: for budget N and chain length L, N/L chains of L attempts.

Every (N, L) is cut out of one staircase of chains (tasks/revisions.py), then a
selection rule picks one answer from the N attempts:
- flat: over all N attempts at once;
- hierarchical: first within each chain, then across the chains' winners.
Majority counts votes; a verifier (the ORM, or the PRM's last-step score) weights
each vote by its score (best-of-N weighted). Unparseable answers never win. Ties
break at random, never by position, so a rule cannot win by favouring late attempts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from ttscale.tasks.metrics import powers_of_two

VERIFIERS = ("majority", "orm", "prm")
RULES = ("oracle",) + tuple(f"{v}_{mode}" for v in VERIFIERS for mode in ("flat", "hier"))


@dataclass(frozen=True)
class ChainAttempt:
    answer: str | None
    correct: bool
    scores: Mapping[str, float]  # verifier -> score ("orm", "prm"); majority needs none


Vote = tuple[str, float]  # (answer, weight)


def vote(votes: Sequence[Vote], rng: random.Random) -> Vote | None:
    """The answer with the largest total weight, and its best single weight (ties at random)."""
    totals: dict[str, float] = {}
    best: dict[str, float] = {}
    for answer, weight in votes:
        totals[answer] = totals.get(answer, 0.0) + weight
        best[answer] = max(best.get(answer, float("-inf")), weight)
    if not totals:
        return None
    top = max(totals.values())
    leaders = sorted(a for a, t in totals.items() if t >= top - 1e-12)
    winner = rng.choice(leaders)
    return winner, best[winner]


def _votes(attempts: Sequence[ChainAttempt], verifier: str) -> list[Vote]:
    return [(a.answer, 1.0 if verifier == "majority" else a.scores[verifier])
            for a in attempts if a.answer is not None]


def select(chains: Sequence[Sequence[ChainAttempt]], rule: str, rng: random.Random) -> tuple[str | None, bool]:
    """(answer, correct) that `rule` picks from these chains' attempts."""
    if rule not in RULES:
        raise ValueError(f"unknown revision selection rule {rule!r}; expected one of {RULES}")
    attempts = [a for chain in chains for a in chain]
    right = {a.answer for a in attempts if a.correct}
    if rule == "oracle":
        return (next(iter(right)) if right else None), bool(right)
    verifier, mode = rule.rsplit("_", 1)
    if mode == "flat":
        picked = vote(_votes(attempts, verifier), rng)
    else:  # hier: each chain's winner carries its best single score across chains (majority: one vote each)
        winners = [w for w in (vote(_votes(chain, verifier), rng) for chain in chains) if w is not None]
        picked = vote([(a, 1.0 if verifier == "majority" else s) for a, s in winners], rng)
    answer = picked[0] if picked else None
    return answer, answer is not None and answer in right


def grid(budget: int) -> list[tuple[int, int]]:
    """Every (N, L) the staircase of `budget` holds."""
    return [(n, length) for n in powers_of_two(budget) for length in powers_of_two(n)]


def sweep(problem_chains: Mapping[str, Mapping[int, Sequence[ChainAttempt]]], budget: int, chain_sets: int,
          rules: Sequence[str], seed: int = 0) -> list[dict]:
    """One selection per (problem, chain set, N, L, rule).

    Chain set s owns chains s*budget .. s*budget + budget - 1; (N, L) takes the first
    N/L of them, each cut to its first L attempts.
    """
    rng = random.Random(seed)
    rows = []
    for problem_id, chains in problem_chains.items():
        for s in range(chain_sets):
            for n, length in grid(budget):
                picked = [list(chains.get(s * budget + i, ()))[:length] for i in range(n // length)]
                if any(len(c) < length for c in picked):
                    raise ValueError(f"problem {problem_id}: chain set {s} is missing attempts for N={n}, L={length}")
                for rule in rules:
                    answer, correct = select(picked, rule, rng)
                    rows.append(dict(problem_id=problem_id, chain_set=s, budget=n, length=length, rule=rule,
                                     final_answer=answer, correct=correct))
    return rows


SELECTION_SCHEMA = pa.schema([
    ("chain_set_id", pa.string()), ("run_id", pa.string()), ("problem_id", pa.string()), ("chain_set", pa.int32()),
    ("budget", pa.int32()), ("length", pa.int32()), ("rule", pa.string()), ("final_answer", pa.string()),
    ("correct", pa.bool_()),
])


def selections_table(rows: Sequence[dict], chain_set_id: str, run_id: str) -> pa.Table:
    return pa.Table.from_pylist([{**r, "chain_set_id": chain_set_id, "run_id": run_id} for r in rows],
                                schema=SELECTION_SCHEMA)
