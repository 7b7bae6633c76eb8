"""The compute-optimal policy, its efficiency over best-of-N, and a global budget allocator.

Input is an outcome table: for each (strategy, budget), each problem's accuracy (the
share of seeds or chain sets that got it right), read from what the search and revision
stages stored. The policy picks, per (difficulty bin, budget), the strategy with the best
accuracy on one fold of the problems and is scored on the other fold (2-fold
cross-validation over several random splits, stratified by bin, PAPER.md "Compute-optimal
scaling"). No problem ever helps choose the strategy it is scored with.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
import numpy as np

from ttscale.tasks.comparison import Comparison, detectable_difference

Outcomes = Mapping[tuple[str, int], Mapping[str, float]]  # (strategy, budget) -> problem -> accuracy


def budgets_of(outcomes: Outcomes) -> list[int]:
    return sorted({b for _, b in outcomes})


def fit_policy(outcomes: Outcomes, bins: Mapping[str, int], problems: Sequence[str], baseline: str
               ) -> dict[tuple[int, int], tuple[str, float]]:
    """(bin, budget) -> (strategy, mean accuracy on `problems` of that bin). Ties go to the baseline, then by name."""
    policy: dict[tuple[int, int], tuple[str, float]] = {}
    for b in sorted(set(bins[p] for p in problems)):
        members = [p for p in problems if bins[p] == b]
        for budget in budgets_of(outcomes):
            scored = []
            for (strategy, at), per_problem in outcomes.items():
                if at != budget or not all(p in per_problem for p in members):
                    continue
                mean = sum(per_problem[p] for p in members) / len(members)
                scored.append((-mean, strategy != baseline, strategy))
            if scored:
                best = min(scored)
                policy[(b, budget)] = (best[2], -best[0])
    return policy


def folds(problems: Sequence[str], bins: Mapping[str, int], rng: random.Random) -> tuple[list[str], list[str]]:
    """A random half split, stratified: each bin's problems are shuffled and dealt alternately."""
    a: list[str] = []
    b: list[str] = []
    for level in sorted(set(bins[p] for p in problems)):
        members = sorted(p for p in problems if bins[p] == level)
        rng.shuffle(members)
        for p in members:
            (a if len(a) <= len(b) else b).append(p)
    return a, b


def shared_problems(outcomes: Outcomes, bins: Mapping[str, int]) -> list[str]:
    """Problems with a bin and an outcome under every (strategy, budget): the ones strategies can be compared on."""
    return sorted(set(bins) & set.intersection(*(set(v) for v in outcomes.values())))


def held_out_policies(outcomes: Outcomes, bins: Mapping[str, int], baseline: str, splits: int, seed: int
                      ) -> Iterator[tuple[dict[tuple[int, int], tuple[str, float]], list[str]]]:
    """(policy fitted on one fold, the other fold's problems) for both folds of every random split."""
    problems = shared_problems(outcomes, bins)
    rng = random.Random(seed)
    for _ in range(splits):
        a, b = folds(problems, bins, rng)
        for train, test in ((a, b), (b, a)):
            if train and test:
                yield fit_policy(outcomes, bins, train, baseline), test


@dataclass(frozen=True)
class CVResult:
    accuracy: dict[int, float]  # budget -> compute-optimal accuracy, held-out, averaged over splits
    per_bin: dict[tuple[int, int], float]  # (bin, budget) -> the same within one bin
    baseline: dict[int, float]  # budget -> the baseline's accuracy on the same problems
    chosen: dict[tuple[int, int], dict[str, int]]  # (bin, budget) -> strategy -> times chosen across folds
    held_out: dict[tuple[int, str], list[float]]  # (budget, problem) -> its held-out outcome in each split


def cross_validate(outcomes: Outcomes, bins: Mapping[str, int], baseline: str, splits: int, seed: int = 0
                   ) -> CVResult:
    problems = shared_problems(outcomes, bins)
    budgets = budgets_of(outcomes)
    total = {n: 0.0 for n in budgets}
    per_bin: dict[tuple[int, int], float] = {}
    chosen: dict[tuple[int, int], dict[str, int]] = {}
    held_out: dict[tuple[int, str], list[float]] = {}
    for policy, test in held_out_policies(outcomes, bins, baseline, splits, seed):
        for p in test:
            for n in budgets:
                value = outcomes.get((_lookup(policy, bins[p], n, baseline), n), {}).get(p, 0.0)
                held_out.setdefault((n, p), []).append(value)
                total[n] += value
                per_bin[(bins[p], n)] = per_bin.get((bins[p], n), 0.0) + value
        for key, (strategy, _) in policy.items():
            chosen.setdefault(key, {}).setdefault(strategy, 0)
            chosen[key][strategy] += 1
    counts = {level: sum(1 for p in problems if bins[p] == level) for level in set(bins[p] for p in problems)}
    accuracy = {n: total[n] / (splits * len(problems)) for n in budgets}
    per_bin = {(level, n): v / (splits * counts[level]) for (level, n), v in per_bin.items()}
    base = {n: sum(outcomes[(baseline, n)][p] for p in problems) / len(problems)
            for n in budgets if (baseline, n) in outcomes}
    return CVResult(accuracy, per_bin, base, chosen, held_out)


