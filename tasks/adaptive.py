"""Adaptive self-consistency: stop sampling a problem once its answers agree.

Majority voting spends the same N samples on every problem, but where the first few samples
already agree the rest rarely change the vote; adaptive consistency (Aggarwal et al. 2023)
samples one at a time and stops early, so an easy problem costs a few samples and a hard
one up to the cap. It needs no verifier, so it is the answer-only baseline for the question
this project asks (where does test-time compute pay off?) next to the verifiers'.

The stopping rule here: stop once the leading answer has `lead` more votes than the runner-up
(unparseable answers never vote), or at `cap` samples; answer the leader (a tie at the cap is
broken at random). Weighted (DeepConf-style, with a verifier), each vote counts its candidate's
score, so a sample the verifier doubts moves the vote little, and the leader must be `lead`
score units ahead. The bank's samples are i.i.d., so the rule is replayed on `orders` random
orders of each problem's candidates: a problem's outcome is its accuracy and mean samples over
those orders. A paired comparison puts it against the same vote at a fixed N (majority, or
best-of-N weighted), the smallest power of two at or above its mean samples, so the fixed rule
is never charged less.
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


def replay(pc: ProblemCandidates, lead: float, cap: int, perm: np.ndarray, rng: np.random.Generator,
           weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Samples used and whether the answer is right, drawing the candidates in each row's order of `perm`
    (orders, n): two (orders,) arrays. A vote counts 1, or its candidate's entry of `weights` (n,).
    `rng` only breaks ties at the cap."""
    cap = min(cap, perm.shape[1])
    orders = perm.shape[0]
    codes = pc.codes[perm[:, :cap]]  # (orders, cap)
    k = max(int(pc.codes.max()) + 1, 1)
    votes = np.zeros((orders, cap, k))
    valid = codes >= 0
    w = np.ones(len(pc.codes)) if weights is None else np.asarray(weights, dtype=float)
    votes[np.nonzero(valid) + (codes[valid],)] = w[perm[:, :cap]][valid]
    counts = votes.cumsum(axis=1)  # (orders, cap, k): votes after each sample
    top2 = np.sort(counts, axis=2)[:, :, -2:] if k > 1 else np.concatenate([np.zeros_like(counts), counts], axis=2)
    margin = top2[:, :, -1] - top2[:, :, -2]
    stopped = margin >= lead
    stop = np.where(stopped.any(axis=1), stopped.argmax(axis=1), cap - 1)  # index of the last sample drawn
    final = counts[np.arange(orders), stop]  # (orders, k)
    voted = np.zeros((orders, k), dtype=bool)  # answers that got a vote by the stop (a weight may be 0)
    drawn = np.nonzero(valid & (np.arange(cap)[None, :] <= stop[:, None]))
    voted[drawn[0], codes[drawn]] = True
    tied = voted & (final >= final.max(axis=1, keepdims=True))
    answer = (rng.random((orders, k)) * tied).argmax(axis=1)  # the leader; a tie broken at random
    right = np.zeros(k, dtype=bool)
    right[pc.codes[pc.correct & (pc.codes >= 0)]] = True
    return stop + 1, right[answer] & voted.any(axis=1)


@dataclass(frozen=True)
class AdaptivePoint:
    """One stopping rule over a set of problems: what it spent and got, and how it compares with majority."""

    rule: str  # "majority" (one vote each) or "weighted" (votes weighted by the verifier's scores)
    lead: float
    level: int  # 0: all
    mean_samples: float
    accuracy: float
    problems: int
    against: Comparison | None  # adaptive minus the fixed-N rule at `against.budget` samples (all levels only)


