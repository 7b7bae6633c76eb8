"""`fan-out`: a stage split over shard workers (threads, or a real local Ray instance through
prefect-ray), loaded by the one writer; with shared result storage a re-run skips the
shards that finished without touching the model."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from ttscale.configs.schema import WorkerConfig
from ttscale.flows.fan_out import fan_out


def _workdir(trained_workdir: Path, tmp_path: Path) -> Path:
    workdir = tmp_path / "shared"
    shutil.copytree(trained_workdir / "models" / "base", workdir / "models" / "base")
    return workdir


def _config(smoke_config, seed: int, **workers):
    return smoke_config.model_copy(update={
        "bank": smoke_config.bank.model_copy(update={"seed": seed, "problems_per_chunk": 2}),
        "workers": WorkerConfig(shard_count=2, **workers)})


def test_threads_with_shared_result_storage(trained_workdir: Path, smoke_config, tmp_path: Path):
    workdir = _workdir(trained_workdir, tmp_path)
    results = tmp_path / "prefect-results"
    cfg = _config(smoke_config, seed=41, result_storage=str(results))
    added = fan_out(stage="sample-bank", config=cfg, workdir=str(workdir))
    n = cfg.bank.n * cfg.task.n_test
    assert added["candidates"] == n
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT candidate_id) FROM candidates").fetchall()[0] == (n, n)
    assert len(list(results.iterdir())) >= 2  # each shard's result (and its sub-flow's) persisted there
    assert list((workdir / "reports").glob("sample-bank-*.md"))  # the loader's process wrote the report

    # A re-run (any machine sharing the storage) finds both shards cached: had they run
    # again, they would have written their shard folders anew.
    shutil.rmtree(workdir / "shards")
    assert fan_out(stage="sample-bank", config=cfg, workdir=str(workdir)) == {}
    assert not (workdir / "shards").exists()


def _ray_starts_here() -> str | None:
    """Why a local Ray instance cannot start on this machine (None: it can), asked in a throwaway process."""
    probe = "import ray; ray.init(include_dashboard=False, num_cpus=1); ray.shutdown()"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        return "ray.init() did not return within 180 s"
    return None if done.returncode == 0 else done.stderr.strip().splitlines()[-1]


@pytest.mark.skipif(importlib.util.find_spec("prefect_ray") is None, reason="the ray extra is not installed")
def test_ray_task_runner_on_a_local_instance(trained_workdir: Path, smoke_config, tmp_path: Path):
    if (why := _ray_starts_here()) is not None:  # the machine, not ttscale: say so instead of failing
        pytest.skip(f"Ray cannot start a local instance here: {why}")
    workdir = _workdir(trained_workdir, tmp_path)
    cfg = _config(smoke_config, seed=42, task_runner="ray")
    added = fan_out(stage="sample-bank", config=cfg, workdir=str(workdir))
    n = cfg.bank.n * cfg.task.n_test
    assert added["candidates"] == n and added["problems"] == cfg.task.n_test
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        total, distinct = con.execute("SELECT count(*), count(DISTINCT candidate_id) FROM candidates").fetchall()[0]
        assert total == distinct == n
    assert len(list((workdir / "shards" / "sample-bank").glob("*/*"))) == 6  # 10 problems: 5 per shard, in chunks of 2
