"""Flow `load-shards`: the one writer ingests what workers on other machines wrote as Parquet.

The story: find every complete chunk folder under `<workdir>/shards/<stage>/<group>/`
(sample-bank, label-steps and search workers write them) not loaded yet and insert each
in one transaction, tables in `warehouse.shards.LOAD_ORDER`, recording it in
`loaded_shards`. Afterwards the same stage in warehouse mode finds its work done and
writes its report.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.flows.stage import user_errors
from ttscale.workdir import DEFAULT_WORKDIR, Workdir
from ttscale.warehouse.shards import load_shards as ingest
from ttscale.warehouse.store import Warehouse

STAGE = "load-shards"


@flow(name=STAGE, log_prints=True)
@user_errors
def load_shards(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> dict[str, int]:
    """Ingest every worker shard not yet in the warehouse; returns rows added per table."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    added: dict[str, int] = {}
    with Warehouse(wd.warehouse) as wh:
        for group in sorted(p for stage in wd.shards.glob("*") for p in stage.glob("*") if p.is_dir()):
            for table, rows in ingest(wh, group).items():
                added[table] = added.get(table, 0) + rows
    logger.info("loaded shards from %s: %s", wd.shards, added or "nothing new")
    return added
