import json
from pathlib import Path

from typer.testing import CliRunner

from ttscale.configs import load_config
from ttscale.configs.schema import PipelineConfig
from ttscale.cli import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "train-base", "sample-bank", "label-steps", "train-prm", "score-bank", "query", "presets",
                    "show-config", "revision-data", "train-reviser", "train-orm", "revise", "difficulty", "allocate",
                    "train-large", "exchange", "report", "solve", "fan-out", "load-shards", "deploy", "serve"):
        assert command in result.output


def test_config_typo_exits_2_with_key_and_file(tmp_path: Path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("bank:\n  temprature: 0.5\n")
    result = runner.invoke(app, ["run", "--preset", str(bad), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "bank.temprature" in result.output and str(bad) in result.output
    assert not (tmp_path / "w").exists()  # nothing was started


def test_show_config_fills_defaults():
    result = runner.invoke(app, ["show-config", "--preset", "smoke"])
    assert result.exit_code == 0 and "problems_per_chunk: 4" in result.output
    as_json = runner.invoke(app, ["show-config", "--preset", "smoke", "--json"])
    assert as_json.exit_code == 0
    assert PipelineConfig.model_validate(json.loads(as_json.output)) == load_config("smoke")


def test_fan_out_names_the_stages_it_can_split(tmp_path: Path):
    result = runner.invoke(app, ["fan-out", "train-prm", "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "sample-bank, label-steps or search" in result.output


def test_query_without_warehouse_is_clear(tmp_path: Path):
    result = runner.invoke(app, ["query", "SELECT 1", "--workdir", str(tmp_path)])
    assert result.exit_code == 1 and "no warehouse" in result.output


def test_tasks_lists_every_kind_with_its_counts():
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1:3] for line in result.output.splitlines()[1:] if line.strip()}
    assert rows["math500"] == ["500", "7498"] and rows["gsm8k"] == ["1319", "7473"]
    assert rows["aime2024"][0] == "30" and rows["aime2025"][0] == "15" and rows["humaneval"] == ["164", "0"]
    assert {"arith", "math", "omni_math", "jsonl"} <= set(rows)


def test_a_bad_problem_file_fails_in_one_line_before_anything_starts(tmp_path: Path):
    problems = tmp_path / "mine.jsonl"
    problems.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n" + '{"problem": "2+2?"}\n')
    preset = tmp_path / "mine.yaml"
    preset.write_text(f"extends: smoke\ntask: {{kind: jsonl, path: {problems}}}\ngenerator: {{model: smollm2}}\n"
                      "scoring: {prm: confidence, baselines: []}\n")
    result = runner.invoke(app, ["sample-bank", "-p", str(preset), "-w", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert f"{problems}:2: missing required field 'answer'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "w").exists()
    fixed = runner.invoke(app, ["show-config", "-p", str(preset), "--set", "task.kind=gsm8k"])
    assert fixed.exit_code == 2 and "task.path is only read by kinds" in fixed.output


def test_a_sigterm_inside_a_duckdb_statement_still_stops_resumably(tmp_path: Path, monkeypatch):
    """DuckDB turns the KeyboardInterrupt that our SIGTERM handler raises mid-statement into a plain
    RuntimeError('Query interrupted'); the command must still end as a stop (exit 130, how to resume),
    not as a crash. (The kill test caught this as a race in a clean clone on 12-07.)"""
    import os
    import signal
    import threading

    import duckdb

    from ttscale import cli

    def busy_flow(**_: object) -> None:
        con = duckdb.connect()
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
        con.execute("SELECT count(*) FROM range(100000000000) t(x) WHERE x % 7 = 3").fetchall()

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(cli, "_flows", lambda: {"train-base": busy_flow})
    monkeypatch.setattr(cli, "_STOPPED_BY", [])
    try:
        cli._stop_on_sigterm()
        result = runner.invoke(app, ["train-base", "--preset", "smoke", "--workdir", str(tmp_path / "w")])
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
    assert result.exit_code == 130, result.output
    assert "run the same command again to resume" in result.output
