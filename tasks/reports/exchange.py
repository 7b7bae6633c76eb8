"""The exchange report: per R and difficulty bin, the small model with test-time compute vs the larger model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ttscale.tasks.reports.bank import save_figure  # noqa: E402


def exchange_markdown(rows: Sequence[dict], small_params: float, large_params: float, small_tokens: float,
                      large_tokens: float, token_ratio: float, title: str) -> str:
    lines = [f"## {title}", "",
             f"Small model {small_params:,.0f} parameters, larger model {large_params:,.0f} "
             f"({large_params / small_params:.1f}x), pretrained on {small_tokens:,.0f} and {large_tokens:,.0f} tokens. "
             f"At each R the small model may draw N = (3(k-1)/R + k) x {token_ratio:.2f} samples per problem (the "
             "last factor: stored tokens of a large-model answer over those of a small-model sample), resampled "
             "exactly (a fractional N mixes the two sizes around it); '>=' marks figures cut to the samples the "
             "bank holds (lower bounds). Bins come from half of each problem's samples and accuracy from the "
             "other half; the winner is decided by the paired interval (undecided when it holds zero).", ""]
    for ratio in sorted({r["ratio"] for r in rows}):
        overall = next(r for r in rows if r["ratio"] == ratio and r["bin"] == 0)
        wins = [r["bin"] for r in rows if r["ratio"] == ratio and r["bin"] and r["winner"] == "test-time compute"]
        lines.append(f"- R = {ratio:g}: matched N = {overall['matched_samples']:.1f} (used {overall['samples_used']:.1f}"
                     f"{', a lower bound' if overall['lower_bound'] else ''}); all problems: small compute-optimal "
                     f"{overall['small_optimal']:.3f} (best-of-N weighted {overall['small_weighted']:.3f}, majority "
                     f"{overall['small_majority']:.3f}) vs larger model "
                     f"greedy {overall['large_greedy']:.3f} [{overall['large_lo']:.2f}, {overall['large_hi']:.2f}] "
                     f"on {overall['problems']} problems: {overall['winner']}; test-time compute wins (interval above zero) in bins "
                     f"{wins or 'none'}.")
    head = ["R", "bin", "N matched", "N used", "small compute-optimal", "small weighted", "small majority",
            "large greedy", "winner"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mark = ">=" if r["lower_bound"] else ""
        lines.append(f"| {r['ratio']:g} | {'all' if r['bin'] == 0 else r['bin']} | {r['matched_samples']:.1f} | "
                     f"{r['samples_used']:.1f} | {mark}{r['small_optimal']:.3f} | {mark}{r['small_weighted']:.3f} | "
                     f"{mark}{r['small_majority']:.3f} | "
                     f"{r['large_greedy']:.3f} [{r['large_lo']:.2f}, {r['large_hi']:.2f}] | {r['winner']} |")
    return "\n".join(lines) + "\n"


def plot_exchange(rows: Sequence[dict], path: Path) -> Path:
    ratios = sorted({r["ratio"] for r in rows})
    fig, axes = plt.subplots(1, len(ratios), figsize=(3.6 * len(ratios), 3.2), squeeze=False, sharey=True)
    for ax, ratio in zip(axes[0], ratios):
        sub = sorted((r for r in rows if r["ratio"] == ratio), key=lambda r: r["bin"])
        xs = range(len(sub))
        ax.bar([x - 0.2 for x in xs], [r["small_optimal"] for r in sub], 0.4, label="small + compute-optimal")
        ax.bar([x + 0.2 for x in xs], [r["large_greedy"] for r in sub], 0.4, label="larger model, greedy")
        ax.set_xticks(list(xs), ["all" if r["bin"] == 0 else str(r["bin"]) for r in sub])
        ax.set(title=f"R = {ratio:g} (N = {sub[0]['samples_used']:.1f})", xlabel="difficulty bin", ylim=(0, 1.02))
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=6)
    return save_figure(fig, path)
