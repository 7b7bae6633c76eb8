"""Bad input gets a clear error and loses nothing: a locked warehouse, writes through
`ttscale query`, a PRM that scores NaN."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from ttscale.models.prm import PRM
from ttscale.cli import app
from ttscale.warehouse.store import Warehouse, WarehouseBusy

HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _small_warehouse(path: Path) -> None:
    with Warehouse(path) as wh:
        wh.insert("problems", pa.Table.from_pylist([{"problem_id": "p1", "source": "s", "split": "test", "index": 0,
                                                     "level": 1, "question": "q", "answer": "1", "meta": "{}"}]))


def test_locked_warehouse_waits_then_says_who_to_wait_for(tmp_path: Path):
    db = tmp_path / "ttscale.duckdb"
    _small_warehouse(db)
    holder = _hold_lock(db, 30)
    try:
        with pytest.raises(WarehouseBusy, match="held by another process"):
            Warehouse(db, lock_timeout=1)
    finally:
        holder.kill()
        holder.wait()
    brief = _hold_lock(db, 2)
    start = time.monotonic()
    with Warehouse(db, lock_timeout=60) as wh:  # waits for the other run instead of failing
        assert wh.count("problems") == 1
    assert time.monotonic() - start > 0.5
    brief.wait()


def test_query_rejects_writes_and_changes_nothing(tmp_path: Path):
    _small_warehouse(tmp_path / "ttscale.duckdb")
    result = CliRunner().invoke(app, ["query", "DELETE FROM problems", "--workdir", str(tmp_path)])
    assert result.exit_code == 1 and "read-only" in result.output
    with Warehouse(tmp_path / "ttscale.duckdb", read_only=True) as wh:
        assert wh.count("problems") == 1


def test_prm_that_scores_nan_is_a_clear_error(base_model_dir: Path, tmp_path: Path):
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(base_model_dir, num_labels=1)
    model = AutoModelForTokenClassification.from_pretrained(base_model_dir, config=config)
    model.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(base_model_dir).save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    weights["score.weight"] = torch.full_like(weights["score.weight"], float("nan"))
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="NaN"):
        PRM(tmp_path).score(["rule\n\n01: init#0011=1234\n\n"], [["00: 1234#0011=1245", "ans=1245"]])


def test_pickled_weights_are_refused(base_model_dir: Path, tmp_path: Path):
    """Only safetensors load: a model folder with a pickle (.bin) and no safetensors is an error, not a load."""
    import shutil

    import pytest

    from ttscale.models.prm import PRM
    from ttscale.workdir import fingerprint

    folder = tmp_path / "pickled"
    shutil.copytree(base_model_dir, folder)
    for f in folder.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        fingerprint(folder)
    with pytest.raises(OSError):
        PRM(folder)
