"""Adaptive self-consistency: stop sampling a problem once its answers agree.

Majority voting spends the same N samples on every problem, but where the first few samples
already agree the rest rarely change the vote; adaptive consistency (Aggarwal et al. 2023)
samples one at a time and stops early, so an easy problem costs a few samples and a hard
one up to the cap. It needs no verifier, so it is the answer-only baseline for the question
this project asks (where does test-time compute pay off?) next to the verifiers'.

The stopping rule here: stop once the leading answer has `lead` more votes than the runner-up
(unparseable answers never vote), or at `cap` samples; answer the leader (a tie at the cap is
broken at random). The bank's samples are i.i.d., so the rule is replayed on `orders` random
orders of each problem's candidates: a problem's outcome is its accuracy and mean samples
over those orders. A paired comparison puts it against majority at the smallest power of two
N at or above its mean samples, so majority is never charged less.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ttscale.tasks.comparison import Comparison, paired
from ttscale.tasks.selection import ProblemCandidates, select, subset_masks


def random_orders(n: int, orders: int, rng: np.random.Generator) -> np.ndarray:
    """`orders` random permutations of n candidates: (orders, n)."""
    return rng.random((orders, n)).argsort(axis=1)


def replay(pc: ProblemCandidates, lead: int, cap: int, perm: np.ndarray, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """Samples used and whether the answer is right, drawing the candidates in each row's order of `perm`
    (orders, n): two (orders,) arrays. `rng` only breaks ties at the cap."""
    cap = min(cap, perm.shape[1])
    orders = perm.shape[0]
    codes = pc.codes[perm[:, :cap]]  # (orders, cap)
    k = max(int(pc.codes.max()) + 1, 1)
    votes = np.zeros((orders, cap, k))
    valid = codes >= 0
    votes[np.nonzero(valid) + (codes[valid],)] = 1.0
    counts = votes.cumsum(axis=1)  # (orders, cap, k): votes after each sample
    top2 = np.sort(counts, axis=2)[:, :, -2:] if k > 1 else np.concatenate([np.zeros_like(counts), counts], axis=2)
    margin = top2[:, :, -1] - top2[:, :, -2]
    stopped = margin >= lead
    stop = np.where(stopped.any(axis=1), stopped.argmax(axis=1), cap - 1)  # index of the last sample drawn
    final = counts[np.arange(orders), stop] + rng.random((orders, k)) * 1e-6  # random tie break
    answer = final.argmax(axis=1)
    right = np.zeros(k, dtype=bool)
    right[pc.codes[pc.correct & (pc.codes >= 0)]] = True
    has_vote = counts[np.arange(orders), stop].max(axis=1) > 0
    return stop + 1, right[answer] & has_vote


@dataclass(frozen=True)
class AdaptivePoint:
    """One stopping rule over a set of problems: what it spent and got, and how it compares with majority."""

    lead: int
    level: int  # 0: all
    mean_samples: float
    accuracy: float
    problems: int
    against: Comparison | None  # adaptive minus majority at `against.budget` samples (all levels only)


def adaptive_points(problems: Mapping[str, tuple[int, ProblemCandidates]], leads: Sequence[int], cap: int,
                    orders: int, seed: int = 0) -> list[AdaptivePoint]:
    """Each lead's mean samples and accuracy, overall and per level, and overall the paired comparison
    with majority at the smallest power of two N >= its mean samples (per problem: `orders` orders
    against `orders` N-subsets, redrawn inside each problem by the bootstrap)."""
    rng = np.random.default_rng(seed)
    # the same orders for every lead, so a larger lead never stops sooner on any of them
    perms = {pid: random_orders(len(pc.codes), orders, rng) for pid, (_, pc) in problems.items()}
    out: list[AdaptivePoint] = []
    for lead in leads:
        used: dict[str, np.ndarray] = {}
        right: dict[str, np.ndarray] = {}
        for pid, (_, pc) in problems.items():
            used[pid], right[pid] = replay(pc, lead, cap, perms[pid], rng)
        mean_all = float(np.mean([u.mean() for u in used.values()]))
        budget = min(1 << int(np.ceil(np.log2(max(mean_all, 1.0)))), cap)
        majority = {pid: select(pc, subset_masks(len(pc.codes), budget, orders, rng), "majority", rng=rng)
                    for pid, (_, pc) in problems.items()}
        # one outcome per problem (its accuracy over the orders or subsets): the order noise is averaged out
        against = paired({p: [v.mean()] for p, v in right.items()}, {p: [v.mean()] for p, v in majority.items()},
                         finding=0, claim="adaptive self-consistency vs majority", a_name=f"adaptive (lead {lead})",
                         b_name=f"majority@{budget}", budget=budget, seed=seed, decides=False)
        levels = sorted({lvl for lvl, _ in problems.values() if lvl})
        for level in [0, *levels]:
            ids = [p for p, (lvl, _) in problems.items() if level in (0, lvl)]
            out.append(AdaptivePoint(lead, level, float(np.mean([used[p].mean() for p in ids])),
                                     float(np.mean([right[p].mean() for p in ids])), len(ids),
                                     against if level == 0 else None))
    return out


def metrics_rows(points: Sequence[AdaptivePoint], run_id: str) -> list[dict]:
    """Rows of the warehouse `metrics` table (k = the lead)."""
    return [{"run_id": run_id, "name": name, "level": p.level, "k": p.lead, "value": value}
            for p in points for name, value in (("adaptive_sc/mean_samples", p.mean_samples),
                                                 ("adaptive_sc/accuracy", p.accuracy))]


def markdown(points: Sequence[AdaptivePoint], cap: int) -> list[str]:
    """Mean samples and accuracy by lead and level, and each lead's paired comparison with majority."""
    leads = sorted({p.lead for p in points})
    levels = sorted({p.level for p in points})
    at = {(p.lead, p.level): p for p in points}
    lines = [f"Adaptive self-consistency (no verifier: sample until the leading answer is `lead` votes ahead, at "
             f"most {cap}); mean samples; accuracy:", "",
             "| level | " + " | ".join(f"lead {lead}" for lead in leads) + " |", "|---|" + "---|" * len(leads)]
    for level in levels:
        lines.append(f"| {'all' if level == 0 else level} | " + " | ".join(
            f"{at[(lead, level)].mean_samples:.1f}; {at[(lead, level)].accuracy:.3f}" for lead in leads) + " |")
    lines.append("")
    for p in points:
        if p.against is not None:
            c = p.against
            lines.append(f"- lead {p.lead} ({p.mean_samples:.1f} samples on average) vs majority@{c.budget:g}: "
                         f"{c.effect:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}] ({c.problems} problems, paired)")
    return lines
