"""Two sampling workers at once on disjoint problem shards, writing Parquet (never the
warehouse), then the one loader: the union is complete, nothing is duplicated, and
loading again adds nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import yaml

from flows.load_shards import load_shards
from flows.sample_bank import sample_bank
from warehouse.shards import write_chunk, written_chunks

REPO = Path(__file__).resolve().parent.parent


def test_chunks_are_written_atomically(tmp_path: Path):
    (tmp_path / "c1.tmp").mkdir()  # what a worker killed mid-write leaves behind
    write_chunk(tmp_path, "c2", {"candidates": pa.table({"x": [1]})})
    assert written_chunks(tmp_path) == {"c2"}
    write_chunk(tmp_path, "c1", {"candidates": pa.table({"x": [2]})})  # its re-run overwrites the leftover
    assert written_chunks(tmp_path) == {"c1", "c2"} and not (tmp_path / "c1.tmp").exists()


def test_two_workers_then_the_loader(trained_workdir: Path, smoke_config, tmp_path: Path):
    workdir = tmp_path / "shared"
    shutil.copytree(trained_workdir / "models" / "base", workdir / "models" / "base")
    base = smoke_config.model_dump(mode="json")
    base["bank"].update({"output": "shards", "shard_count": 2, "problems_per_chunk": 2, "seed": 33})
    workers = []
    for index in (0, 1):
        cfg = {**base, "bank": {**base["bank"], "shard_index": index}}
        preset = tmp_path / f"worker{index}.yaml"
        preset.write_text(yaml.safe_dump(cfg))
        workers.append(subprocess.Popen([sys.executable, "-m", "ttscale.cli", "sample-bank", "-p", str(preset),
                                         "-w", str(workdir)], cwd=REPO, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True))
    for w in workers:
        out, _ = w.communicate(timeout=600)
        assert w.returncode == 0, out[-3000:]
    assert not (workdir / "ttscale.duckdb").exists()  # workers never opened the warehouse

    added = load_shards(config=smoke_config, workdir=str(workdir))
    n = base["bank"]["n"] * base["task"]["n_test"]
    assert added["candidates"] == n and added["problems"] == base["task"]["n_test"]
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        total, distinct, problems = con.execute(
            "SELECT count(*), count(DISTINCT candidate_id), count(DISTINCT problem_id) FROM candidates").fetchall()[0]
        assert total == distinct == n and problems == base["task"]["n_test"]
        dupes = con.execute("SELECT count(*) - count(DISTINCT (candidate_id, step_index)) FROM steps").fetchall()
        assert dupes[0][0] == 0
    assert load_shards(config=smoke_config, workdir=str(workdir)) == {}  # loading twice adds nothing

    # the warehouse-mode stage now finds the bank complete: it samples nothing and writes the report
    cfg = smoke_config.model_copy(update={"bank": smoke_config.bank.model_copy(update={"seed": 33})})
    bank = sample_bank(config=cfg, workdir=str(workdir))
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM candidates").fetchall()[0][0] == n
    assert (workdir / "reports" / f"sample-bank-{bank}.md").exists()
