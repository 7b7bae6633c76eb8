import pytest

from ttscale.tasks.grading import extract_math_answer, grade, last_boxed, math_equal
from ttscale.tasks.problems import Problem


def _problem(answer: str) -> Problem:
    return Problem("id", "math.jsonl", "test", 0, 1, "q", answer)


def test_boxed_with_nested_braces_wins_over_later_numbers():
    text = "so \\boxed{\\frac{1}{2}} and then 7"
    assert last_boxed(text) == "\\frac{1}{2}"
    assert extract_math_answer(text) == "\\frac{1}{2}"


def test_last_number_fallback():
    assert extract_math_answer("we get 12, then 1,234.5 total") == "1234.5"
    assert extract_math_answer("no answer here") is None


@pytest.mark.parametrize("pred, ref, ok", [
    ("0.5", "\\frac{1}{2}", True), ("\\frac{2}{4}", "\\frac12", True), ("3", "3", True),
    ("4", "3", False), ("x^2+2x+1", "(x+1)^2", True), ("\\sqrt{4}", "2", True),
])
def test_math_verify_equivalence(pred: str, ref: str, ok: bool):
    assert math_equal(pred, ref) is ok


def test_grade_math_problem_end_to_end():
    assert grade(_problem("\\frac{1}{2}"), "Step 1\n\nSo \\boxed{0.5}") == ("0.5", True)
    assert grade(_problem("5"), "I am not sure.") == (None, False)
