"""Parquet shards: how workers on other machines hand rows to the one warehouse writer.

DuckDB allows one read-write process per file, so a worker never opens the warehouse.
It writes each finished chunk as a folder of Parquet files, one per table, under
`<workdir>/shards/<stage>/`, first as `<chunk>.tmp` and then renamed: a rename is atomic,
so a reader sees a whole chunk or none, and a killed worker leaves only a `.tmp` folder
that its re-run overwrites. `load_shards` (one process) ingests every chunk not loaded
yet, each in one transaction, and records it in `loaded_shards`, so loading twice adds
nothing. The workdir may be a shared mount (NFS); readers can also query the shards
directly with DuckDB's `read_parquet`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.store import Warehouse


def write_chunk(root: Path, chunk_id: str, tables: Mapping[str, pa.Table]) -> Path:
    """Write one chunk's tables as Parquet, atomically (temp folder, then rename)."""
    final = root / chunk_id
    tmp = root / f"{chunk_id}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for table, rows in tables.items():
        pq.write_table(rows, tmp / f"{table}.parquet")
    os.replace(tmp, final)
    return final


def written_chunks(root: Path) -> set[str]:
    """Chunk ids whose folders are complete (renamed)."""
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")} if root.is_dir() else set()


def load_shards(wh: Warehouse, root: Path, order: tuple[str, ...] = ("candidates", "steps")) -> dict[str, int]:
    """Ingest every complete chunk under root that is not loaded yet; returns rows added per table."""
    loaded = set(wh.query("SELECT path FROM loaded_shards").column("path").to_pylist())
    added: dict[str, int] = {}
    for chunk in sorted(written_chunks(root)):
        folder = root / chunk
        if str(folder) in loaded:
            continue
        with wh.transaction():
            for table in order:
                file = folder / f"{table}.parquet"
                if file.exists():
                    added[table] = added.get(table, 0) + wh.insert(table, pq.read_table(file))
            wh.insert("loaded_shards", pa.Table.from_pylist([{
                "path": str(folder), "loaded_at": datetime.now(timezone.utc).replace(tzinfo=None)}]))
    return added
