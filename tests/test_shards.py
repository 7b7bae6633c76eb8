"""Two workers at once on disjoint problem shards (sampling; labeling then search),
writing Parquet (never the warehouse), then the one loader: the union is complete,
nothing is duplicated, loading again adds nothing, and the warehouse-mode stage then
finds its work done."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import yaml

from ttscale.configs.schema import PipelineConfig, PRMConfig, TaskConfig, WorkerConfig
from ttscale.flows.label_steps import label_steps
from ttscale.flows.load_shards import load_shards
from ttscale.flows.sample_bank import sample_bank
from ttscale.flows.search import search
from ttscale.models.prm_train import LabeledSolution, train_prm
from ttscale.tasks import arith
from ttscale.tasks.grading import split_steps
from ttscale.tasks.sampling import prompt_for
from ttscale.warehouse.shards import write_chunk, written_chunks

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
    base["bank"].update({"problems_per_chunk": 2, "seed": 33})
    base["workers"] = {"output": "shards", "shard_count": 2}
    workers = []
    for index in (0, 1):
        cfg = {**base, "workers": {**base["workers"], "shard_index": index}}
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


def _start_workers(base: dict, workdir: Path, tmp_path: Path, commands: list[str]) -> None:
    """Two worker processes at once, each running the stages in turn on its own shard."""
    procs = []
    for index in (0, 1):
        preset = tmp_path / f"worker{index}.yaml"
        preset.write_text(yaml.safe_dump({**base, "workers": {"output": "shards", "shard_count": 2,
                                                               "shard_index": index}}))
        script = " && ".join(f"{sys.executable} -m ttscale.cli {c} -p {preset} -w {workdir}" for c in commands)
        procs.append(subprocess.Popen(["bash", "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out[-3000:]


def test_label_and_search_workers_then_the_loader(trained_workdir: Path, smoke_config, tmp_path: Path):
    workdir = tmp_path / "shared"
    base_dir = workdir / "models" / "base"
    shutil.copytree(trained_workdir / "models" / "base", base_dir)
    # a PRM for the search workers: the head trained on reference solutions (seconds)
    sols = []
    for p in arith.make_split(TaskConfig(n_test=10, seed=7), "test"):
        steps = split_steps(p.meta["reference_solution"])
        sols.append(LabeledSolution(p.problem_id, prompt_for(p), steps, [1.0] * len(steps)))
    train_prm(PRMConfig(mode="head", epochs=1, batch_size=8), base_dir, sols, workdir / "models" / "prm")
    base = smoke_config.model_dump(mode="json")
    base["labels"].update({"problems_per_chunk": 2})
    base["search"].update({"budgets": [2], "strategies": ["best_of_n", "beam", "dvts"]})
    _start_workers(base, workdir, tmp_path, ["label-steps", "search"])
    assert not (workdir / "ttscale.duckdb").exists()  # workers never opened the warehouse

    cfg = PipelineConfig.model_validate(base)
    added = load_shards(config=cfg, workdir=str(workdir))
    labels, search_cfg = cfg.labels, cfg.search
    assert added["candidates"] == labels.problems * labels.samples
    runs = len(search_cfg.seeds) * 3  # best-of-N, beam (M = 2), DVTS (M = 2) at N = 2
    assert added["selections"] == runs * search_cfg.problems
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        labeled, distinct = con.execute("SELECT count(*), count(DISTINCT (candidate_id, step_index)) "
                                        "FROM step_labels").fetchall()[0]
        assert labeled == distinct == added["step_labels"] > 0
        per_run = con.execute("SELECT search_key, count(*), count(DISTINCT problem_id) FROM selections "
                              "GROUP BY 1").fetchall()
        assert len(per_run) == runs and all(n == d == search_cfg.problems for _, n, d in per_run)
        assert con.execute("SELECT count(*) - count(DISTINCT node_id) FROM search_nodes").fetchall()[0][0] == 0
    assert load_shards(config=cfg, workdir=str(workdir)) == {}

    # the warehouse-mode stages now find the work done: nothing new, only their reports
    def rows() -> tuple[int, int]:
        with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
            return con.execute("SELECT (SELECT count(*) FROM step_labels), (SELECT count(*) FROM search_nodes)"
                               ).fetchall()[0]

    before = rows()
    local = cfg.model_copy(update={"workers": WorkerConfig()})
    label_steps(config=local, workdir=str(workdir))
    scorer_id = search(config=local, workdir=str(workdir))
    assert rows() == before
    assert (workdir / "reports" / f"search-{scorer_id}.md").exists()
