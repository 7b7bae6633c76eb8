"""The workdir: where one deployment of ttscale keeps its state, and the services on it.

Everything a run produces lives under one folder (default `./.ttscale`): the DuckDB
warehouse, the MLflow sqlite store and its artifacts, trained models, plots. Services
are opened as context managers so a failed stage still closes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKDIR = ".ttscale"
MARKER = "ttscale_train.json"  # written into a trained model's folder: what shaped it, where it is registered
EXPERIMENT = "ttscale"


def quiet_services() -> None:
    """Defaults every entry point wants before Prefect or MLflow are imported."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Models named rather than given as a folder: each lives in the workdir's models/<name>.
WORKDIR_MODELS = frozenset({"base", "large", "smollm2"})


@dataclass(frozen=True)
class Workdir:
    root: Path

    @classmethod
    def at(cls, path: str | Path = DEFAULT_WORKDIR) -> "Workdir":
        root = Path(path).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @property
    def warehouse(self) -> Path:
        return self.root / "ttscale.duckdb"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def shards(self) -> Path:
        """Parquet chunk folders from workers that must not open the warehouse (warehouse/shards.py)."""
        return self.root / "shards"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def model_dir(self, name: str) -> Path:
        """'base' is the trained embedded model, 'large' the larger one of the FLOPs-matched stage, 'smollm2'
        the converted GGUF, anything else a path."""
        if name in WORKDIR_MODELS:
            return self.models / name
        return Path(name).expanduser().resolve()

    def require_model(self, name: str) -> Path:
        """The model's folder, or an error that says which command makes it. SmolLM2 ships as a GGUF
        file in a package: any stage that needs it converts it once (about 30 s), as `run` does."""
        path = self.model_dir(name)
        if name == "smollm2" and not (path / "model.safetensors").is_file():
            from ttscale.models.smollm import convert

            return convert(path)
        if not path.is_dir():
            hint = {"base": " (run `ttscale train-base` first)",
                    "large": " (run `ttscale train-large` with large_model set, as in preset flops-matched)"}
            raise FileNotFoundError(f"model not found: {path}{hint.get(name, '')}")
        return path


@contextlib.contextmanager
def mlflow_run(workdir: Workdir, run_name: str, resume_id: str | None = None, tags: dict[str, str] | None = None) -> Iterator[str]:
    """An MLflow run on the workdir's sqlite store; `resume_id` continues a killed run's record."""
    import mlflow

    mlflow.set_tracking_uri(workdir.mlflow_uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=workdir.artifacts.as_uri())
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_id=resume_id, run_name=None if resume_id else run_name, tags=tags) as run:
        yield run.info.run_id


def fingerprint(model_dir: Path) -> str:
    """Content hash of a model's weights: a retrained model gets a new sample bank."""
    digest = hashlib.sha1()
    files = sorted(model_dir.glob("*.safetensors"))  # weights load only from safetensors, never pickles
    if not files:
        raise FileNotFoundError(f"no weights (*.safetensors) in {model_dir}")
    for f in files:
        with f.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def read_record(folder: Path) -> dict | None:
    """What a training flow wrote next to a model it trained; None for models from elsewhere."""
    marker = folder / MARKER
    return json.loads(marker.read_text()) if marker.exists() else None


def trained_record(out: Path, key: str) -> dict | None:
    """The record of a model already trained into `out` with these settings, or None."""
    record = read_record(out)
    return record if record is not None and record.get("key") == key else None


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A `.partial` sibling to train into, renamed over `out` only when the block completes,
    so a killed run never leaves a half-written model where a finished one is expected."""
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    yield tmp
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def write_record(folder: Path, record: dict) -> None:
    (folder / MARKER).write_text(json.dumps(record))


def reviser_dir(wd: Workdir) -> Path:
    path = wd.models / "reviser"
    if not path.is_dir():
        raise FileNotFoundError(f"no revision model at {path}: run `ttscale train-reviser` first")
    return path
