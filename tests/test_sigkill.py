"""A real SIGKILL (and a SIGTERM) in the middle of sampling, and a SIGKILL in the middle of step
labeling: the re-run loses nothing, duplicates nothing, and does not generate again what was
committed before the kill."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import yaml

REPO = Path(__file__).resolve().parent.parent


def _kill_mid_run(cmd: list[str], how: signal.Signals = signal.SIGKILL) -> None:
    """Start a stage in its own process group, wait for its first finished chunk task, then kill it:
    SIGKILL the whole group (nothing can clean up), or SIGTERM the command alone (a scheduler's stop),
    which must end it within seconds, saying how to resume."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = ""
    deadline = time.monotonic() + 240
    while "Finished in state Completed" not in seen and time.monotonic() < deadline:  # a chunk task finished
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    time.sleep(1.5)  # let a few more chunks commit, then kill mid-run
    if how == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, seen[-2000:]
        return
    os.kill(proc.pid, signal.SIGTERM)
    stopped = time.monotonic()
    rest, _ = proc.communicate(timeout=60)
    assert time.monotonic() - stopped < 20, "SIGTERM should end a run within seconds"
    assert proc.returncode == 130 and "run the same command again to resume" in rest, (seen + rest)[-2000:]


def _bank(db: str) -> tuple[dict, set[int]]:
    """candidate id -> created_at, and the set of per-problem candidate counts."""
    with duckdb.connect(db, read_only=True) as con:
        rows = dict(con.execute("SELECT candidate_id, created_at FROM candidates").fetchall())
        per_problem = {n for (n,) in con.execute("SELECT count(*) FROM candidates GROUP BY problem_id").fetchall()}
    return rows, per_problem


def test_sigterm_then_sigkill_mid_sampling_then_resume(trained_workdir: Path, smoke_config, tmp_path: Path):
    """One bank, stopped twice: a SIGTERM (a scheduler's stop) mid-run, then a SIGKILL of the whole
    group mid-way through the resumed run, then a run to the end. After each stop only whole problems
    are stored, the resumed run keeps what was committed, and the end has every candidate once.
    (Two tests until 12-03; one bank serves both stops at three runs instead of four.)"""
    workdir = tmp_path / "killed"
    shutil.copytree(trained_workdir / "models" / "base", workdir / "models" / "base")
    config = smoke_config.model_dump(mode="json")
    config["task"]["n_test"] = 60
    config["bank"].update({"problems_per_chunk": 2, "seed": 21})
    preset = tmp_path / "kill.yaml"
    preset.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "ttscale.cli", "sample-bank", "-p", str(preset), "-w", str(workdir)]
    db = str(workdir / "ttscale.duckdb")
    total, n = 60 * config["bank"]["n"], config["bank"]["n"]

    _kill_mid_run(cmd, signal.SIGTERM)
    terminated, per_problem = _bank(db)
    assert 0 < len(terminated) < total, "the SIGTERM should land after some chunks and before the last"
    assert per_problem == {n}  # no half-written problem survived

    _kill_mid_run(cmd, signal.SIGKILL)
    killed, per_problem = _bank(db)
    assert len(terminated) < len(killed) < total, "the SIGKILL should land after the resumed run's first chunk"
    assert per_problem == {n}
    assert {k: killed[k] for k in terminated} == terminated  # the resumed run kept what the first committed

    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with duckdb.connect(db, read_only=True) as con:
        rows, distinct = con.execute("SELECT count(*), count(DISTINCT candidate_id) FROM candidates").fetchall()[0]
        steps_dupes = con.execute(
            "SELECT count(*) - count(DISTINCT (candidate_id, step_index)) FROM steps").fetchall()[0][0]
    after, _ = _bank(db)
    assert rows == distinct == total and steps_dupes == 0
    assert {k: after[k] for k in killed} == killed  # committed problems were not sampled again


def test_sigkill_mid_labeling_then_resume(trained_workdir: Path, smoke_config, tmp_path: Path):
    workdir = tmp_path / "killed-labels"
    shutil.copytree(trained_workdir / "models" / "base", workdir / "models" / "base")
    config = smoke_config.model_dump(mode="json")
    config["task"]["n_train"] = 40
    config["labels"].update({"problems": 40, "problems_per_chunk": 2, "seed": 21})
    preset = tmp_path / "kill-labels.yaml"
    preset.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "ttscale.cli", "label-steps", "-p", str(preset), "-w", str(workdir)]
    _kill_mid_run(cmd)

    db = str(workdir / "ttscale.duckdb")
    query = ("SELECT c.candidate_id, c.created_at, count(l.step_index) AS labels, c.n_steps FROM candidates c "
             "LEFT JOIN step_labels l USING (candidate_id) WHERE c.method = 'label' GROUP BY ALL")
    with duckdb.connect(db, read_only=True) as con:
        before = {r[0]: r[1] for r in con.execute(query).fetchall()}
        partial = con.execute(f"SELECT count(*) FROM ({query}) WHERE labels <> n_steps").fetchall()[0][0]
    total = 40 * config["labels"]["samples"]
    assert 0 < len(before) < total, "the kill should land after some chunks and before the last"
    assert partial == 0  # every stored solution has all its step labels: chunks commit whole

    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with duckdb.connect(db, read_only=True) as con:
        after = {r[0]: r[1] for r in con.execute(query).fetchall()}
        dupes = con.execute("SELECT count(*) - count(DISTINCT (candidate_id, step_index)) FROM step_labels").fetchall()
    assert len(after) == total and dupes[0][0] == 0
    assert {k: after[k] for k in before} == before  # labeled problems were not sampled or rolled out again
