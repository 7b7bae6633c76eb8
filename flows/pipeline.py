"""Flow `pipeline`: the whole job, one sub-flow per stage, each also deployable alone.

Stages read their inputs from the workdir (models, warehouse), so re-running the
pipeline after a crash or with a changed later stage redoes only what is missing.
"""

from __future__ import annotations

from prefect import flow

from configs.schema import PipelineConfig
from flows.sample_bank import sample_bank
from flows.train_base import train_base
from ttscale.workdir import DEFAULT_WORKDIR


@flow(name="pipeline", log_prints=True)
def pipeline(config: PipelineConfig = PipelineConfig(), workdir: str = DEFAULT_WORKDIR) -> dict[str, str]:
    """Train the embedded base model (if the config uses it), then build and report the sample bank."""
    out: dict[str, str] = {}
    if config.generator.model == "base":
        # 1. The embedded base model, trained from scratch and registered in MLflow.
        out["base_model"] = train_base(config, workdir)
    # 2. The sample bank: N graded candidates per test problem, pass@k curves.
    out["bank_id"] = sample_bank(config, workdir)
    return out
