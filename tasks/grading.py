"""Grading: which answer a candidate gives, and whether it is right, per benchmark.

The embedded task grades exactly (tasks.arith). Math benchmarks (MATH, MATH-500,
Omni-MATH, your JSONL) extract `\\boxed{}` first, then fall back to the last number, and
compare with math-verify, which knows that `\\frac{1}{2}` and `0.5` are the same answer.
GSM8K compares numbers; AIME integers 0-999. HumanEval runs the candidate against the
dataset's tests in a sandbox (tasks.sandbox), never in this process; its "answer" is a hash
of the program's syntax tree, so majority voting counts identical programs together.
An unparseable candidate is graded wrong with answer NULL: it is data, not an error.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation

from math_verify import parse, verify

from ttscale.tasks import arith
from ttscale.tasks.benchmarks import for_source, last_boxed
from ttscale.tasks.problems import Problem
from ttscale.tasks.sandbox import Limits, run_program

logging.getLogger("math_verify").setLevel(logging.ERROR)

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")

__all__ = ["grade", "grade_all", "last_boxed", "extract_math_answer", "math_equal", "program_for", "split_steps"]


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


def _decimal(text: str) -> Decimal | None:
    cleaned = text.replace(",", "").replace("$", "").replace("\\%", "").replace("%", "").strip().rstrip(".")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def _number_answer(text: str) -> str | None:
    """GSM8K's own convention (`#### 18`) first, then \\boxed{}, then the last number."""
    if "####" in text:
        numbers = _NUMBER.findall(text.rsplit("####", 1)[1])
        if numbers:
            return numbers[0].replace(",", "")
    return extract_math_answer(text)


def _grade_number(problem: Problem, text: str) -> tuple[str | None, bool]:
    answer = _number_answer(text)
    got, want = (_decimal(answer) if answer else None), _decimal(problem.answer)
    return answer, got is not None and want is not None and got == want


def _grade_integer(problem: Problem, text: str) -> tuple[str | None, bool]:
    answer = extract_math_answer(text)
    got = _decimal(answer) if answer else None
    if got is None or got != got.to_integral_value() or not 0 <= got <= 999:
        return answer, False  # AIME answers are integers 0-999; anything else is wrong
    return str(int(got)), int(got) == int(problem.answer)


def _grade_math(problem: Problem, text: str) -> tuple[str | None, bool]:
    answer = extract_math_answer(text)
    return answer, answer is not None and math_equal(answer, problem.answer)


_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def program_for(problem: Problem, text: str) -> str:
    """The candidate as a program: a fenced block if there is one; a whole function (the model
    rewrote the signature) gets the prompt's imports, a body is appended to the prompt."""
    fenced = _FENCE.search(text)
    code = fenced.group(1) if fenced else text
    entry = problem.meta["entry_point"]
    if re.search(rf"^\s*def {re.escape(entry)}\s*\(", code, re.MULTILINE):
        imports = [line for line in problem.question.splitlines() if re.match(r"\s*(import|from)\s", line)]
        return "\n".join(imports) + "\n" + code
    return problem.question + code


def _grade_code(problem: Problem, text: str, limits: Limits = Limits()) -> tuple[str | None, bool]:
    program = program_for(problem, text)
    try:
        answer = hashlib.sha1(ast.dump(ast.parse(program)).encode()).hexdigest()[:12]
    except (SyntaxError, ValueError):
        return None, False  # not Python: nothing to run
    entry = problem.meta["entry_point"]
    outcome = run_program(f"{program}\n\n{problem.meta['test']}\n\ncheck({entry})\n", limits)
    return answer, outcome.passed


_GRADERS = {"math": _grade_math, "number": _grade_number, "integer": _grade_integer, "code": _grade_code}


def grade(problem: Problem, text: str) -> tuple[str | None, bool]:
    """(the candidate's answer or None, whether it is right)."""
    if problem.source == arith.SOURCE:
        return arith.grade(text, problem.answer)
    return _GRADERS[for_source(problem.source).grader](problem, text)


def grade_all(pairs: Sequence[tuple[Problem, str]], workers: int = 4) -> list[tuple[str | None, bool]]:
    """`grade` over many candidates; code runs `workers` sandboxes at a time (they wait on processes)."""
    if not any(for_source(p.source).grader == "code" for p, _ in pairs if p.source != arith.SOURCE):
        return [grade(p, t) for p, t in pairs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pair: grade(*pair), pairs))


def split_steps(text: str, delimiter: str = arith.STEP_DELIMITER) -> list[str]:
    """Steps are paragraphs: split on blank lines, drop empty pieces (code: at blank lines too)."""
    return [s.strip() for s in text.split(delimiter) if s.strip()]
