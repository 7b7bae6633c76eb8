"""The FLOPs-matched exchange: test-time compute on a small model vs parameters in a larger one.

Pretraining costs 6·P·D_pretrain FLOPs and inference 2·P·D_inference (PAPER.md,
"Results to reproduce"). With both models trained on the same D_pretrain tokens and
R = D_inference / D_pretrain, the small model (P_s) matches the large one (P_l = k·P_s,
one greedy sample per problem) when it may draw N samples per problem with

    6·P_s·D + 2·P_s·N·R·D = 6·P_l·D + 2·P_l·R·D   =>   N = 3·(k - 1) / R + k,

when a small-model sample is as long as the large model's greedy answer. With the stored
token counts, a sample of t_s tokens against a greedy answer of t_l tokens scales N by
t_l / t_s. Small R (little inference) leaves a lot of pretraining FLOPs to spend at test
time; large R leaves about k samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tasks.metrics import powers_of_two, wilson
from tasks.selection import ProblemCandidates, select, subset_masks


def pretrain_flops(params: float, tokens: float) -> float:
    return 6.0 * params * tokens


def inference_flops(params: float, tokens: float) -> float:
    return 2.0 * params * tokens


def matched_samples(small_params: float, large_params: float, ratio: float, token_ratio: float = 1.0) -> float:
    """Samples per problem the small model may draw at the large model's total FLOPs (same pretraining data);
    token_ratio = tokens of a large-model answer / tokens of a small-model sample."""
    k = large_params / small_params
    return (3.0 * (k - 1.0) / ratio + k) * token_ratio


def usable_budget(matched: float, largest: int) -> tuple[int, bool]:
    """The largest power of two the stored samples can serve within the matched budget, and whether
    the matched budget was cut to what is stored (then the small model's accuracy is a lower bound,
    accuracy rarely falling with more samples)."""
    cap = min(matched, largest)
    return (powers_of_two(int(cap))[-1] if cap >= 1 else 0), matched > largest


def per_problem_accuracy(pc: ProblemCandidates, n: int, rule: str, resamples: int, rng: np.random.Generator) -> float:
    """Expected accuracy of `rule` over random N-subsets of one problem's stored candidates."""
    if n == 0:
        return 0.0
    masks = subset_masks(len(pc.codes), n, resamples if n < len(pc.codes) else 1, rng)
    return float(select(pc, masks, rule, "last", rng).mean())


def by_bin(values: Mapping[str, float], bins: Mapping[str, int]) -> dict[int, float]:
    """Mean value per bin, and over all problems as bin 0."""
    return {b: float(np.mean(v)) for b, v in members(values, bins).items()}


def members(values: Mapping[str, float], bins: Mapping[str, int]) -> dict[int, list[float]]:
    """Values per bin, and all of them as bin 0."""
    out: dict[int, list[float]] = {0: []}
    for p, v in values.items():
        if p in bins:
            out.setdefault(bins[p], []).append(v)
            out[0].append(v)
    return {b: v for b, v in sorted(out.items()) if v}


def exchange_rows(ratios: Sequence[float], small_params: float, large_params: float, largest: int,
                  small: Mapping[tuple[str, int], Mapping[int, float]], large: Mapping[int, float],
                  token_ratio: float = 1.0, counts: Mapping[int, int] | None = None) -> list[dict]:
    """One row per (R, bin): the matched budget, the small model's accuracy there per rule, the large model's.

    `small[(rule, n)][bin]` and `large[bin]` are accuracies (bin 0 = all problems); rule
    "optimal" is the compute-optimal choice between the others, cross-validated per bin,
    and decides the winner against the large model.
    """
    rows = []
    for ratio in ratios:
        matched = matched_samples(small_params, large_params, ratio, token_ratio)
        n, cut = usable_budget(matched, largest)
        for b, large_acc in sorted(large.items()):
            accs = {rule: small.get((rule, n), {}).get(b, 0.0) for rule in ("weighted", "majority", "optimal")}
            best = accs["optimal"]
            count = (counts or {}).get(b, 0)
            lo, hi = wilson(large_acc, count)
            rows.append(dict(ratio=ratio, bin=b, matched_samples=matched, samples_used=n, lower_bound=cut,
                             problems=count, small_weighted=accs["weighted"], small_majority=accs["majority"],
                             small_optimal=accs["optimal"],
                             large_greedy=large_acc, large_lo=lo, large_hi=hi,
                             winner="test-time compute" if best > large_acc else
                             ("pretraining" if large_acc > best else "tie")))
    return rows
