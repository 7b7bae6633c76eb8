"""Parquet shards: how workers on other machines hand rows to the one warehouse writer.

DuckDB allows one read-write process per file, so a worker never opens the warehouse.
It writes each finished chunk as a folder of Parquet files, one per table, under
`<workdir>/shards/<stage>/<group>/` (a group is a bank, a label bank or a search
context), first as `<chunk>.tmp` and then renamed: a rename is atomic, so a reader sees
a whole chunk or none, and a killed worker leaves only a `.tmp` folder
that its re-run overwrites. `load_shards` (one process) ingests every chunk not loaded
yet, each in one transaction, and records it in `loaded_shards`, so loading twice adds
nothing. The workdir may be a shared mount (NFS); readers can also query the shards
directly with DuckDB's `read_parquet`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from ttscale.warehouse.store import Warehouse

# Tables a worker may write, in the order a chunk loads them (problems before the rows that name them).
LOAD_ORDER = ("problems", "candidates", "steps", "step_labels", "search_nodes", "selections")
T = TypeVar("T")


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


def pending_chunks(root: Path, chunks: Sequence[tuple[str, T]]) -> list[tuple[str, T]]:
    """The (chunk id, work) pairs whose folders are not written yet: what a re-run worker still owes."""
    done = written_chunks(root)
    return [(cid, work) for cid, work in chunks if cid not in done]


def load_shards(wh: Warehouse, root: Path, order: tuple[str, ...] = LOAD_ORDER) -> dict[str, int]:
    """Ingest every complete chunk under root that is not loaded yet; returns rows added per table."""
    loaded = set(wh.query("SELECT path FROM loaded_shards").column("path").to_pylist())
    added: dict[str, int] = {}
    for chunk in sorted(written_chunks(root)):
        folder = root / chunk
        if str(folder) in loaded:
            continue
        with wh.transaction():
            unknown = {f.stem for f in folder.glob("*.parquet")} - set(order)
            if unknown:
                raise ValueError(f"shard {folder} holds tables {sorted(unknown)} that load-shards does not know; "
                                 "was it written by a newer ttscale? nothing of it was loaded")
            for table in order:
                file = folder / f"{table}.parquet"
                if file.exists():
                    added[table] = added.get(table, 0) + wh.insert(table, pq.read_table(file))
            wh.insert("loaded_shards", pa.Table.from_pylist([{
                "path": str(folder), "loaded_at": datetime.now(timezone.utc).replace(tzinfo=None)}]))
    return added
