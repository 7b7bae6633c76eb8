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

from ttscale.tasks.metrics import wilson
from ttscale.tasks.selection import ProblemCandidates, select, subset_masks


def pretrain_flops(params: float, tokens: float) -> float:
    return 6.0 * params * tokens


def inference_flops(params: float, tokens: float) -> float:
    return 2.0 * params * tokens


def matched_samples(small_params: float, large_params: float, ratio: float, token_ratio: float = 1.0,
                    verifier_params: float = 0.0, verifier_flops: float = 0.0, pretrain_tokens: float = 1.0) -> float:
    """Samples per problem the small model may draw at the large model's total FLOPs (same pretraining data);
    token_ratio = tokens of a large-model answer / tokens of a small-model sample.

    Charging a verifier adds its one-time cost (labeling rollouts and training, `verifier_flops`, against
    `pretrain_tokens` of pretraining) to the small side, and its parameters to the cost of every sample it
    scores: 6 P_s D + F_v + 2 (P_s + P_v) N t_s Q = 6 P_l D + 2 P_l t_l Q with R = Q t_l / D.
    """
    k = large_params / small_params
    extra = verifier_flops / (2.0 * small_params * pretrain_tokens)
    per_sample = 1.0 + verifier_params / small_params
    return max(0.0, (3.0 * (k - 1.0) + k * ratio - extra) / (per_sample * ratio)) * token_ratio


def per_problem_accuracy(pc: ProblemCandidates, n: float, rule: str, resamples: int, rng: np.random.Generator) -> float:
    """Expected accuracy of `rule` over random subsets of one problem's stored candidates at a budget of n
    samples on average: a fractional n mixes the two whole sizes around it (so N = 15.8 is spent exactly,
    not floored); n beyond the stored candidates is cut to them."""
    n = min(float(n), float(len(pc.codes)))
    if n <= 0:
        return 0.0
    low = int(np.floor(n))
    share = n - low

    def at(size: int) -> float:
        if size == 0:
            return 0.0
        masks = subset_masks(len(pc.codes), size, resamples if size < len(pc.codes) else 1, rng)
        return float(select(pc, masks, rule, "last", rng).mean())

    return (1 - share) * at(low) + (share * at(low + 1) if share > 1e-9 else 0.0)


def split_bank(pc: ProblemCandidates, bin_samples: int) -> tuple[float, ProblemCandidates]:
    """(pass@1 over the first `bin_samples` candidates, the rest as a bank): bins and evaluation then
    read disjoint samples, so a problem's bin cannot flatter the accuracy it is scored with."""
    rest = slice(bin_samples, None)
    return float(pc.correct[:bin_samples].mean()), ProblemCandidates(
        pc.codes[rest], pc.correct[rest], {k: v[rest] for k, v in pc.scores.items()})


def members(problems: Sequence[str], bins: Mapping[str, int]) -> dict[int, list[str]]:
    """Problems per bin, and all of them as bin 0."""
    out: dict[int, list[str]] = {0: []}
    for p in problems:
        if p in bins:
            out.setdefault(bins[p], []).append(p)
            out[0].append(p)
    return {b: v for b, v in sorted(out.items()) if v}


def summary_row(ratio: float, b: int, matched: float, available: int, small: Mapping[str, Mapping[str, float]],
                large: Mapping[str, float], problems: Sequence[str], verdict: str) -> dict:
    """One `flops_exchange` row: (R, bin) means of the per-problem outcomes, and who wins by the paired
    interval ("undecided" when it holds zero: a 1.000 vs 1.000 tie is no loss)."""
    mean = {rule: float(np.mean([v[p] for p in problems])) for rule, v in small.items()}
    large_acc = float(np.mean([large[p] for p in problems]))
    lo, hi = wilson(large_acc, len(problems))
    return dict(ratio=ratio, bin=b, matched_samples=matched, samples_used=min(matched, float(available)),
                lower_bound=matched > available, problems=len(problems), small_weighted=mean["weighted"],
                small_majority=mean["majority"], small_optimal=mean["optimal"], large_greedy=large_acc,
                large_lo=lo, large_hi=hi,
                winner={"reproduced": "test-time compute", "contradicted": "pretraining"}.get(verdict, "undecided"))