def choosable(outcomes: Outcomes, budget: int) -> int:
    """How many different strategies the policy could choose from at this charged budget. At budget 1 every
    strategy draws one sample and answers it, so they are one method however they are named: a "gain"
    there is noise by construction."""
    return 1 if budget <= 1 else len({s for s, n in outcomes if n == budget})


def budget_ratio(rows: Sequence[dict], source: str, kind: str, budget: int, family: int = 1, seed: int = 0,
                 resamples: int = 1000, alpha: float = 0.05) -> Comparison:
    """How much less budget the compute-optimal policy needs than the baseline for its held-out accuracy
    at `budget`, as log2(equivalent baseline budget / budget), with a bootstrap interval over problems and
    CV splits (each replicate redraws the problems and one split). `rows` are `allocation_outcomes` rows."""
    sel = [r for r in rows if r["source"] == source and r["bin_kind"] == kind]
    problems = sorted({r["problem_id"] for r in sel})
    budgets = sorted({int(r["budget"]) for r in sel})
    splits = sorted({int(r["split"]) for r in sel})
    col, row_of, split_of = {n: i for i, n in enumerate(budgets)}, {p: i for i, p in enumerate(problems)}, \
        {s: i for i, s in enumerate(splits)}
    base = np.zeros((len(problems), len(budgets)))
    opt = np.zeros((len(splits), len(problems)))
    for r in sel:
        base[row_of[r["problem_id"]], col[int(r["budget"])]] = r["baseline"]
        if int(r["budget"]) == budget:
            opt[split_of[int(r["split"])], row_of[r["problem_id"]]] = r["optimal"]

    def log_ratio(target: float, curve: np.ndarray) -> float:
        return math.log2(efficiency({budget: target}, dict(zip(budgets, curve)))[0].ratio)

    baseline = next((r["baseline_name"] for r in sel), "best-of-N")
    claim = "compute-optimal needs less budget than best-of-N for its accuracy (paper: up to 4x)"
    confidence = 1 - alpha / max(1, family)
    curve = base.mean(axis=0)
    floor_tie = bool(sel) and opt.mean() < 1e-12 and curve[0] < 1e-12
    if not sel or curve.max() - curve.min() < 1e-12 or floor_tie:
        # best-of-N gains nothing with budget here (all wrong, or all right), or the policy solves nothing
        # and neither does best-of-N's smallest budget: a tie at zero "matches" at any budget, so no ratio
        # is defined (a weak model on GSM8K called this 0.5x, contradicted)
        return Comparison(5, claim, f"compute-optimal {source} ({kind} bins)", baseline, "all", float(budget), 0.0,
                          0.0, 0.0, 0, 0.0, family, confidence, "log2 budget ratio")
    point = log_ratio(float(opt.mean()), curve)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(problems), size=(resamples, len(problems)))
    which = rng.integers(0, len(splits), size=resamples)
    boot = np.array([log_ratio(float(opt[s, d].mean()), base[d].mean(axis=0)) for s, d in zip(which, draws)])
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    detectable = detectable_difference(float(boot.std(ddof=1)), confidence)
    return Comparison(5, claim, f"compute-optimal {source} ({kind} bins)", baseline, "all", float(budget), point,
                      float(min(lo, point)), float(max(hi, point)), len(problems), detectable, family, confidence,
                      "log2 budget ratio")


def _lookup(policy: Mapping[tuple[int, int], tuple[str, float]], level: int, budget: int, fallback: str) -> str:
    return policy[(level, budget)][0] if (level, budget) in policy else fallback


@dataclass(frozen=True)
class Exchange:
    budget: int
    target: float  # compute-optimal accuracy at this budget
    equivalent: float  # best-of-N budget that reaches it (interpolated in log2 budget)
    ratio: float  # equivalent / (budget + charged estimation cost)
    censored: str  # "" exact, ">=" beyond the largest best-of-N budget, "<=" at or below its smallest


def efficiency(optimal: Mapping[int, float], baseline: Mapping[int, float], charge: float = 0.0) -> list[Exchange]:
    """For each budget, how much best-of-N budget buys the compute-optimal accuracy (paper: up to 4x)."""
    points = sorted(baseline.items())
    out = []
    for n, target in sorted(optimal.items()):
        if target <= points[0][1]:
            equivalent, censored = float(points[0][0]), "<="
        elif target > points[-1][1]:
            equivalent, censored = float(points[-1][0]), ">="
        else:
            equivalent, censored = float(points[-1][0]), ""
            for (n0, a0), (n1, a1) in zip(points, points[1:]):
                if a0 < target <= a1:
                    frac = (target - a0) / (a1 - a0)
                    equivalent = 2 ** (math.log2(n0) + frac * (math.log2(n1) - math.log2(n0)))
                    break
        out.append(Exchange(n, target, equivalent, equivalent / (n + charge), censored))
    return out


