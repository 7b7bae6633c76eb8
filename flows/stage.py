"""What every stage flow does around its work: one MLflow run and one `runs` row per stage run.

A stage run is keyed by a hash of its inputs (`run_id`). Opening it resumes the MLflow
run a killed attempt left behind, records the config, and marks the warehouse row
`failed` if the work raises, `finished` if it completes, so `Warehouse.is_finished`
can tell a re-run that there is nothing left to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from prefect.runtime import flow_run

from configs.schema import PipelineConfig
from tasks.tracking import log_config
from ttscale.workdir import Workdir, mlflow_run
from warehouse.store import Warehouse


@contextlib.contextmanager
def stage_run(wh: Warehouse, wd: Workdir, stage: str, run_id: str, config: PipelineConfig,
              logged: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> Iterator[str]:
    """Yields the MLflow run id; the warehouse row is finished only if the block completes."""
    with mlflow_run(wd, stage, resume_id=wh.mlflow_run_id(run_id),
                    tags={"stage": stage, "preset": config.name, **(tags or {})}) as ml_id:
        wh.start_run(run_id, stage, config.name, config.model_dump(mode="json"), mlflow_run_id=ml_id,
                     prefect_flow_run_id=flow_run.get_id())
        log_config(ml_id, logged)
        try:
            yield ml_id
        except BaseException:
            wh.finish_run(run_id, "failed")
            raise
        wh.finish_run(run_id)
