"""Aggregation and selection rules on hand-made cases, and the resampled curves."""

from __future__ import annotations

import numpy as np
import pytest

from ttscale.tasks.selection import ProblemCandidates, aggregate, curves, select, subset_masks

ALL = np.ones((1, 5), dtype=bool)


def _pc() -> ProblemCandidates:
    # answers: "7" twice (wrong), "3" once (right, best single score), "5" (wrong), one unparseable
    return ProblemCandidates.build(
        ["7", "7", "3", "5", None], [False, False, True, False, False],
        {"last": [0.30, 0.35, 0.90, 0.20, 0.99], "min": [0.3, 0.3, 0.1, 0.2, 0.0]},
    )


def test_aggregations():
    steps = [0.9, 0.5, 0.8]
    assert aggregate(steps, "last") == 0.8
    assert aggregate(steps, "min") == 0.5
    assert aggregate(steps, "prod") == pytest.approx(0.36)
    assert aggregate(steps, "mean") == pytest.approx(2.2 / 3)
    assert aggregate([], "last") == 0.0


def test_rules_on_a_hand_made_problem():
    pc = _pc()
    assert select(pc, ALL, "oracle").tolist() == [True]
    assert select(pc, ALL, "majority").tolist() == [False]  # "7" has two votes
    # weighted: "7" sums 0.65 < "3" 0.90; the unparseable candidate's 0.99 never counts
    assert select(pc, ALL, "weighted", "last").tolist() == [True]
    # best-of-N takes the single best candidate, even an unparseable one (then it is wrong)
    assert select(pc, ALL, "best_of_n", "last").tolist() == [False]
    assert select(pc, ALL, "weighted", "min").tolist() == [False]  # under min, "7" sums 0.6 > 0.1
    # subsets: without the unparseable one, best-of-N picks "3"
    mask = np.array([[True, True, True, True, False], [True, True, False, False, False]])
    assert select(pc, mask, "best_of_n", "last").tolist() == [True, False]
    assert select(pc, mask, "oracle").tolist() == [True, False]


def test_only_unparseable_answers_select_nothing_correct():
    pc = ProblemCandidates.build([None, None], [False, False], {"last": [0.5, 0.6]})
    assert select(pc, np.ones((1, 2), bool), "majority").tolist() == [False]
    assert select(pc, np.ones((1, 2), bool), "weighted", "last").tolist() == [False]


def test_ties_are_broken_at_random_not_by_order():
    pc = ProblemCandidates.build(["1", "2"], [True, False], {"last": [0.5, 0.5]})
    picks = select(pc, np.ones((400, 2), bool), "majority", rng=np.random.default_rng(1))
    assert 0.35 < picks.mean() < 0.65


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="unknown selection rule"):
        select(_pc(), ALL, "vote")


def test_subset_masks():
    masks = subset_masks(8, 3, 50, np.random.default_rng(0))
    assert masks.shape == (50, 8) and (masks.sum(axis=1) == 3).all()
    assert subset_masks(4, 4, 3, np.random.default_rng(0)).all()


def test_curves_match_direct_selection_at_full_n_and_intervals_hold_the_estimate():
    rng = np.random.default_rng(3)
    problems = []
    for p in range(12):
        answers = [str(a) for a in rng.integers(0, 3, 8)]
        correct = [a == "0" for a in answers]
        problems.append((1 + p % 2, ProblemCandidates.build(answers, correct, {"last": list(rng.random(8))})))
    points = curves(problems, resamples=50, seed=0)
    full = {(p.rule, p.aggregation, p.level): p for p in points if p.n == 8}
    for rule, agg in [("oracle", "-"), ("weighted", "last"), ("best_of_n", "last")]:
        direct = np.mean([select(pc, np.ones((1, 8), bool), rule, None if agg == "-" else agg)[0]
                          for _, pc in problems])
        assert full[(rule, agg, 0)].accuracy == pytest.approx(direct)
    for p in points:
        assert p.lo - 1e-9 <= p.accuracy <= p.hi + 1e-9 or p.problems < 3
        assert p.problems == (12 if p.level == 0 else 6)
    oracle = sorted((p.n, p.accuracy) for p in points if p.rule == "oracle" and p.level == 0)
    assert all(a <= b + 1e-9 for (_, a), (_, b) in zip(oracle, oracle[1:]))  # pass@N never falls


def test_problems_without_a_level_count_once_under_all():
    """GSM8K and HumanEval give no level (0): their problems make one "all" row per (rule, N), not two."""
    rng = np.random.default_rng(5)
    problems = [(0 if p < 4 else 2, ProblemCandidates.build([str(a) for a in rng.integers(0, 2, 4)],
                                                            [bool(b) for b in rng.integers(0, 2, 4)],
                                                            {"last": list(rng.random(4))})) for p in range(6)]
    points = curves(problems, resamples=20, seed=0)
    keys = [(p.rule, p.aggregation, p.level, p.n) for p in points]
    assert len(keys) == len(set(keys))
    assert {p.level for p in points} == {0, 2}
    assert all(p.problems == (6 if p.level == 0 else 2) for p in points)


def test_within_problem_auc_counts_a_levelless_problem_once():
    from ttscale.tasks.reports.verifier import diagnose

    rows = []
    for pid, level, scores in [("a", 0, (0.9, 0.1)), ("b", 0, (0.8, 0.2)), ("c", 3, (0.1, 0.9))]:
        rows += [{"problem_id": pid, "level": level, "correct": ok, "scores": [s], "errors": None}
                 for ok, s in zip((True, False), scores)]
    found = diagnose(rows)
    assert set(found.within_auc) == {0, 3}
    assert found.within_auc[0] == pytest.approx(2 / 3)  # (1 + 1 + 0) / 3, not (1 + 1 + 1 + 1 + 0) / 5
    text = "\n".join(found.markdown())  # no exact step checks here: no empty first-error columns or tables
    assert "| all | 0.667 |" in text and "first-error" not in text and "First error" not in text


def test_a_task_with_step_truth_keeps_its_first_error_table_when_nothing_is_measurable():
    """Every wrong step is the first (a tiny model that slips at once): the first-error AUC has no right step
    to compare with, but the task has exact step checks, so the report says nan rather than hiding the columns."""
    from ttscale.tasks.reports.verifier import diagnose

    rows = [{"problem_id": "a", "level": 1, "correct": ok, "scores": [s], "errors": [None if ok else "carry"]}
            for ok, s in ((True, 0.9), (False, 0.1))]
    found = diagnose(rows)
    assert found.first_error_auc == {} and found.has_step_truth
    text = "\n".join(found.markdown())
    assert "| level | within-problem AUC | first-error AUC |" in text and "| 1 | 1.000 | nan |" in text
    assert "| first error | ranked first | all wrong |" in text
