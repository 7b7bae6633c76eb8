"""Exact step checks on the embedded task, and the verifier diagnosis built on them."""

from __future__ import annotations

import pytest

from ttscale.configs.schema import TaskConfig
from ttscale.tasks import arith
from ttscale.tasks.grading import split_steps
from ttscale.tasks.reports.verifier import diagnose

PROBLEMS = arith.make_split(TaskConfig(n_test=20), "test")


def test_reference_solutions_are_right_at_every_step():
    for p in PROBLEMS:
        assert arith.step_truth(p.question, split_steps(p.meta["reference_solution"])) == [None] * len(
            split_steps(p.meta["reference_solution"]))


def _edit(step: str, start: int, end: int, text: str) -> str:
    return step[:start] + text + step[end:]


@pytest.mark.parametrize("kind", ["arithmetic", "copy", "countdown", "rule", "format", "answer"])
def test_each_kind_of_error_is_named_where_it_happens(kind):
    p = next(p for p in PROBLEMS if len(split_steps(p.meta["reference_solution"])) >= 4)
    steps = split_steps(p.meta["reference_solution"])
    first = steps[0]  # "RR: VVVV#KKKK=XXXX"
    wrong_digit = lambda c: str((int(c) + 1) % 10)  # noqa: E731
    bad = {"arithmetic": _edit(first, 17, 18, wrong_digit(first[17])),
           "copy": _edit(first, 4, 5, wrong_digit(first[4])),
           "countdown": _edit(first, 0, 2, f"{(int(first[:2]) + 3) % 100:02d}"),
           "rule": _edit(first, 9, 10, wrong_digit(first[9])),
           "format": "the answer is probably 42"}
    if kind == "answer":
        truth = arith.step_truth(p.question, steps[:-1] + ["ans=" + wrong_digit(steps[-1][4]) + steps[-1][5:]])
        assert truth == [None] * (len(steps) - 1) + ["answer"]
        assert arith.step_truth(p.question, steps[:1] + [steps[-1]])[-1] == "answer"  # before the countdown ends
        return
    truth = arith.step_truth(p.question, [bad[kind]] + steps[1:])
    assert truth[0] == kind


def test_diagnosis_reads_within_problem_ranking_first_errors_and_what_the_top_pick_got_wrong():
    right = {"problem_id": "p", "level": 1, "correct": True, "scores": [0.9, 0.9, 0.9], "errors": [None] * 3}
    wrong = {"problem_id": "p", "level": 1, "correct": False, "scores": [0.9, 0.2, 0.1],
             "errors": [None, "arithmetic", None]}
    d = diagnose([right, wrong])
    assert d.within_auc == {0: 1.0, 1: 1.0} and d.first_error_auc[1] == 1.0
    assert d.argmax_errors == {} and d.wrong_errors == {"arithmetic": 1.0}
    fooled = {**wrong, "scores": [0.9, 0.95, 0.99], "errors": [None, "format", None]}  # a malformed one ranked first
    d = diagnose([right, fooled])
    assert d.within_auc[1] == 0.0 and d.argmax_errors == {"format": 1.0}
    rows = d.metrics_table("r").to_pylist()
    assert {"within_problem_auc", "first_error_auc", "argmax_first_error/format"} <= {r["name"] for r in rows}
