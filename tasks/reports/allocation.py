"""The allocation report: the compute-optimal policy, what it saves over best-of-N, the global allocator.

Reads `allocation_results`, `allocation_policy` and `difficulty` back from the
warehouse, so it can be rebuilt from the warehouse alone. Whether the policy beats
best-of-N is said by the paired comparisons it is given (tasks/findings.py), never by
the point estimates in its table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ttscale.tasks.difficulty import Agreement  # noqa: E402
from ttscale.tasks.reports.bank import save_figure  # noqa: E402

def _ratio(r: dict, key: str) -> str:
    return f"{r['censored']}{r[key]:.2f}x"


def allocator_lines(results: Sequence[dict]) -> list[str]:
    """The global allocator against the per-bin policy at equal total compute (descriptive: no interval)."""
    out = []
    for source in sorted({r["source"] for r in results}):
        rows = [r for r in results if (r["source"], r["bin_kind"]) == (source, "predicted")]
        if rows:
            out.append(f"Global allocator ({source}, predicted bins) vs the per-bin policy at equal total compute, "
                       "point estimates: " + ", ".join(
                           f"N={r['budget']} {r['allocator_free_accuracy']:.3f} vs {r['uniform_accuracy']:.3f}"
                           for r in rows) + "; paying for its difficulty estimate out of the same total: "
                       + ", ".join(f"N={r['budget']} {r['allocator_accuracy']:.3f}" for r in rows) + ".")
    return out


def allocation_markdown(results: Sequence[dict], policy: Sequence[dict], agree: Agreement, costs: dict[str, float],
                        title: str, statements: Sequence[str]) -> str:
    lines = [f"## {title}", "",
             f"- Predicted difficulty bins agree with oracle bins on {agree.exact:.0%} of {agree.problems} problems "
             f"({agree.within_one:.0%} within one bin; Spearman {agree.spearman:.2f}). Estimating costs "
             f"{costs.get('predicted', float('nan')):.3g} FLOPs per problem for the prediction, "
             f"{costs.get('oracle', float('nan')):.3g} for the oracle.",
             *[f"- {s}" for s in [*statements, *allocator_lines(results)]], ""]
    head = ["source", "bins", "N", "compute-optimal", "best-of-N", "BoN-equivalent N", "ratio (point)", "ratio charged",
            "allocator", "allocator charged", "per-bin policy"]
    lines += ["Held-out accuracy (2-fold cross-validation, averaged over splits):", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lines.append(f"| {r['source']} | {r['bin_kind']} | {r['budget']} | {r['optimal_accuracy']:.3f} "
                     f"[{r['optimal_lo']:.2f}, {r['optimal_hi']:.2f}] | "
                     f"{r['baseline_accuracy']:.3f} | {r['censored']}{r['equivalent_budget']:.1f} | {_ratio(r, 'ratio')} | "
                     f"{_ratio(r, 'ratio_charged')} | {r['allocator_free_accuracy']:.3f} | {r['allocator_accuracy']:.3f} | "
                     f"{r['uniform_accuracy']:.3f} |")
    for source in sorted({p["source"] for p in policy}):
        rows = [p for p in policy if p["source"] == source and p["bin_kind"] == "oracle"]
        budgets = sorted({p["budget"] for p in rows})
        lines += ["", f"Policy ({source}, oracle bins, fitted on all problems; bin 1 easiest):", "",
                  "| bin | " + " | ".join(f"N={n}" for n in budgets) + " |", "|" + "---|" * (len(budgets) + 1)]
        for b in sorted({p["bin"] for p in rows}):
            by_n = {p["budget"]: p for p in rows if p["bin"] == b}
            lines.append(f"| {b} | " + " | ".join(f"{by_n[n]['strategy']} ({by_n[n]['accuracy']:.2f})" if n in by_n
                                                   else "" for n in budgets) + " |")
    return "\n".join(lines) + "\n"


def plot_allocation(results: Sequence[dict], path: Path) -> Path:
    sources = sorted({r["source"] for r in results})
    fig, axes = plt.subplots(1, max(1, len(sources)), figsize=(4.2 * max(1, len(sources)), 3.4), squeeze=False)
    for ax, source in zip(axes[0], sources):
        rows = [r for r in results if r["source"] == source]
        for kind, style in (("oracle", "-o"), ("predicted", "--s")):
            series = sorted((r for r in rows if r["bin_kind"] == kind), key=lambda r: r["budget"])
            if series:
                ax.plot([r["budget"] for r in series], [r["optimal_accuracy"] for r in series], style,
                        label=f"compute-optimal ({kind} bins)")
                if kind == "predicted":
                    ax.plot([r["budget"] for r in series], [r["allocator_free_accuracy"] for r in series], ":^",
                            label="global allocator")
        base = sorted((r for r in rows if r["bin_kind"] == "oracle"), key=lambda r: r["budget"])
        ax.plot([r["budget"] for r in base], [r["baseline_accuracy"] for r in base], "-k.", label="best-of-N")
        ax.set_xscale("log", base=2)
        ax.set(title=source, xlabel="generation budget N", ylabel="held-out accuracy", ylim=(0, 1.02))
        ax.legend(fontsize=6, loc="lower right")
    return save_figure(fig, path)
