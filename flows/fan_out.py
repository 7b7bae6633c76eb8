"""Flow `fan-out`: one generator-heavy stage split over shard workers, then loaded by the one writer.

The story: submit one `run_shard` task per shard; each runs the stage in worker mode
(`workers.output: shards`, its own `shard_index`) wherever the task runner places it:
on the nodes of a Ray cluster with `workers.task_runner: ray` (prefect-ray; each shard
can ask for GPUs), on threads of this machine otherwise. Workers write Parquet chunk
folders, never the warehouse. Then this process, the one warehouse writer, loads the
shards and runs the stage once more in warehouse mode, which finds the work done and
writes the report.

With `workers.result_storage` (a folder on a shared mount, or a Prefect storage block
such as `s3-bucket/ttscale-results`) each shard's result is persisted there under a key
of the stage, config and shard, so a re-run on any machine skips the shards that
finished, without even loading a model.
"""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig, WorkerConfig
from ttscale.flows.label_steps import label_steps
from ttscale.flows.load_shards import load_shards
from ttscale.flows.sample_bank import sample_bank
from ttscale.flows.search import search
from ttscale.flows.stage import user_errors
from ttscale.tasks.sampling import stable_hash
from ttscale.workdir import DEFAULT_WORKDIR

SHARDED_STAGES = {"sample-bank": sample_bank, "label-steps": label_steps, "search": search}
Stage = Literal["sample-bank", "label-steps", "search"]


def shard_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """A shard's result is reusable when the stage, its whole config (shard index included) and workdir match."""
    return stable_hash("fan-out", parameters["stage"], parameters["config"].model_dump(mode="json"),
                       parameters["workdir"])


@task
def run_shard(stage: Stage, config: PipelineConfig, workdir: str) -> str:
    """One worker's share of the stage, written as Parquet shards (runs on a Ray node or a thread).

    The stage's flow is imported here, on the worker, rather than shipped: a flow pickled
    by value loses the module globals its type hints name, and Prefect cannot validate it.
    """
    stage_flow = getattr(importlib.import_module(SHARDED_STAGES[stage].__module__), SHARDED_STAGES[stage].fn.__name__)
    return stage_flow(config=config, workdir=workdir)


def task_runner(workers: WorkerConfig):  # -> a Prefect task runner
    if workers.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers.shard_count)
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as err:
        raise ImportError("workers.task_runner: ray needs prefect-ray; install it with "
                          "`pip install -e '.[ray]'` (or set workers.task_runner: threads)") from err
    init: dict[str, Any] = {} if workers.ray_address else {"include_dashboard": False}
    return RayTaskRunner(address=workers.ray_address, init_kwargs=init)


def shard_resources(workers: WorkerConfig) -> contextlib.AbstractContextManager:
    """What each shard task asks Ray for (GPUs), so Ray places it on a node that has them."""
    if workers.task_runner == "ray" and workers.gpus_per_shard:
        from prefect_ray.context import remote_options

        return remote_options(num_gpus=workers.gpus_per_shard)
    return contextlib.nullcontext()


def result_storage(spec: str) -> Path | str:
    """A path (absolute, ./ or ~/) is a local or mounted folder; anything else names a Prefect storage block."""
    return Path(spec).expanduser().resolve() if spec[:1] in "/.~" else spec


@flow(name="fan-out", log_prints=True)
@user_errors
def fan_out(stage: Stage = "sample-bank", preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
            workdir: str = DEFAULT_WORKDIR) -> dict[str, int]:
    """Run `stage` as `workers.shard_count` shard workers, load their shards, and write the report."""
    config = preset.resolve(config)
    logger = get_run_logger()
    workers = config.workers
    if workers.result_storage:
        shard = run_shard.with_options(persist_result=True, result_storage=result_storage(workers.result_storage),
                                       cache_key_fn=shard_cache_key)
    else:
        shard = run_shard.with_options(cache_policy=NO_CACHE)
    configs = [config.model_copy(update={"workers": workers.model_copy(update={"output": "shards", "shard_index": i})})
               for i in range(workers.shard_count)]
    logger.info("%s: %d shard workers on %s", stage, workers.shard_count,
                workers.ray_address or ("a local Ray instance" if workers.task_runner == "ray" else "threads"))

    @flow(name=f"fan-out-{stage}", task_runner=task_runner(workers))
    def fan() -> list[str]:
        with shard_resources(workers):
            futures = [shard.submit(stage, c, workdir) for c in configs]
        return [f.result() for f in futures]

    fan()
    added = load_shards(config=config, workdir=workdir)  # this process is the one warehouse writer
    local = config.model_copy(update={"workers": WorkerConfig()})
    SHARDED_STAGES[stage](config=local, workdir=workdir)  # finds the work done; writes the report
    return added
