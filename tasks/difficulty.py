"""Difficulty: oracle bins from the base model's pass@1, predicted bins from the PRM, and how well they agree.

Both are quantile bins over the same problems (bin 1 easiest). The oracle needs the
reference answer; the predicted bins need only the PRM's final-step scores of some
samples, which is what a deployed system can afford, and what those samples and the
PRM's reading cost is part of the result (PAPER.md, "Difficulty").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from scipy.stats import spearmanr

from ttscale.tasks.sampling import stable_hash


def quantile_bins(values: Mapping[str, float], bins: int, seed: int = 0) -> dict[str, int]:
    """Equal-size bins by value, higher value = easier = lower bin; ties broken by a seeded hash, not by id."""
    order = sorted(values, key=lambda pid: (-values[pid], stable_hash(seed, pid)))
    n = len(order)
    return {pid: 1 + (i * bins) // n for i, pid in enumerate(order)}


@dataclass(frozen=True)
class Agreement:
    exact: float  # share of problems in the same bin
    within_one: float  # share at most one bin apart
    spearman: float  # rank correlation of the two difficulty values
    problems: int


def agreement(oracle: Mapping[str, float], predicted: Mapping[str, float], bins: int, seed: int = 0) -> Agreement:
    common = sorted(set(oracle) & set(predicted))
    if not common:
        return Agreement(float("nan"), float("nan"), float("nan"), 0)
    ob = quantile_bins({p: oracle[p] for p in common}, bins, seed)
    pb = quantile_bins({p: predicted[p] for p in common}, bins, seed)
    gap = np.array([abs(ob[p] - pb[p]) for p in common])
    a, b = np.array([oracle[p] for p in common]), np.array([predicted[p] for p in common])
    constant = len(common) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0  # a rank correlation is undefined then
    rho = np.nan if constant else spearmanr(a, b).statistic
    return Agreement(float((gap == 0).mean()), float((gap <= 1).mean()), float(rho), len(common))


DIFFICULTY_SCHEMA = pa.schema([
    ("bank_id", pa.string()), ("scorer_id", pa.string()), ("run_id", pa.string()), ("problem_id", pa.string()),
    ("kind", pa.string()), ("value", pa.float64()), ("bin", pa.int32()), ("samples", pa.int32()),
    ("tokens", pa.int64()), ("flops", pa.float64()),
])


def difficulty_table(rows: Sequence[dict], kind: str, bins: int, bank: str, scorer_id: str, run_id: str,
                     seed: int = 0) -> pa.Table:
    """rows: problem_id, value, samples, tokens, flops (what estimating this problem's difficulty cost)."""
    assigned = quantile_bins({r["problem_id"]: r["value"] for r in rows}, bins, seed)
    return pa.Table.from_pylist(
        [{**{k: r[k] for k in ("problem_id", "value", "samples", "tokens", "flops")}, "bank_id": bank,
          "scorer_id": scorer_id, "run_id": run_id, "kind": kind, "bin": assigned[r["problem_id"]]} for r in rows],
        schema=DIFFICULTY_SCHEMA)
