"""From step scores to one answer: aggregation over steps, selection rules over N candidates,
and accuracy-vs-N curves resampled from the bank.

The rules work on many subsets at once (a boolean mask per subset), which is what
the curves need: for each budget N, draw many N-subsets of a problem's candidates and
ask each rule what it would have answered. A single selection is the one-row case.
Candidates with no parseable answer never win a vote; best-of-N may still pick one
(and is then wrong), as a real verifier would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ttscale.tasks.metrics import powers_of_two
from ttscale.warehouse.store import Warehouse
from collections import defaultdict

Aggregation = Literal["last", "min", "prod", "mean"]
AGGREGATIONS: tuple[Aggregation, ...] = ("last", "min", "prod", "mean")
RULES = ("oracle", "majority", "best_of_n", "weighted")


def aggregate(step_scores: Sequence[float], how: Aggregation = "last") -> float:
    """One candidate score from its step scores (the paper's best is the last step's)."""
    if len(step_scores) == 0:
        return 0.0
    scores = np.asarray(step_scores, dtype=float)
    return float({"last": scores[-1], "min": scores.min(), "prod": scores.prod(), "mean": scores.mean()}[how])


@dataclass(frozen=True)
class ProblemCandidates:
    """One problem's candidates: answer codes (-1 = unparseable), correctness, candidate scores."""

    codes: np.ndarray  # (n,) int, same code = same final answer
    correct: np.ndarray  # (n,) bool
    scores: Mapping[str, np.ndarray]  # aggregation -> (n,) float

    @classmethod
    def build(cls, answers: Sequence[str | None], correct: Sequence[bool],
              scores: Mapping[str, Sequence[float]] | None = None) -> "ProblemCandidates":
        table: dict[str, int] = {}
        codes = [-1 if a is None else table.setdefault(a, len(table)) for a in answers]
        return cls(np.asarray(codes, dtype=int), np.asarray(correct, dtype=bool),
                   {k: np.asarray(v, dtype=float) for k, v in (scores or {}).items()})


def select(pc: ProblemCandidates, masks: np.ndarray, rule: str, aggregation: str | None = None,
           rng: np.random.Generator | None = None) -> np.ndarray:
    """Whether the answer `rule` picks from each masked subset is correct: (subsets,) bool.

    Ties are broken at random (a tiny jitter from `rng`), never by candidate order.
    """
    masks = np.asarray(masks, dtype=bool)
    rng = rng or np.random.default_rng(0)
    if rule == "oracle":
        return (masks & pc.correct).any(axis=1)
    if rule == "best_of_n":
        score = pc.scores[aggregation or "last"] + rng.random(pc.codes.shape) * 1e-9
        picked = np.where(masks, score, -np.inf).argmax(axis=1)
        return pc.correct[picked] & masks.any(axis=1)
    n_answers = int(pc.codes.max()) + 1 if (pc.codes >= 0).any() else 0
    if n_answers == 0:
        return np.zeros(len(masks), dtype=bool)
    onehot = np.zeros((len(pc.codes), n_answers))
    valid = pc.codes >= 0
    onehot[np.flatnonzero(valid), pc.codes[valid]] = 1.0
    if rule == "majority":
        weights = np.ones(len(pc.codes))
    elif rule == "weighted":
        weights = pc.scores[aggregation or "last"]
    else:
        raise ValueError(f"unknown selection rule {rule!r}; expected one of {RULES}")
    totals = (masks * weights) @ onehot  # (subsets, answers)
    voted = (masks.astype(float) @ onehot) > 0
    totals = np.where(voted, totals + rng.random(totals.shape) * 1e-9, -np.inf)
    winner = totals.argmax(axis=1)
    answer_correct = np.zeros(n_answers, dtype=bool)
    answer_correct[pc.codes[valid & pc.correct]] = True
    return answer_correct[winner] & voted.any(axis=1)


def subset_masks(n: int, size: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`resamples` random subsets of `size` out of n candidates, without replacement within a subset."""
    if size >= n:
        return np.ones((resamples, n), dtype=bool)
    ranks = rng.random((resamples, n)).argsort(axis=1)
    return ranks < size


@dataclass(frozen=True)
class CurvePoint:
    rule: str
    aggregation: str
    level: int
    n: int
    accuracy: float
    lo: float
    hi: float
    problems: int


def curves(problems: Sequence[tuple[int, ProblemCandidates]], resamples: int, seed: int = 0,
           confidence: float = 0.95) -> list[CurvePoint]:
    """Accuracy vs N for every rule and aggregation, overall (level 0) and per level.

    Each resample draws one N-subset per problem and also bootstraps the problems, so the
    interval covers both what a different draw of candidates and a different set of
    problems would give. The point estimate averages over the subsets only.
    """
    rng = np.random.default_rng(seed)
    n_max = min(len(pc.codes) for _, pc in problems)
    aggregations = sorted({a for _, pc in problems for a in pc.scores})
    combos = [("oracle", "-"), ("majority", "-")] + [(r, a) for r in ("best_of_n", "weighted") for a in aggregations]
    levels = sorted({lvl for lvl, _ in problems if lvl})  # level 0: the dataset gives none, so only "all"
    out: list[CurvePoint] = []
    for n in powers_of_two(n_max):
        draws = resamples if n < n_max else 1
        # correct[c][r, p]: rule combo c on resample r of problem p
        correct = {c: np.zeros((draws, len(problems)), dtype=bool) for c in combos}
        for p, (_, pc) in enumerate(problems):
            masks = subset_masks(len(pc.codes), n, draws, rng)
            for rule, agg in combos:
                correct[(rule, agg)][:, p] = select(pc, masks, rule, None if agg == "-" else agg, rng)
        level_of = np.array([lvl for lvl, _ in problems])
        for level in [0] + levels:
            cols = np.flatnonzero(level_of == level) if level else np.arange(len(problems))
            boot = rng.integers(0, len(cols), size=(resamples, len(cols)))
            pick = rng.integers(0, draws, size=resamples)
            for (rule, agg), matrix in correct.items():
                sub = matrix[:, cols]
                boot_acc = sub[pick[:, None], boot].mean(axis=1)
                lo, hi = np.quantile(boot_acc, [(1 - confidence) / 2, (1 + confidence) / 2])
                out.append(CurvePoint(rule, agg, level, n, float(sub.mean()), float(lo), float(hi), len(cols)))
    return out


def candidates_by_problem(wh: Warehouse, bank: str, scorer_id: str) -> dict[str, tuple[int, ProblemCandidates]]:
    """Per problem id: answers, correctness and every aggregation of the step scores (0 for no steps)."""
    rows = wh.query(
        """SELECT c.problem_id, p.level, c.candidate_id, c.final_answer, c.correct,
                  list(s.score ORDER BY s.step_index) FILTER (WHERE s.score IS NOT NULL) AS scores
           FROM candidates c JOIN problems p USING (problem_id)
           LEFT JOIN step_scores s ON s.candidate_id = c.candidate_id AND s.scorer_id = ?
           WHERE c.bank_id = ? GROUP BY ALL ORDER BY c.problem_id, c.candidate_id""",
        [scorer_id, bank],
    ).to_pylist()
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        grouped[r["problem_id"]].append(r)
    out = {}
    for problem_id, group in grouped.items():
        scores = {a: [aggregate(r["scores"] or [], a) for r in group] for a in AGGREGATIONS}
        out[problem_id] = (group[0]["level"], ProblemCandidates.build([r["final_answer"] for r in group],
                                                                      [r["correct"] for r in group], scores))
    return out
