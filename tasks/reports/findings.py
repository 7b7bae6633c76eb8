"""The findings report, rendered from the `findings` comparisons: a verdict table, a forest plot, details.

Nothing here decides anything: verdicts come from tasks/comparison.py, and this module
only writes them down, with the effect, interval and number of problems behind each, and
what it would take to decide the ones that are inconclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ttscale.tasks.comparison import INCONCLUSIVE, NOT_MEASURED, Comparison, claim_verdict  # noqa: E402
from ttscale.tasks.findings import Finding, headline  # noqa: E402
from ttscale.tasks.reports.bank import save_figure  # noqa: E402


def _signed(x: float) -> str:
    """Three decimals, or as many as it takes not to print a bound that excludes zero as +0.000."""
    digits = 3
    while x != 0 and round(abs(x), digits) == 0 and digits < 8:
        digits += 1
    return f"{x:+.{digits}f}"


def _effect(c: Comparison) -> str:
    if c.unit.startswith("log2"):
        return f"{2 ** c.effect:.2f}x [{2 ** c.lo:.2f}x, {2 ** c.hi:.2f}x]"
    return f"{_signed(c.effect)} [{_signed(c.lo)}, {_signed(c.hi)}]"


def _detectable(c: Comparison) -> str:
    return f"{2 ** c.detectable:.1f}x either way" if c.unit.startswith("log2") else f"±{c.detectable:.3f}"


def _room(c: Comparison) -> str:
    return f"{c.b} leaves at most {_signed(c.headroom or 0.0)} to gain, under the {_detectable(c)} these problems detect"


def _power(c: Comparison) -> str:
    """What the interval could detect, or, where B leaves less room than that, that it had too little room to show A."""
    return f"could detect {_detectable(c)}" if c.could_show else f"too little room to show A above B: {_room(c)}"


def _budget(c: Comparison) -> str:
    return f"{c.budget:g}" if c.budget else ""


def to_decide(f: Finding) -> str:
    """What deciding an inconclusive finding would take, from its deciding comparisons."""
    if f.verdict != INCONCLUSIVE:
        return ""
    measured = [c for c in f.comparisons if c.decides and c.problems]
    deciding = [c for c in measured if c.could_show]
    if not deciding:
        return (f"not testable on these problems: every deciding B leaves less room than its interval could "
                f"detect (at most {max(c.headroom or 0.0 for c in measured):+.3f}); more problems like these "
                "cannot decide it, harder ones or a smaller budget could") if measured else ""
    deciding = [c for c in deciding if c.unit == "accuracy"] or deciding
    sized = [(c.problems_to_decide, c) for c in deciding if c.problems_to_decide]
    if not sized:
        smallest = min(deciding, key=lambda c: c.detectable)
        return f"no difference seen; {smallest.problems} problems could detect {_detectable(smallest)}"
    need, c = min(sized, key=lambda t: t[0])
    return (f"the largest-looking effect ({c.a} vs {c.b}, {c.stratum}, N={_budget(c)}: {c.effect:+.3f}) would need "
            f"~{need} problems (here {c.problems}; these could detect {_detectable(c)})")


def comparison_lines(comparisons: Sequence[Comparison]) -> list[str]:
    """A stage report's statement of its finding: each claim's verdict, then its comparisons, in words."""
    claims: dict[str, list[Comparison]] = {}
    for c in comparisons:
        claims.setdefault(c.claim, []).append(c)
    lines = []
    for claim, members in claims.items():
        verdict = claim_verdict(members) if any(c.decides for c in members) else "detail"
        lines.append(f"{claim}: **{verdict}** (paired 95% intervals, Bonferroni over {members[0].family})")
        lines += [f"  - {c.a} vs {c.b} ({c.stratum}, N={_budget(c)}, {c.problems} problems): {_effect(c)}, "
                  f"{c.verdict}; {_power(c)}" for c in members]
    return lines


def findings_markdown(findings: Sequence[Finding], title: str, warnings: Sequence[str] = (),
                      plot_name: str | None = None) -> str:
    lines = [f"## {title}", ""]
    lines += [f"> **Warning:** {w}" for w in warnings] + ([""] if warnings else [])
    lines += ["Each verdict comes from paired comparisons (A is the side the paper says wins; the same problems and "
              "charged budget on both sides): **reproduced** when an interval of A - B lies above zero, "
              "**contradicted** when one lies below, **inconclusive** otherwise. Intervals are 95% paired bootstrap "
              "intervals over problems (seeds, chain sets or CV splits redrawn inside each problem), widened by "
              "Bonferroni for the comparisons a claim takes the best of.", "",
              "| # | finding (Snell et al. 2024) | verdict | headline comparison | effect A - B [95%] | problems | "
              "to decide |", "|---|---|---|---|---|---|---|"]
    for f in findings:
        h = headline(f)
        cells = ("", "", "", "") if h is None else (f"{h.a} vs {h.b} ({h.stratum}, N={_budget(h)})", _effect(h),
                                                     str(h.problems), to_decide(f))
        lines.append(f"| {f.number} | {f.claim} | **{f.verdict}** | " + " | ".join(cells) + " |")
    if plot_name:
        lines += ["", f"![forest plot of every deciding comparison]({plot_name})"]
    for f in findings:
        lines += ["", f"### {f.number}. {f.claim}: {f.verdict}", ""]
        if not f.comparisons:
            lines.append("- no stored results for this finding (its stage did not run)")
        for claim, comparisons in f.claims.items():
            decides = any(c.decides for c in comparisons)
            lines += [f"**{claim}**: " + (claim_verdict(comparisons) if decides else "detail, decides nothing"), "",
                      "| A | B | problems | N | effect A - B [interval] | confidence | could detect | verdict |",
                      "|---|---|---|---|---|---|---|---|"]
            lines += [f"| {c.a} | {c.b} | {c.stratum}: {c.problems} | {_budget(c)} | {_effect(c)} | "
                      f"{c.confidence:.4g} | {_detectable(c) if c.could_show else 'cannot show A: ' + _room(c)} | "
                      f"{c.verdict} |" for c in comparisons]
            lines.append("")
        lines += [f"- {n}" for n in f.notes]
    return "\n".join(lines) + "\n"


def plot_forest(findings: Sequence[Finding], path: Path) -> Path:
    """Effect and interval of every deciding comparison, zero marked, one row each, grouped by finding:
    accuracy differences in one panel, budget ratios (log2, 0 = the same budget) in another."""
    rows = [(f.number, c) for f in findings for c in f.comparisons if c.decides and c.verdict != NOT_MEASURED]
    panels = [(unit, [r for r in rows if r[1].unit == unit]) for unit in ("accuracy", "log2 budget ratio")]
    panels = [(u, rs) for u, rs in panels if rs] or [("accuracy", [])]
    heights = [max(2, len(rs)) for _, rs in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 0.26 * sum(heights) + 1.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights}, layout="constrained")
    colors = {"reproduced": "C2", "contradicted": "C3", "inconclusive": "0.45"}
    for ax, (unit, members) in zip(axes[:, 0], panels):
        for y, (_, c) in enumerate(reversed(members)):
            ax.errorbar([c.effect], [y], xerr=[[c.effect - c.lo], [c.hi - c.effect]], fmt="o", markersize=3,
                        capsize=2, color=colors.get(c.verdict, "k"))
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(members)), [f"{n}: {c.a} vs {c.b}, {c.stratum}, N={_budget(c)}"
                                            for n, c in reversed(members)], fontsize=6)
        ax.set_xlabel("A - B, accuracy" if unit == "accuracy" else
                      "log2(best-of-N budget needed / budget spent): 1 = 2x less budget")
        if not members:
            ax.text(0.5, 0.5, "no finding measured", ha="center", va="center", transform=ax.transAxes)
    axes[0, 0].set_title("Every deciding comparison (A: the side the paper says wins)\n"
                         "green: reproduced, red: contradicted, grey: inconclusive", fontsize=9)
    return save_figure(fig, path)
