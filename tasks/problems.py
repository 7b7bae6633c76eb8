"""Problems: the unit every stage works on, from the embedded task or a local JSONL file.

A problem's id is a hash of its source and text, so the same problem gets the same id
in every run and every table, which is what makes warehouse writes idempotent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from configs.schema import TaskConfig


class ProblemFileError(ValueError):
    """A problem file that cannot be loaded whole; names the file and the line."""


@dataclass(frozen=True)
class Problem:
    problem_id: str
    source: str  # "arith" or the JSONL file name
    split: str  # "train" | "test"
    index: int
    level: int
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        row["meta"] = json.dumps(self.meta, sort_keys=True)
        return row


def problem_id(source: str, question: str) -> str:
    return hashlib.sha1(f"{source}\x00{question}".encode()).hexdigest()[:16]


_REQUIRED = {"problem": str, "answer": (str, int, float)}


def load_jsonl(path: Path, split: str = "test", limit: int | None = None) -> list[Problem]:
    """Load MATH-500-format JSONL; any malformed line aborts the whole load (nothing half-loaded)."""
    path = Path(path)
    if not path.is_file():
        raise ProblemFileError(f"{path}: no such problem file")
    problems: list[Problem] = []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = raw[: err.start].count(b"\n") + 1
        raise ProblemFileError(f"{path}:{lineno}: not UTF-8 (byte {raw[err.start]:#04x} at offset {err.start}); "
                               "re-encode the file as UTF-8") from err
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ProblemFileError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise ProblemFileError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        for key, kind in _REQUIRED.items():
            if key not in record:
                raise ProblemFileError(f"{path}:{lineno}: missing required field '{key}'")
            if not isinstance(record[key], kind) or str(record[key]).strip() == "":
                raise ProblemFileError(f"{path}:{lineno}: field '{key}' must be a non-empty string")
        level = record.get("level", 0)
        try:
            level = int(level)
        except (TypeError, ValueError) as err:
            raise ProblemFileError(f"{path}:{lineno}: field 'level' must be an integer, got {level!r}") from err
        meta = {k: record[k] for k in ("unique_id", "subject", "solution") if k in record}
        problems.append(
            Problem(
                problem_id=problem_id(path.name, record["problem"]),
                source=path.name,
                split=split,
                index=len(problems),
                level=level,
                question=record["problem"],
                answer=str(record["answer"]),
                meta=meta,
            )
        )
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ProblemFileError(f"{path}: no problems in file")
    return problems


def load_problems(task: TaskConfig) -> list[Problem]:
    """Both splits of the configured task (JSONL files are all test)."""
    if task.kind == "jsonl":
        assert task.path is not None
        return load_jsonl(task.path, limit=task.limit)
    from tasks import arith

    return arith.make_split(task, "train") + arith.make_split(task, "test")
