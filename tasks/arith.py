"""The embedded task: an iterated map on a 4-digit value, one step per paragraph.

Why this shape (DESIGN.md, "The embedded default"): a ~1M-parameter model learns in
minutes only steps that depend on the line just above, so every step restates the
rule it applies (`06: 4821#0357=4178`, the countdown says how many steps remain after
this one), every field has a fixed width, and the question ends with a "step zero" line
of the same layout (`07: init#0357=4821`), so what any step copies, the first one
included, is always the same distance back. (With the start value stated only in a
prose question, a calibration model learned the step-to-step copies and the digit
sums, 97% of result digits right, but not the first step's copy: pass@1 0.0.)
Two maps set the difficulty. `#` adds the key digit by digit, mod 10, without carries:
each result digit depends on two digits at fixed offsets, and the tiny model learns it
almost perfectly (a calibration run with only this map: pass@1 0.93, no problem below
0.6). `+` is ordinary addition mod 10000, whose carries are much harder for it; long
chains of `+` make the hard levels. Since the answer is any
of 10,000 values, guessing is hopeless (the report prints the guessing baseline).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator

from ttscale.configs.schema import LevelSpec, TaskConfig
from ttscale.tasks.problems import Problem, problem_id

SOURCE = "arith"
MODULUS = 10_000
STEP_DELIMITER = "\n\n"
_ANSWER = re.compile(r"ans=\s*(-?\d+)")

# Prompt and solution layout live here, next to the parser that reads them back.
QUESTION_TEMPLATE = "{rule}\n\n{steps:02d}: init{sym}{key:04d}={start:04d}"
STEP_TEMPLATE = "{remaining:02d}: {value:04d}{sym}{key:04d}={result:04d}"
# The answer sits in the same column as a step's value, so writing it is the same copy
# (10 characters back) that every step makes; with `answer: ` (8 wide) it was a copy of
# its own that one fresh-clone calibration run never learned (pass@1 0.002).
ANSWER_TEMPLATE = "ans={answer:04d}"


def digitwise_add(value: int, key: int) -> int:
    """Add digit by digit, mod 10, no carries: 4821 # 0357 = 4178."""
    return sum(((value // 10**i + key // 10**i) % 10) * 10**i for i in range(4))


# One row per operation: the rule stated in the prompt, its symbol, and the map itself.
OPS: dict[str, tuple[str, str, Callable[[int, int], int]]] = {
    "digitwise": ("x#k adds k to x digit by digit, mod 10", "#", digitwise_add),
    "add": ("x+k adds k to x, mod 10000", "+", lambda value, key: (value + key) % MODULUS),
}


def _draw(rng: random.Random, level: int, spec: LevelSpec) -> tuple[str, str, list[str]]:
    start = rng.randrange(MODULUS)
    key = rng.randint(spec.min_key, spec.max_key)
    steps = rng.randint(spec.min_steps, spec.max_steps)
    rule, sym, step = OPS[spec.op]
    question = QUESTION_TEMPLATE.format(rule=rule, sym=sym, start=start, key=key, steps=steps)
    value, lines = start, []
    for remaining in range(steps - 1, -1, -1):
        result = step(value, key)
        lines.append(STEP_TEMPLATE.format(remaining=remaining, value=value, sym=sym, key=key, result=result))
        value = result
    lines.append(ANSWER_TEMPLATE.format(answer=value))
    return question, f"{value:04d}", lines  # as the answer line writes it


def prompt(question: str) -> str:
    """What the base model is conditioned on; the solution follows after one blank line."""
    return question + STEP_DELIMITER


def solution(steps: list[str]) -> str:
    return STEP_DELIMITER.join(steps)


def _split_seed(task: TaskConfig, split: str) -> int:
    return task.seed * 1_000_003 + {"test": 1, "train": 2}[split]


def make_split(task: TaskConfig, split: str) -> list[Problem]:
    """Seeded problems of one split, spread evenly over levels; test questions never appear in train."""
    n = task.n_test if split == "test" else task.n_train
    rng = random.Random(_split_seed(task, split))
    held_out = {p.question for p in make_split(task, "test")} if split == "train" else set()
    problems: list[Problem] = []
    seen: set[str] = set()
    while len(problems) < n:
        level = len(problems) % len(task.levels) + 1
        question, answer, steps = _draw(rng, level, task.levels[level - 1])
        if question in seen or question in held_out:
            continue
        seen.add(question)
        problems.append(
            Problem(
                problem_id=problem_id(SOURCE, question),
                source=SOURCE,
                split=split,
                index=len(problems),
                level=level,
                question=question,
                answer=answer,
                meta={"reference_solution": solution(steps)},
            )
        )
    return problems


def training_stream(task: TaskConfig, seed: int) -> Iterator[tuple[str, str]]:
    """Endless (prompt, solution) pairs for training the base model, disjoint from both splits."""
    excluded = {p.question for p in make_split(task, "test")}
    rng = random.Random(seed * 7_919 + 3)
    while True:
        level = rng.randrange(len(task.levels)) + 1
        question, _, steps = _draw(rng, level, task.levels[level - 1])
        if question not in excluded:
            yield prompt(question), solution(steps)


def extract_answer(text: str) -> str | None:
    found = _ANSWER.findall(text)
    return found[-1] if found else None


def grade(text: str, reference: str) -> tuple[str | None, bool]:
    """Exact integer match on the last `ans=` line."""
    answer = extract_answer(text)
    return answer, answer is not None and int(answer) == int(reference)


def answer_space_size() -> int:
    return MODULUS


_INIT = re.compile(r"(\d{2}): init([#+])(\d{4})=(\d{4})\s*$")
_STEP = re.compile(r"(\d{2}): (\d{4})([#+])(\d{4})=(\d{4})$")
_ANSWER_LINE = re.compile(r"ans=(\d{4})$")
# Why a step is wrong, checked in this order (the first that applies): it does not parse as a step,
# it applies another rule or key than the question's, it does not start from the line above's result,
# its countdown is not one less than the line above's, its result is miscomputed, or (the answer line)
# it does not copy the last result or comes before the countdown reached zero.
STEP_ERRORS = ("format", "rule", "copy", "countdown", "arithmetic", "answer")


def step_truth(question: str, steps: list[str]) -> list[str | None]:
    """For each step, None when it is right given the step before it (as written, right or not), else
    the kind of error (STEP_ERRORS). Exact, and for diagnosis only: never a training label or a selection
    signal. Steps after the answer line are format errors."""
    head = _INIT.search(question)
    if head is None:
        raise ValueError(f"not an embedded-task question: {question[-60:]!r}")
    remaining, sym, key, value = int(head[1]), head[2], int(head[3]), int(head[4])
    step = next(fn for _, s, fn in OPS.values() if s == sym)
    out: list[str | None] = []
    answered = False
    for text in steps:
        text = text.strip()
        if answered:
            out.append("format")
            continue
        if (m := _ANSWER_LINE.match(text)) is not None:
            answered = True
            out.append(None if int(m[1]) == value and remaining == 0 else "answer")
            continue
        if (m := _STEP.match(text)) is None:
            out.append("format")
            continue
        countdown, start, symbol, k, result = int(m[1]), int(m[2]), m[3], int(m[4]), int(m[5])
        if symbol != sym or k != key:
            error = "rule"
        elif start != value:
            error = "copy"
        elif countdown != remaining - 1:
            error = "countdown"
        elif result != step(start, key):
            error = "arithmetic"
        else:
            error = None
        out.append(error)
        remaining, value = countdown, result  # the next step is checked against this one as written
    return out


def slipped(question: str, text: str, rng: random.Random) -> str | None:
    """A right derivation with exactly one wrong step: step k's result miscomputed, every step after it
    right from that wrong value (the answer line too). It is the wrong attempt a revision should learn
    to repair (keep what is right up to step k, redo step k, continue), built for a revision model whose
    own samples hold too few wrong attempts of that shape. The slip is the generator's kind: on `#` one
    result digit replaced, on `+` a carry dropped or added (plus or minus 10, 100 or 1000). None when
    `text` is not a right derivation of `question`."""
    head = _INIT.search(question)
    steps = [s.strip() for s in text.split(STEP_DELIMITER) if s.strip()]
    if head is None or not steps or any(step_truth(question, steps)) or _ANSWER_LINE.match(steps[-1]) is None:
        return None
    sym, key = head[2], int(head[3])
    step = next(fn for _, s, fn in OPS.values() if s == sym)
    parsed = [_STEP.match(s) for s in steps[:-1]]
    if not parsed:
        return None
    k = rng.randrange(len(parsed))
    value = int(parsed[k][2])
    result = step(value, key)
    if sym == "#":
        place = 10 ** rng.randrange(4)
        digit = result // place % 10
        wrong = result + (rng.choice([d for d in range(10) if d != digit]) - digit) * place
    else:
        wrong = (result + rng.choice([-1, 1]) * 10 ** rng.randint(1, 3)) % MODULUS
    out = steps[:k]
    for i, m in enumerate(parsed[k:]):
        value = int(m[2]) if i == 0 else value
        result = wrong if i == 0 else step(value, key)
        out.append(STEP_TEMPLATE.format(remaining=int(m[1]), value=value, sym=sym, key=key, result=result))
        value = result
    out.append(ANSWER_TEMPLATE.format(answer=value))
    return solution(out)