def allocate(curves: Mapping[int, Mapping[int, float]], bins: Mapping[str, int], total: float,
             cost_per_problem: float = 0.0) -> dict[str, int]:
    """Spend `total` across problems where the predicted marginal gain per unit of compute is largest.

    `curves[bin][budget]` is the predicted accuracy of a problem of that bin at that budget
    (0 means no attempt). Each problem first pays `cost_per_problem` (estimating its
    difficulty); then, greedily, the raise with the best predicted gain per extra sample
    is bought, a raise being a jump to any larger budget on the curve (so a flat stretch
    before a gain does not stop it), while the total allows and a raise does not lose.
    Never spends more than `total`.
    """
    left = total - cost_per_problem * len(bins)
    budget = {p: 0 for p in bins}
    if left < 0:
        return budget

    def best_move(p: str) -> tuple[float, int, int] | None:
        """(gain per extra sample, extra samples, new budget) of the best affordable raise that loses nothing."""
        now, curve = budget[p], curves.get(bins[p], {})
        here = curve.get(now, 0.0) if now else 0.0
        moves = [((curve[b] - here) / (b - now), b - now, b) for b in curve if b > now and b - now <= left]
        moves = [m for m in moves if m[0] >= 0]  # a flat curve still gets what no gain elsewhere claims
        return max(moves, key=lambda m: (m[0], -m[1])) if moves else None

    while True:
        options = [(m, p) for p in sorted(bins) if (m := best_move(p)) is not None]
        if not options:
            return budget
        (_, cost, target), p = max(options, key=lambda o: (o[0][0], -o[0][1]))
        budget[p] = target
        left -= cost


def evaluate_allocator(outcomes: Outcomes, bins: Mapping[str, int], baseline: str, splits: int, charge: float,
                       seed: int = 0) -> dict[int, tuple[float, float, float, float]]:
    """At equal total compute (len(test) x N per fold): budget -> (global allocator paying `charge` per
    problem for its difficulty estimate out of the total, the allocator with the estimate free, the
    per-bin policy at a uniform N, the baseline at a uniform N), all scored on held-out problems."""
    problems = shared_problems(outcomes, bins)
    budgets = [n for n in budgets_of(outcomes) if (baseline, n) in outcomes]
    sums = {n: [0.0, 0.0, 0.0, 0.0] for n in budgets}

    def scored(policy: Mapping[tuple[int, int], tuple[str, float]], p: str, n: int) -> float:
        return outcomes.get((_lookup(policy, bins[p], n, baseline), n), {}).get(p, 0.0) if n else 0.0

    for policy, test in held_out_policies(outcomes, bins, baseline, splits, seed):
        curves: dict[int, dict[int, float]] = {}
        for (level, n), (_, acc) in policy.items():
            curves.setdefault(level, {})[n] = acc
        test_bins = {p: bins[p] for p in test}
        for n in budgets:
            charged = allocate(curves, test_bins, total=len(test) * n, cost_per_problem=charge)
            free = allocate(curves, test_bins, total=len(test) * n)
            for p in test:
                sums[n][0] += scored(policy, p, charged[p])
                sums[n][1] += scored(policy, p, free[p])
                sums[n][2] += scored(policy, p, n)
                sums[n][3] += outcomes[(baseline, n)][p]
    scale = splits * len(problems)
    return {n: (v[0] / scale, v[1] / scale, v[2] / scale, v[3] / scale) for n, v in sums.items()}


@dataclass(frozen=True)
class Policy:
    """The fitted policy as a function: a new problem's predicted difficulty and a budget -> a strategy.

    Rows are `allocation_policy` rows of one source and bin kind. A problem goes to the
    bin whose value range holds its difficulty value (the nearest range if none does);
    a budget the policy never saw falls to the largest fitted budget below it.
    """

    rows: tuple[dict, ...]

    def bin_of(self, value: float) -> int:
        def distance(r: dict) -> float:
            return 0.0 if r["value_min"] <= value <= r["value_max"] else min(abs(value - r["value_min"]),
                                                                          abs(value - r["value_max"]))
        return min(self.rows, key=lambda r: (distance(r), r["bin"]))["bin"]

    def choose(self, value: float, budget: int) -> tuple[str, int]:
        """(strategy, budget to spend) for a problem of this predicted difficulty value."""
        level = self.bin_of(value)
        fitted = sorted((r for r in self.rows if r["bin"] == level and r["budget"] <= budget),
                        key=lambda r: r["budget"])
        if not fitted:
            raise ValueError(f"no policy entry at or below budget {budget} for bin {level}")
        return fitted[-1]["strategy"], fitted[-1]["budget"]
