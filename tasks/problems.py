"""Problems: the unit every stage works on, from the embedded task or a benchmark (tasks.benchmarks).

A problem's id is a hash of its source and text, so the same problem gets the same id
in every run and every table, which is what makes warehouse writes idempotent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ttscale.configs.schema import PipelineConfig, TaskConfig


class ProblemFileError(ValueError):
    """A problem file that cannot be loaded whole; names the file and the line."""


@dataclass(frozen=True)
class Problem:
    problem_id: str
    source: str  # "arith", a benchmark kind, or the user's file name (what grading dispatches on)
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


def load_jsonl(path: Path, split: str = "test", limit: int | None = None) -> list[Problem]:
    """A MATH-500-format JSONL file (the `jsonl` kind); any malformed line aborts the whole load."""
    from ttscale.tasks.benchmarks import load_split

    problems = load_split("jsonl", "test", user_path=Path(path), limit=limit)
    return [replace(p, split=split) for p in problems] if split != "test" else problems


def load_problems(task: TaskConfig) -> list[Problem]:
    """Both splits of the configured task: generated (arith) or read from a benchmark's files."""
    if task.kind == "arith":
        from ttscale.tasks import arith

        return arith.make_split(task, "train") + arith.make_split(task, "test")
    from ttscale.tasks.benchmarks import USER_FILE_KINDS, load_split

    if task.kind in USER_FILE_KINDS:  # the user's file: all of it is test, `limit` caps it
        return load_split(task.kind, "test", user_path=task.path, limit=task.limit, max_chars=task.max_problem_chars)
    test_cap = min(task.n_test, task.limit) if task.limit else task.n_test
    return (load_split(task.kind, "train", limit=task.n_train, max_chars=task.max_problem_chars) if task.n_train else []) \
        + load_split(task.kind, "test", limit=test_cap, max_chars=task.max_problem_chars)


def train_problems(config: PipelineConfig, count: int, skip: int = 0) -> list[Problem]:
    """`count` train-split problems after the first `skip` (the ORM skips the reviser's)."""
    train = [p for p in load_problems(config.task) if p.split == "train"]
    if len(train) < skip + count:
        raise ValueError(f"revisions need {skip + count} train-split problems ({skip} for the reviser's data, "
                         f"{count} more here), the task has {len(train)}: raise task.n_train or lower "
                         "revisions.data.problems / revisions.orm.problems")
    return train[skip : skip + count]
