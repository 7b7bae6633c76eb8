"""MLflow bookkeeping shared by every stage: flat params, batched metrics, the model registry.

`log_metric` costs ~25 ms a call on the sqlite store, so metrics always go in one
`log_batch`. Models are registered from logged artifact folders, so the registry
points at the exact safetensors a stage produced.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


def log_config(run_id: str, config: Mapping[str, Any]) -> None:
    client = MlflowClient()
    existing = client.get_run(run_id).data.params
    params = [Param(k, v) for k, v in flatten(config).items() if k not in existing]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    MlflowClient().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_metrics(run_id: str, values: Iterable[tuple[str, float, int]]) -> None:
    """(name, value, step) triples in batches of 1000 (MLflow's limit per call)."""
    now = int(time.time() * 1000)
    metrics = [Metric(name, float(value), now, int(step)) for name, value, step in values]
    client = MlflowClient()
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


def register_model(run_id: str, local_dir: Path, artifact_path: str, name: str) -> int:
    """Log a model folder as run artifacts and register it; returns the new version number."""
    client = MlflowClient()
    client.log_artifacts(run_id, str(local_dir), artifact_path)
    source = f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="ttscale model trained by a flow; safetensors folder")
    version = client.create_model_version(name, source=source, run_id=run_id)
    return int(version.version)


def registered_model_path(uri: str) -> Path:
    """A local folder holding `models:/NAME/VERSION` or `models:/NAME/latest` (MLflow's registry)."""
    try:
        _, rest = uri.split("models:/", 1)
        name, version = rest.strip("/").split("/")
        client = MlflowClient()
        if version == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise ValueError(f"no versions of {name}")
            version = str(max(int(v.version) for v in versions))
        source = client.get_model_version(name, version).source
    except (ValueError, mlflow.exceptions.MlflowException) as err:
        raise ValueError(f"cannot resolve {uri!r} in the MLflow registry (expected models:/NAME/VERSION): {err}") from err
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source))


def publish_report(reports_dir: Path, stem: str, markdown: str, plot: Path | None, artifact_key: str,
                   description: str) -> None:
    """One report to every place a user looks: the workdir's reports folder, the active MLflow
    run's artifacts, and a Prefect markdown artifact on the flow run."""
    from prefect.artifacts import create_markdown_artifact

    (reports_dir / f"{stem}.md").write_text(markdown)
    if plot is not None:
        mlflow.log_artifact(str(plot), "report")
    mlflow.log_text(markdown, f"report/{stem}.md")
    create_markdown_artifact(markdown + (f"\n![plot]({Path(plot).as_uri()})\n" if plot else ""), key=artifact_key,
                             description=description)
