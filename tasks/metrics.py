"""Bank metrics: pass@k, majority@k and the guessing baseline, per difficulty level.

pass@k uses the unbiased estimator (Chen et al. 2021). majority@k has no closed form,
so it is estimated by drawing many k-subsets of the stored candidates. The guessing
baseline asks how often a guesser that draws answers from the train split's answer
distribution would hit: if that is close to pass@k, the model is not solving anything.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int, draws: int, rng: np.random.Generator) -> float:
    """Chance that the most common parsed answer among k random candidates is right (ties split evenly)."""
    right = {a for a, ok in zip(answers, correct) if ok and a is not None}
    n = len(answers)
    if n == 0:
        return 0.0
    total = 0.0
    subsets = [range(n)] if k >= n else (rng.choice(n, size=k, replace=False) for _ in range(draws))
    count = 0
    for idx in subsets:
        votes = Counter(answers[i] for i in idx if answers[i] is not None)
        count += 1
        if not votes:
            continue
        top = max(votes.values())
        leaders = [a for a, v in votes.items() if v == top]
        total += sum(a in right for a in leaders) / len(leaders)
    return total / count


def guess_at_k(answer: str, prior: Mapping[str, float], k: int) -> float:
    p = prior.get(answer, 0.0)
    return 1.0 - (1.0 - p) ** k


def answer_prior(answers: Sequence[str]) -> dict[str, float]:
    counts = Counter(answers)
    total = sum(counts.values())
    return {a: c / total for a, c in counts.items()}


def wilson(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a mean of n 0/1 outcomes (the same formula the SQL views use)."""
    if n <= 0:
        return 0.0, 1.0
    centre = accuracy + z * z / (2 * n)
    spread = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return min(accuracy, max(0.0, (centre - spread) / scale)), max(accuracy, min(1.0, (centre + spread) / scale))


def powers_of_two(n: int) -> list[int]:
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


@dataclass(frozen=True)
class ProblemSamples:
    level: int
    answer: str
    answers: list[str | None]
    correct: list[bool]


def bank_curves(
    problems: Sequence[ProblemSamples], prior: Mapping[str, float], draws: int, seed: int = 0
) -> dict[tuple[str, int, int], float]:
    """{(metric, level, k): value} with level 0 = all levels, k = 1, 2, 4, ... up to the smallest n."""
    rng = np.random.default_rng(seed)
    n_min = min(len(p.answers) for p in problems)
    per: dict[tuple[str, int, int], list[float]] = {}
    for p in problems:
        n, c = len(p.correct), sum(p.correct)
        for k in powers_of_two(n_min):
            values = {
                "pass": pass_at_k(n, c, k),
                "majority": majority_at_k(p.answers, p.correct, k, draws, rng),
                "guess": guess_at_k(p.answer, prior, k),
            }
            for metric, v in values.items():
                for level in {0, p.level}:  # a problem without a level (0) counts once
                    per.setdefault((metric, level, k), []).append(v)
    return {key: float(np.mean(v)) for key, v in sorted(per.items())}