def adaptive_points(problems: Mapping[str, tuple[int, ProblemCandidates]], leads: Sequence[float], cap: int,
                    orders: int, seed: int = 0, aggregation: str | None = None) -> list[AdaptivePoint]:
    """Each lead's mean samples and accuracy, overall and per level, and overall the paired comparison
    with the same vote at a fixed N, the smallest power of two >= its mean samples (per problem: its
    accuracy over `orders` orders against that over `orders` N-subsets). With `aggregation`, votes are
    weighted by the candidates' scores under it and the fixed-N rule is best-of-N weighted."""
    rule = "majority" if aggregation is None else "weighted"
    rng = np.random.default_rng(seed)
    # the same orders for every lead, so a larger lead never stops sooner on any of them
    perms = {pid: random_orders(len(pc.codes), orders, rng) for pid, (_, pc) in problems.items()}
    out: list[AdaptivePoint] = []
    for lead in leads:
        used: dict[str, np.ndarray] = {}
        right: dict[str, np.ndarray] = {}
        for pid, (_, pc) in problems.items():
            weights = None if aggregation is None else pc.scores[aggregation]
            used[pid], right[pid] = replay(pc, lead, cap, perms[pid], rng, weights)
        mean_all = float(np.mean([u.mean() for u in used.values()]))
        budget = min(1 << int(np.ceil(np.log2(max(mean_all, 1.0)))), cap)
        fixed = {pid: select(pc, subset_masks(len(pc.codes), budget, orders, rng), rule, aggregation, rng)
                 for pid, (_, pc) in problems.items()}
        # one outcome per problem (its accuracy over the orders or subsets): the order noise is averaged out
        against = paired({p: [v.mean()] for p, v in right.items()}, {p: [v.mean()] for p, v in fixed.items()},
                         finding=0, claim=f"adaptive {rule} vs {rule} at a fixed N", a_name=f"adaptive (lead {lead:g})",
                         b_name=f"{rule}@{budget}", budget=budget, seed=seed, decides=False)
        levels = sorted({lvl for lvl, _ in problems.values() if lvl})
        for level in [0, *levels]:
            ids = [p for p, (lvl, _) in problems.items() if level in (0, lvl)]
            out.append(AdaptivePoint(rule, lead, level, float(np.mean([used[p].mean() for p in ids])),
                                     float(np.mean([right[p].mean() for p in ids])), len(ids),
                                     against if level == 0 else None))
    return out


def metrics_rows(points: Sequence[AdaptivePoint], run_id: str) -> list[dict]:
    """Rows of the warehouse `metrics` table (k = the lead)."""
    return [{"run_id": run_id, "name": f"{metric_prefix(p)}/{name}", "level": p.level, "k": int(p.lead),
             "value": value}
            for p in points for name, value in (("mean_samples", p.mean_samples), ("accuracy", p.accuracy))]


def mlflow_metrics(points: Sequence[AdaptivePoint]) -> list[tuple[str, float, int]]:
    """(name, value, step = the lead) for MLflow: the `metrics` rows' names, `/level_L` for a level."""
    return [(f"{metric_prefix(p)}_{name}" + (f"/level_{p.level}" if p.level else ""), value, int(p.lead))
            for p in points for name, value in (("mean_samples", p.mean_samples), ("accuracy", p.accuracy))]


def metric_prefix(point: AdaptivePoint) -> str:
    """adaptive_sc (majority) or adaptive_weighted: the names in `metrics` and MLflow."""
    return "adaptive_sc" if point.rule == "majority" else "adaptive_weighted"


def markdown(points: Sequence[AdaptivePoint], cap: int, scorer: str = "the verifier") -> list[str]:
    """Per rule: mean samples and accuracy by lead and level, and each lead's paired comparison with the
    same vote at a fixed N."""
    lines: list[str] = []
    for rule in sorted({p.rule for p in points}):
        mine = [p for p in points if p.rule == rule]
        leads = sorted({p.lead for p in mine})
        levels = sorted({p.level for p in mine})
        at = {(p.lead, p.level): p for p in mine}
        how = ("no verifier: sample until the leading answer is `lead` votes ahead" if rule == "majority" else
               f"votes weighted by {scorer}'s scores: sample until the leader is `lead` score units ahead")
        lines += [f"Adaptive {'self-consistency' if rule == 'majority' else 'weighted voting'} ({how}, at most "
                  f"{cap}); mean samples; accuracy:", "",
                  "| level | " + " | ".join(f"lead {lead:g}" for lead in leads) + " |", "|---|" + "---|" * len(leads)]
        for level in levels:
            lines.append(f"| {'all' if level == 0 else level} | " + " | ".join(
                f"{at[(lead, level)].mean_samples:.1f}; {at[(lead, level)].accuracy:.3f}" for lead in leads) + " |")
        lines.append("")
        for p in mine:
            if p.against is not None:
                c = p.against
                lines.append(f"- lead {p.lead:g} ({p.mean_samples:.1f} samples on average) vs {c.b}: "
                             f"{c.effect:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}] ({c.problems} problems, paired)")
        lines.append("")
    return lines
