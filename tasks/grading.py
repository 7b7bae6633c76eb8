"""Grading: which answer a candidate gives, and whether it is right.

The embedded task grades exactly (tasks.arith). Math problems extract `\\boxed{}` first,
then fall back to the last number, and compare with math-verify, which knows that
`\\frac{1}{2}` and `0.5` are the same answer. An unparseable candidate is graded wrong
with answer NULL: it is data, not an error.
"""

from __future__ import annotations

import logging
import re

from math_verify import parse, verify

from tasks import arith
from tasks.problems import Problem

logging.getLogger("math_verify").setLevel(logging.ERROR)

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces balanced."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j].strip()
    return None


def extract_math_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    if boxed:
        return boxed
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def math_equal(answer: str, reference: str) -> bool:
    # Timeouts use SIGALRM, which only works in the main thread; Prefect runs tasks in
    # worker threads, so they are off (extracted answers are short).
    try:
        gold = parse(f"${reference}$", parsing_timeout=None)  # type: ignore[arg-type]
        pred = parse(f"${answer}$", parsing_timeout=None)  # type: ignore[arg-type]
        if gold and pred and verify(gold, pred, timeout_seconds=None):
            return True
    except Exception:  # math-verify raises on exotic LaTeX; fall back to string identity
        pass
    return answer.replace(" ", "") == reference.replace(" ", "")


def grade(problem: Problem, text: str) -> tuple[str | None, bool]:
    if problem.source == arith.SOURCE:
        return arith.grade(text, problem.answer)
    answer = extract_math_answer(text)
    return answer, answer is not None and math_equal(answer, problem.answer)


def split_steps(text: str, delimiter: str = arith.STEP_DELIMITER) -> list[str]:
    """Steps are paragraphs: split on blank lines, drop empty pieces."""
    return [s.strip() for s in text.split(delimiter) if s.strip()]
