from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ttscale.warehouse.store import Warehouse


def _steps(n: int, offset: int = 0) -> pa.Table:
    return pa.table({"candidate_id": [f"c{i}" for i in range(offset, offset + n)],
                     "step_index": [0] * n, "text": ["s"] * n})


def test_insert_is_idempotent_on_keys(tmp_path: Path):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        assert wh.insert("steps", _steps(100)) == 100
        assert wh.insert("steps", _steps(100)) == 0
        assert wh.insert("steps", _steps(100, offset=50)) == 50
        assert wh.count("steps") == 150


def test_transaction_rolls_back_whole_chunk(tmp_path: Path):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        with pytest.raises(RuntimeError):
            with wh.transaction():
                wh.insert("steps", _steps(10))
                raise RuntimeError("killed mid-chunk")
        assert wh.count("steps") == 0


def test_outside_reader_is_read_only(tmp_path: Path):
    path = tmp_path / "w.duckdb"
    with Warehouse(path) as wh:
        wh.insert("steps", _steps(3))
    with Warehouse(path, read_only=True) as ro:
        assert ro.count("steps") == 3
        with pytest.raises(duckdb.Error):
            ro.con.execute("DELETE FROM steps")


def test_read_only_on_missing_file_is_clear(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no warehouse"):
        Warehouse(tmp_path / "absent.duckdb", read_only=True)


def test_runs_resume_keeps_one_row(tmp_path: Path):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.start_run("r1", "sample-bank", "smoke", {"a": 1}, mlflow_run_id="m1")
        wh.finish_run("r1", "failed")
        wh.start_run("r1", "sample-bank", "smoke", {"a": 1})
        rows = wh.query("SELECT status, mlflow_run_id FROM runs").to_pylist()
        assert rows == [{"status": "running", "mlflow_run_id": "m1"}]


def test_interval_views_hold_their_estimate_at_zero_and_one(tmp_path):
    """Wilson intervals must contain the estimate even when every answer is right or every one wrong."""
    from ttscale.warehouse.store import Warehouse

    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.con.execute("INSERT INTO problems SELECT 'p' || i, 'arith', 'test', i, 1 + i % 2, 'q', '1', '{}' "
                       "FROM range(7) t(i)")
        wh.con.execute("INSERT INTO revision_selections SELECT 'c', 'r', 'p' || i, 0, 4, 2, rule, '1', rule = 'oracle' "
                       "FROM range(7) t(i), (VALUES ('oracle'), ('majority_flat')) v(rule)")
        wh.con.execute("INSERT INTO selections SELECT 'k' || s, 'p' || i, 'r', 's', 'beam', 4, 2, 0, s, '1', s = 0, "
                       "1, 4, 4, 10, 10, 10, 1.0 FROM range(7) t(i), range(2) u(s)")
        for view in ("revision_curves", "accuracy_vs_budget"):
            rows = wh.query(f"SELECT accuracy, lo, hi FROM {view}").to_pylist()
            assert rows and all(0.0 <= r["lo"] <= r["accuracy"] <= r["hi"] <= 1.0 for r in rows), (view, rows)
        assert {r["accuracy"] for r in wh.query("SELECT accuracy FROM revision_curves").to_pylist()} == {0.0, 1.0}


def test_levelless_problems_make_one_all_row_in_the_views(tmp_path):
    """GSM8K gives no level (0): its problems are counted under "all" once, with the seeds they had."""
    from ttscale.warehouse.store import Warehouse

    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.con.execute("INSERT INTO problems SELECT 'p' || i, 'gsm8k', 'test', i, 0, 'q', '1', '{}' FROM range(5) t(i)")
        wh.con.execute("INSERT INTO selections SELECT 'k' || s || i, 'p' || i, 'r', 's', 'beam', 4, 2, 0, s, '1', "
                       "i < 2, 1, 4, 4, 10, 10, 10, 1.0 FROM range(5) t(i), range(2) u(s)")
        rows = wh.query("SELECT level, seeds, problems, accuracy FROM accuracy_vs_budget").to_pylist()
        assert rows == [{"level": 0, "seeds": 2, "problems": 5, "accuracy": pytest.approx(0.4)}]
