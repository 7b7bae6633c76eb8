"""The search report: accuracy vs budget per strategy, headed by the paired comparisons of findings 2 and 3.

Reads rows of the `accuracy_vs_budget` view, so the report can be rebuilt from the
warehouse alone. Budgets on the x axis are in the paper's unit (`charged`: N, or N(k+1)
for lookahead); the same curves against tokens and FLOPs come from the stored counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ttscale.tasks.reports.bank import save_figure  # noqa: E402

def variant(row: dict) -> str:
    return {"majority": "majority", "best_of_n": "best-of-N", "beam": f"beam M={row['width']}", "dvts": f"DVTS M={row['width']}",
            "lookahead": f"lookahead M={row['width']} k={row['lookahead']}"}[row["strategy"]]


def parse_variant(label: str) -> tuple[str, int, int]:
    """(strategy, M, k) back from a `variant` label: how a served policy's choice becomes a search run."""
    words = label.split()
    names = {"majority": "majority", "best-of-N": "best_of_n", "beam": "beam", "DVTS": "dvts", "lookahead": "lookahead"}
    if not words or words[0] not in names:
        raise ValueError(f"not a search strategy label: {label!r}")
    fields = dict(w.split("=") for w in words[1:])
    return names[words[0]], int(fields.get("M", 1)), int(fields.get("k", 0))


def _series(rows: Sequence[dict], level: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["budget"]):
        if r["level"] == level:
            out.setdefault(variant(r), []).append(r)
    return out


def search_metrics(rows: Sequence[dict]) -> list[tuple[str, float, int]]:
    """MLflow metrics with step = charged budget, one curve per strategy variant and level."""
    out = []
    for r in rows:
        name = variant(r).replace(" ", "_").replace("=", "")
        suffix = "" if r["level"] == 0 else f"/level_{r['level']}"
        out.append((f"search/{name}{suffix}", r["accuracy"], int(r["charged"])))
    return out


def search_markdown(rows: Sequence[dict], title: str, statements: Sequence[str]) -> str:
    levels = sorted({r["level"] for r in rows})
    budgets = sorted({r["budget"] for r in rows})
    lines = [f"## {title}", "", *[f"- {s}" for s in statements], ""]
    head = ["level", "strategy"] + [f"N={n}" for n in budgets] + ["tokens/problem at max N"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for level in levels:
        for name, series in _series(rows, level).items():
            by_n = {r["budget"]: r for r in series}
            cells = [f"{by_n[n]['accuracy']:.3f}" if n in by_n else "" for n in budgets]
            lines.append(f"| {'all' if level == 0 else level} | {name} | " + " | ".join(cells)
                         + f" | {series[-1]['tokens_per_problem']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_search(rows: Sequence[dict], path: Path) -> Path:
    """Accuracy vs charged budget per level, and (all levels) vs tokens and FLOPs per problem."""
    levels = sorted({r["level"] for r in rows})
    fig, axes = plt.subplots(1, len(levels) + 2, figsize=(3.2 * (len(levels) + 2), 3.4), squeeze=False)
    for ax, level in zip(axes[0], levels):
        for name, series in _series(rows, level).items():
            ax.errorbar([r["charged"] for r in series], [r["accuracy"] for r in series],
                        yerr=[[max(0.0, r["accuracy"] - r["lo"]) for r in series],
                              [max(0.0, r["hi"] - r["accuracy"]) for r in series]],
                        marker=".", capsize=2, label=name)
        ax.set_xscale("log", base=2)
        ax.set(title="all levels" if level == 0 else f"level {level}", xlabel="generation budget", ylim=(0, 1.02))
    for ax, key, label in ((axes[0][-2], "tokens_per_problem", "tokens per problem"),
                           (axes[0][-1], "flops_per_problem", "FLOPs per problem")):
        for name, series in _series(rows, 0).items():
            ax.plot([r[key] for r in series], [r["accuracy"] for r in series], marker=".", label=name)
        ax.set_xscale("log")
        ax.set(title=f"all levels vs {label}", xlabel=label, ylim=(0, 1.02))
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=6, loc="lower right")
    return save_figure(fig, path)
