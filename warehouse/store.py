"""The one writer of the DuckDB warehouse, and read-only access for everyone else.

DuckDB allows one read-write process per file, so every write in a run goes through a
`Warehouse` opened by the process that runs the flow; queries from outside open the
file read-only. Writes are Arrow tables inserted with `INSERT OR IGNORE` on each table's
deterministic primary key: re-running a stage inserts nothing twice, and a chunk that
was committed before a crash is not written again on resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

_HERE = Path(__file__).parent
_log = logging.getLogger("ttscale.warehouse")


class WarehouseBusy(RuntimeError):
    """Another process holds the warehouse file open for writing."""


def _connect(path: Path, read_only: bool, lock_timeout: float) -> duckdb.DuckDBPyConnection:
    """Open the file, waiting (with a message) while another process holds its write lock."""
    deadline = time.monotonic() + lock_timeout
    announced = False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as err:
            if "lock" not in str(err).lower():
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusy(
                    f"{path} is held by another process (DuckDB allows one writer per file): wait for that run "
                    f"to finish, or stop it, then retry. Waited {lock_timeout:.0f}s. DuckDB said: {err}") from None
            if not announced:
                _log.warning("%s is locked by another process; waiting up to %.0fs", path, lock_timeout)
                announced = True
            time.sleep(0.5)


class Warehouse:
    def __init__(self, path: Path, read_only: bool = False, lock_timeout: float = 120.0) -> None:
        self.path = Path(path)
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"no warehouse at {self.path}: run a stage first (ttscale run)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = _connect(self.path, read_only, lock_timeout)
        if not read_only:
            self.con.execute((_HERE / "schema.sql").read_text())
            self.con.execute((_HERE / "views.sql").read_text())

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Warehouse":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside land together or not at all (a killed chunk leaves no trace)."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def insert(self, table: str, rows: pa.Table) -> int:
        """Bulk insert by column name; rows whose key already exists are skipped. Returns rows added."""
        if rows.num_rows == 0:
            return 0
        before = self.count(table)
        self.con.register("_incoming", rows)
        try:
            self.con.execute(f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM _incoming")
        except BaseException:
            # An insert interrupted mid-statement (Ctrl-C, SIGTERM) aborts the transaction, and then
            # even unregistering fails; that must not hide the interrupt the caller rolls back on.
            with contextlib.suppress(duckdb.Error):
                self.con.unregister("_incoming")
            raise
        self.con.unregister("_incoming")
        return self.count(table) - before

    def count(self, table: str) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        return self.con.sql(sql, params=params or None).to_arrow_table()

    # --- runs -----------------------------------------------------------------------

    def start_run(self, run_id: str, stage: str, preset: str, config: Mapping[str, Any], **ids: str | None) -> None:
        """Record a stage run; a resumed run keeps its row and is marked running again."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        self.con.execute(
            """INSERT INTO runs (run_id, stage, preset, config, mlflow_run_id, prefect_flow_run_id, started_at, status)
               VALUES (?, ?, ?, ?, ?, ?, ?, 'running')
               ON CONFLICT (run_id) DO UPDATE SET status = 'running', finished_at = NULL,
                   mlflow_run_id = coalesce(excluded.mlflow_run_id, runs.mlflow_run_id),
                   prefect_flow_run_id = excluded.prefect_flow_run_id""",
            [run_id, stage, preset, json.dumps(config, default=str), ids.get("mlflow_run_id"),
             ids.get("prefect_flow_run_id"), now],
        )

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        self.con.execute("UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?", [status, now, run_id])

    def is_finished(self, run_id: str) -> bool:
        """Whether this stage run completed before: a re-run with nothing new to do logs nothing twice."""
        rows = self.con.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchall()
        return bool(rows) and rows[0][0] == "finished"

    def mlflow_run_id(self, run_id: str) -> str | None:
        rows = self.con.execute("SELECT mlflow_run_id FROM runs WHERE run_id = ?", [run_id]).fetchall()
        return rows[0][0] if rows else None


def latest_run(wh: Warehouse, stage: str) -> str | None:
    """The newest finished run of a stage: how report and solve find the allocation they read."""
    rows = wh.query("SELECT run_id FROM runs WHERE stage = ? AND status = 'finished' ORDER BY finished_at DESC "
                    "LIMIT 1", [stage]).to_pylist()
    return rows[0]["run_id"] if rows else None
