"""What every stage flow does around its work: one MLflow run and one `runs` row per stage run
(or, on a worker of another machine, Parquet shards instead of the warehouse), the
verifier-fitting task the PRM and ORM stages share, and `user_errors`, which ends a deployment
run on the user's own error with that one line instead of a traceback.

A stage run is keyed by a hash of its inputs (`run_id`). Opening it resumes the MLflow
run a killed attempt left behind, records the config, and marks the warehouse row
`failed` if the work raises, `finished` if it completes, so `Warehouse.is_finished`
can tell a re-run that there is nothing left to do.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment, flow_run
from prefect.states import Failed, State
from tqdm.auto import tqdm

from ttscale.configs import ConfigError
from ttscale.configs.schema import PipelineConfig, PRMConfig
from ttscale.models.generator import Generator, open_generator
from ttscale.models.prm_train import LabeledSolution, PRMTrainResult, train_prm as fit_prm
from ttscale.preflight import PreflightError
from ttscale.tasks.problems import Problem, ProblemFileError
from ttscale.tasks.sampling import problem_chunks, problems_table
from ttscale.tasks.tracking import log_config
from ttscale.workdir import Workdir, mlflow_run
from ttscale.warehouse.shards import pending_chunks, write_chunk
from ttscale.warehouse.store import Warehouse


USER_ERRORS = (ConfigError, PreflightError, ProblemFileError)
P = ParamSpec("P")
R = TypeVar("R")


def user_errors(body: Callable[P, R]) -> Callable[P, R | State]:
    """A run started from a deployment (the UI's Custom run, a schedule, `prefect deployment run`)
    that meets the user's own error (a preset that is not there, a bad value, a bad problem file)
    ends Failed with that one line as its state message, instead of under a hundred lines of
    traceback. Called from Python (the CLI, a parent flow, a test), the error is raised as it is,
    for the caller to print or catch."""

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> R | State:
        try:
            return body(*args, **kwargs)
        except USER_ERRORS as err:
            if deployment.id is None or flow_run.parent_flow_run_id is not None:
                raise  # a subflow raises on, so the deployment run's own flow ends it in one line
            get_run_logger().error(str(err))
            return Failed(message=str(err))

    # Prefect would resolve the body's string annotations in this module: hand it resolved ones.
    run.__signature__ = inspect.signature(body, eval_str=True)  # type: ignore[attr-defined]
    return run


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


def problems_to_shards(stage: str, group: str, wd: Workdir, config: PipelineConfig, model_dir: Path,
                       problems: list[Problem], size: int,
                       produce: Callable[[Generator, list[Problem]], Mapping[str, pa.Table]]) -> None:
    """A worker's side of a per-problem stage: its share of the problems, chunk by chunk, as Parquet.

    Chunks already written (by an earlier, perhaps killed, run of this worker) are skipped;
    each new one is `produce(generator, chunk)`'s tables plus the chunk's problems, written
    atomically under `<workdir>/shards/<stage>/<group>/`. The warehouse is never opened.
    """
    workers = config.workers
    root = wd.shards / stage / group
    chunks = problem_chunks(problems, workers, size, group)
    todo = pending_chunks(root, chunks)
    get_run_logger().info("worker %d/%d of %s %s: %d of %d chunks to do into %s", workers.shard_index,
                          workers.shard_count, stage, group, len(todo), len(chunks), root)
    if todo:
        with open_generator(config.generator, model_dir) as generator:
            for cid, chunk in tqdm(todo, desc=f"{stage} shard {workers.shard_index}", unit="chunk"):
                write_chunk(root, cid, {"problems": problems_table(chunk), **produce(generator, chunk)})


@task(cache_policy=NO_CACHE)
def fit(cfg: PRMConfig, base_dir: Path, solutions: Sequence[LabeledSolution], out_dir: Path,
        name: str = "prm") -> PRMTrainResult:
    """Train a scalar-head verifier (the PRM, or the ORM with one step per attempt), logging each epoch."""
    logger = get_run_logger()
    return fit_prm(cfg, base_dir, solutions, out_dir,
                   on_epoch=lambda e, tr, va: logger.info("%s epoch %d: train loss %.4f, val loss %.4f",
                                                          name, e, tr, va))
