"""The flows against a real Prefect server, a real DuckDB file and a real MLflow sqlite store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from faults import DiesOnCall
from mlflow.tracking import MlflowClient

import ttscale.flows.sample_bank as sample_bank_module
from ttscale.flows.pipeline import pipeline
from ttscale.flows.sample_bank import sample_bank
from ttscale.models.scorers import scorer_key
from ttscale.flows.train_base import REGISTERED_NAME
from ttscale.configs.schema import PipelineConfig
from ttscale.models.scorers import RANDOM, ScorerSource


def _counts(workdir: Path) -> dict[str, int]:
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                for t in ("runs", "problems", "candidates", "steps", "metrics")}


def test_pipeline_end_to_end_and_rerun_is_a_no_op(trained_workdir: Path, smoke_config):
    out = pipeline(config=smoke_config, workdir=str(trained_workdir))
    n_expected = smoke_config.bank.n * smoke_config.task.n_test

    # An outside client opens the warehouse read-only and finds every candidate, graded.
    with duckdb.connect(str(trained_workdir / "ttscale.duckdb"), read_only=True) as con:
        n, graded, distinct, flops = con.execute(
            "SELECT count(*), count(correct), count(DISTINCT candidate_id), min(flops) FROM candidates WHERE bank_id = ?",
            [out["bank_id"]]).fetchall()[0]
        assert n == graded == distinct == n_expected and flops > 0
        assert con.execute("SELECT count(*) FROM steps").fetchall()[0][0] > 0
        curve = con.execute("SELECT k, pass_at_k FROM pass_at_k WHERE bank_id = ? AND level = 0 ORDER BY k",
                            [out["bank_id"]]).fetchall()
        assert [k for k, _ in curve] == [1, 2, 4, 8]
        assert all(a <= b + 1e-12 for (_, a), (_, b) in zip(curve, curve[1:]))  # pass@k never falls with k
        status = con.execute("SELECT status FROM runs WHERE stage = 'sample-bank'").fetchall()
        assert status == [("finished",)]

    # MLflow's client finds the run with its metrics and the registered base model.
    client = MlflowClient(tracking_uri=f"sqlite:///{trained_workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ttscale")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'sample-bank'")
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert {"pass_at_1", "pass_at_8", "majority_at_8", "guess_at_8", "pass_at_1/level_1"} <= set(metrics)
    assert client.get_registered_model(REGISTERED_NAME).name == REGISTERED_NAME
    assert client.search_model_versions(f"name = '{REGISTERED_NAME}'")
    assert (trained_workdir / "reports" / f"sample-bank-{out['bank_id']}.png").stat().st_size > 1000

    # train-reviser measured the context gain on held-out test problems, interval around the effect.
    with duckdb.connect(str(trained_workdir / "ttscale.duckdb"), read_only=True) as con:
        gain = dict(con.execute("SELECT name, value FROM metrics WHERE name LIKE 'reviser_context_gain%' AND level = 0")
                    .fetchall())
    assert gain["reviser_context_gain_lo"] <= gain["reviser_context_gain"] <= gain["reviser_context_gain_hi"]
    assert gain["reviser_context_gain_problems"] > 0
    reviser_run = client.search_runs([exp.experiment_id], "tags.stage = 'train-reviser'")[0]
    assert reviser_run.data.metrics["reviser_context_gain"] == gain["reviser_context_gain"]
    revise_report = next((trained_workdir / "reports").glob("revise-*.md")).read_text()
    assert f"{gain['reviser_context_gain']:+.3f}" in revise_report and "Teacher-forced context gain" in revise_report

    # A second run redoes nothing and writes no duplicates.
    before = _counts(trained_workdir)
    again = pipeline(config=smoke_config, workdir=str(trained_workdir))
    assert again == out and _counts(trained_workdir) == before
    assert len(client.search_runs([exp.experiment_id], "tags.stage = 'sample-bank'")) == 1
    assert len(client.search_runs([exp.experiment_id], "tags.stage = 'train-base'")) == 1


def test_killed_run_resumes_without_redoing_or_duplicating(trained_workdir: Path, smoke_config, tmp_path, monkeypatch):
    workdir = tmp_path / "resume"
    shutil.copytree(trained_workdir / "models", workdir / "models")
    config = smoke_config.model_copy(update={"bank": smoke_config.bank.model_copy(update={"seed": 11})})
    real = sample_bank_module.sample_chunk
    monkeypatch.setattr(sample_bank_module, "sample_chunk", DiesOnCall(real, dies_on=2))
    with pytest.raises(BaseException):
        sample_bank(config=config, workdir=str(workdir))
    per_chunk = config.bank.problems_per_chunk * config.bank.n
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM candidates").fetchall()[0][0] == per_chunk
        first = con.execute("SELECT candidate_id, created_at FROM candidates ORDER BY 1").fetchall()
        assert con.execute("SELECT status FROM runs").fetchall() == [("failed",)]

    monkeypatch.setattr(sample_bank_module, "sample_chunk", real)
    sample_bank(config=config, workdir=str(workdir))
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        n, distinct = con.execute("SELECT count(*), count(DISTINCT candidate_id) FROM candidates").fetchall()[0]
        assert n == distinct == config.bank.n * config.task.n_test
        kept = con.execute("SELECT candidate_id, created_at FROM candidates WHERE candidate_id IN "
                           f"({','.join('?' * len(first))}) ORDER BY 1", [c for c, _ in first]).fetchall()
        assert kept == first  # the committed chunk was not sampled again
        assert con.execute("SELECT status FROM runs").fetchall() == [("finished",)]
        steps_dupes = con.execute("SELECT count(*) - count(DISTINCT (candidate_id, step_index)) FROM steps").fetchall()[0][0]
        assert steps_dupes == 0


def test_sample_bank_without_model_says_what_to_do(prefect_server, smoke_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="train-base"):
        sample_bank(config=smoke_config, workdir=str(tmp_path / "empty"))


def test_the_embedded_model_on_another_task_is_a_config_error(smoke_config, tmp_path):
    settings = smoke_config.model_dump()
    settings["task"].update(kind="jsonl", path=tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="generator.model=base is the embedded model, trained on the embedded task"):
        PipelineConfig.model_validate(settings)


def test_cli_query_reads_the_warehouse(trained_workdir: Path, smoke_config):
    pipeline(config=smoke_config, workdir=str(trained_workdir))
    cli = [sys.executable, "-m", "ttscale.cli"]
    done = subprocess.run(cli + ["query", "SELECT count(*) AS n FROM candidates WHERE method = 'sample'", "--workdir", str(trained_workdir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert str(smoke_config.bank.n * smoke_config.task.n_test) in done.stdout
    bad = subprocess.run(cli + ["query", "SELECT nope FROM candidates", "--workdir", str(trained_workdir)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "nope" in bad.stderr


def test_a_random_verifier_makes_no_finding_reproduced(trained_workdir: Path, smoke_config, tmp_path):
    """The null check that proves the instrument: the whole pipeline with `scoring.prm: random` measures
    findings 1-5 (comparisons on real problems) and calls none of them reproduced; a user reads the
    verdicts back with `ttscale query "SELECT * FROM findings"`."""
    pipeline(config=smoke_config, workdir=str(trained_workdir))
    workdir = tmp_path / "null"
    shutil.copytree(trained_workdir, workdir)  # the shared workdir keeps only the trained PRM's rows
    null = smoke_config.model_copy(update={"scoring": smoke_config.scoring.model_copy(update={"prm": "random"})})
    pipeline(config=null, workdir=str(workdir))
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        report_run = con.execute("SELECT run_id FROM runs WHERE stage = 'report' ORDER BY finished_at DESC "
                                 "LIMIT 1").fetchall()[0][0]
        rows = con.execute("SELECT finding, verdict, finding_verdict, problems, lo, effect, hi, scorer_id "
                           "FROM findings WHERE run_id = ?", [report_run]).fetchall()
        random_id = scorer_key(ScorerSource(RANDOM), None)
        assert con.execute("SELECT count(*) FROM step_scores WHERE scorer_id = ?", [random_id]).fetchall()[0][0] > 0
    measured = [r for r in rows if r[1] != "not measured"]  # a level with no problems has nothing to compare
    assert {f for f, *_ in measured} >= {1, 2, 3, 4, 5}  # measured, not skipped
    assert all(p > 0 and lo <= e <= hi for _, _, _, p, lo, e, hi, _ in measured)
    assert not [r for r in rows if r[1] == "reproduced" or r[2] == "reproduced"]
    assert {r[-1] for r in rows} == {random_id}  # the comparisons are the random scorer's, not a baseline's
    text = (workdir / "reports" / "findings.md").read_text()
    verdict_rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(verdict_rows) == 6 and not [line for line in verdict_rows if "**reproduced**" in line]
    assert "findings-forest.png" in text
    done = subprocess.run([sys.executable, "-m", "ttscale.cli", "query", "SELECT finding, verdict FROM latest_findings",
                           "--workdir", str(workdir)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "inconclusive" in done.stdout, done.stderr
