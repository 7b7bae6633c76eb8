"""Adaptive self-consistency replayed on stored candidates (tasks/adaptive.py)."""

from __future__ import annotations

import numpy as np

from ttscale.tasks.adaptive import adaptive_points, random_orders, replay
from ttscale.tasks.selection import ProblemCandidates


def _one_at_a_time(answers: list[str | None], lead: float, cap: int, weights: list[float]) -> tuple[int, set[str]]:
    """The rule as a person would run it: draw, count (each vote its weight), stop when the leader is `lead`
    ahead; the leaders at the stop."""
    votes: dict[str, float] = {}
    for used, (answer, weight) in enumerate(zip(answers[:cap], weights), start=1):
        if answer is not None:
            votes[answer] = votes.get(answer, 0) + weight
        ranked = sorted(votes.values(), reverse=True) + [0, 0]
        if ranked[0] - ranked[1] >= lead:
            break
    top = max(votes.values(), default=0)
    return used, {a for a, v in votes.items() if v == top}


def test_replay_matches_drawing_one_sample_at_a_time():
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(4, 17))
        answers = [None if rng.random() < 0.15 else str(int(rng.integers(0, 1 + trial % 4))) for _ in range(n)]
        truth = str(int(rng.integers(0, 2)))
        pc = ProblemCandidates.build(answers, [a == truth for a in answers])
        lead, cap = int(rng.integers(1, 5)), int(rng.integers(2, n + 3))
        # weights in quarters, so the sums are exact; half the trials unweighted (one vote each)
        weights = rng.integers(0, 5, size=n) / 4 if trial % 2 else None
        perm = random_orders(n, 7, rng)
        used, right = replay(pc, lead, cap, perm, rng, weights)
        for row, u, r in zip(perm, used, right):
            w = [1.0] * n if weights is None else [float(weights[i]) for i in row]
            want_used, leaders = _one_at_a_time([answers[i] for i in row], lead, cap, w)
            assert u == want_used, (answers, row, lead, cap)
            if len(leaders) == 1:
                assert r == (leaders == {truth})
            else:  # a tie (or no vote at all): right only if the truth is among the tied
                assert not r or truth in leaders


def test_agreeing_answers_stop_early_and_disagreeing_ones_run_to_the_cap():
    easy = ProblemCandidates.build(["7"] * 32, [True] * 32)
    hard = ProblemCandidates.build([str(i) for i in range(32)], [i == 0 for i in range(32)])
    points = adaptive_points({"easy": (1, easy), "hard": (2, hard)}, leads=[3], cap=32, orders=50)
    by_level = {p.level: p for p in points}
    assert by_level[1].mean_samples == 3 and by_level[1].accuracy == 1
    assert by_level[2].mean_samples == 32 and by_level[2].accuracy < 0.2  # one vote each: a random pick of 32
    overall = by_level[0]
    assert overall.mean_samples == 17.5 and overall.against is not None and overall.against.budget == 32
