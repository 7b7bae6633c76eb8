"""The revision report: accuracy over (budget N, chain length L), and the paper's revision findings.

Everything is read back from the warehouse views (`revision_curves`, `revision_turns`,
`revision_transitions`), so the report can be rebuilt from the warehouse alone. "Easy"
and "hard" are the task levels with the highest and lowest base-model pass@1 on the
same problems (the bank), or the revision model's first-attempt accuracy without a bank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ttscale.tasks.comparison import CONTRADICTED, REPRODUCED, Comparison, interval_verdict, paired  # noqa: E402
from ttscale.tasks.metrics import powers_of_two  # noqa: E402
from ttscale.tasks.reports.bank import save_figure  # noqa: E402
from ttscale.warehouse.store import Warehouse  # noqa: E402

PAPER_CORRECT_TO_INCORRECT = 0.38  # share of correct answers a revision turned incorrect (PAPER.md)


@dataclass
class RevisionFindings:
    rule: str
    budget: int
    curves: list[dict]  # revision_curves rows of this sweep
    turns: list[dict]  # revision_turns rows of this chain set
    transitions: dict
    base_pass: dict[int, float] = field(default_factory=dict)  # level (0 = all) -> base model pass@1
    pairs: list[dict] = field(default_factory=list)  # revision_pairs rows of this chain set

    @classmethod
    def read(cls, wh: Warehouse, chain_set_id: str, run_id: str, problem_ids: Sequence[str], bank: str,
             rule: str) -> "RevisionFindings":
        curves = wh.query("SELECT * FROM revision_curves WHERE chain_set_id = ? AND run_id = ?",
                          [chain_set_id, run_id]).to_pylist()
        turns = wh.query("SELECT * FROM revision_turns WHERE chain_set_id = ?", [chain_set_id]).to_pylist()
        transitions = (wh.query("SELECT * FROM revision_transitions WHERE chain_set_id = ?",
                                [chain_set_id]).to_pylist() or [{}])[0]
        base = wh.query("SELECT coalesce(p.level, 0) AS level, avg(c.correct::INT) AS pass_at_1 "
                        "FROM candidates c JOIN problems p USING (problem_id) "
                        "WHERE c.bank_id = ? AND list_contains(?, c.problem_id) "
                        "GROUP BY GROUPING SETS ((p.level), ()) HAVING grouping(p.level) = 1 OR p.level > 0",
                        [bank, list(problem_ids)]).to_pylist()
        pairs = wh.query("SELECT problem_id, correct, before, p_independent FROM revision_pairs "
                         "WHERE chain_set_id = ? AND p_independent IS NOT NULL", [chain_set_id]).to_pylist()
        rules = {r["rule"] for r in curves}
        return cls(rule if rule in rules else "majority_hier", max((r["budget"] for r in curves), default=1),
                   curves, turns, transitions, {r["level"]: r["pass_at_1"] for r in base if r["pass_at_1"] is not None},
                   pairs)

    def context_gain(self, after: bool) -> Comparison:
        """Attempts right after an incorrect (`after=False`) or a correct one: how often they are correct
        against how often they would be if they ignored their context (the problem's turn-0 accuracy),
        paired by problem. Above zero after an incorrect attempt means the chain uses what it saw."""
        observed: dict[str, list[float]] = {}
        chance: dict[str, list[float]] = {}
        for r in self.pairs:
            if r["before"] == after:
                observed.setdefault(r["problem_id"], []).append(float(r["correct"]))
                chance.setdefault(r["problem_id"], []).append(float(r["p_independent"]))
        return paired(observed, chance, finding=4, claim="attempts use their context", a_name="reviser",
                      b_name="independent attempts", stratum=f"after {'a correct' if after else 'an incorrect'} attempt",
                      decides=False)

    @property
    def levels(self) -> list[int]:
        return sorted({r["level"] for r in self.curves if r["level"] != 0})

    def at(self, rule: str, level: int, n: int, length: int) -> dict | None:
        return next((r for r in self.curves if (r["rule"], r["level"], r["budget"], r["length"]) ==
                     (rule, level, n, length)), None)

    def turn(self, level: int, position: int) -> dict | None:
        return next((r for r in self.turns if r["level"] == level and r["position"] == position), None)

    def difficulty_order(self) -> list[int]:
        """Levels from easiest to hardest."""
        def ease(level: int) -> float:
            if level in self.base_pass:
                return self.base_pass[level]
            first = self.turn(level, 0)
            return first["accuracy"] if first else 0.0
        return sorted(self.levels, key=ease, reverse=True)

    def measurements(self) -> list[str]:
        """How the chains behave turn by turn: what the findings report shows beside its comparisons."""
        out = []
        t = self.transitions
        if t.get("after_correct"):
            share = t["correct_to_incorrect"] / t["after_correct"]
            back = t["incorrect_to_correct"] / max(1, t["after_incorrect"])
            out.append(f"Revisions turn correct answers incorrect: {share:.1%} of attempts after a correct one "
                       f"({t['correct_to_incorrect']} of {t['after_correct']}; paper ~{PAPER_CORRECT_TO_INCORRECT:.0%}); "
                       f"incorrect to correct: {back:.1%} ({t['incorrect_to_correct']} of {t['after_incorrect']}).")
        if self.pairs:
            for after in (False, True):
                c = self.context_gain(after)
                if c.problems:
                    meaning = {"reproduced": "the chain uses what it saw", "contradicted": "what it saw hurts it",
                               }.get(c.verdict, "no evidence that its context matters")
                    out.append(f"Attempts {c.stratum} are correct {c.effect:+.3f} [{c.lo:+.3f}, {c.hi:+.3f}] more "
                               f"often than the same problems' turn-0 attempts, which see no context (paired by "
                               f"problem, {c.problems} problems): {meaning}.")
        first, fifth = self.turn(0, 0), self.turn(0, 4)
        if first:
            base = f"; the base model's pass@1 on these problems is {self.base_pass[0]:.3f}" if 0 in self.base_pass else ""
            later = (f", at turn 4 {fifth['accuracy']:.3f} ({fifth['attempts']} attempts)" if fifth
                     else " (no chain reaches turn 4 at this budget)")
            out.append(f"Chain pass@1 at turn 0: {first['accuracy']:.3f} ({first['attempts']} attempts)"
                       f"{later}{base}.")
        return out


def teacher_forced_lines(wh: Warehouse, reviser_run_id: str | None) -> list[str]:
    """The reviser's context gain as train-reviser measured it (held-out targets' loss without their context
    minus with it), all levels and per level: whether it reads its context, independent of any sampling."""
    if reviser_run_id is None:
        return []
    rows = wh.query("SELECT level, name, value FROM metrics WHERE run_id = ? AND name LIKE 'reviser_context_gain%' "
                    "ORDER BY level", [reviser_run_id]).to_pylist()
    by_level: dict[int, dict[str, float]] = {}
    for r in rows:
        by_level.setdefault(r["level"], {})[r["name"].removeprefix("reviser_context_gain")] = r["value"]
    if 0 not in by_level:
        return []
    def show(g: dict[str, float]) -> str:
        return f"{g['']:+.3f} [{g['_lo']:+.3f}, {g['_hi']:+.3f}]"
    whole = by_level[0]
    verdict = {REPRODUCED: "it reads its context", CONTRADICTED: "its context hurts it"}.get(
        interval_verdict(whole["_lo"], whole["_hi"], int(whole["_problems"])), "no evidence that it reads its context")
    levels = "; ".join(f"level {lv} {show(g)}" for lv, g in sorted(by_level.items()) if lv)
    return [f"Teacher-forced context gain (train-reviser: held-out correct targets' loss without their context minus "
            f"with it, nats per target, paired by problem, {int(whole['_problems'])} test problems): {show(whole)}, "
            f"{verdict} ({levels})."]


def _fmt(r: dict) -> str:
    return f"{r['accuracy']:.3f} [{r['lo']:.2f}, {r['hi']:.2f}]"


def revision_metrics(found: RevisionFindings) -> list[tuple[str, float, int]]:
    """MLflow metrics: one curve over L per (rule, N, level), turn accuracy over positions."""
    out = [(f"revision/{r['rule']}/N{r['budget']}" + ("" if r["level"] == 0 else f"/level_{r['level']}"),
            r["accuracy"], int(r["length"])) for r in found.curves]
    out += [("revision_turn_accuracy" + ("" if r["level"] == 0 else f"/level_{r['level']}"), r["accuracy"],
             int(r["position"])) for r in found.turns]
    t = found.transitions
    if t.get("after_correct"):
        out += [("revision_correct_to_incorrect", t["correct_to_incorrect"] / t["after_correct"], 0),
                ("revision_incorrect_to_correct", t["incorrect_to_correct"] / max(1, t["after_incorrect"]), 0)]
    if t.get("after_incorrect") and t.get("independent_incorrect_to_correct") is not None:
        out.append(("revision_incorrect_to_correct_if_independent",
                    t["independent_incorrect_to_correct"] / t["after_incorrect"], 0))
    return out


def revision_markdown(found: RevisionFindings, title: str, statements: Sequence[str]) -> str:
    n = found.budget
    lengths = powers_of_two(n)
    lines = [f"## {title}", "", *[f"- {s}" for s in statements], "",
             f"Accuracy at N={n} by chain length L (N/L chains), all levels, 95% Wilson intervals:", ""]
    head = ["rule"] + [f"L={length}" for length in lengths]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rule in sorted({r["rule"] for r in found.curves}):
        cells = [_fmt(r) if (r := found.at(rule, 0, n, length)) else "" for length in lengths]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    lines += ["", f"{found.rule} at N={n} per level (easiest first):", ""]
    head = ["level", "base pass@1"] + [f"L={length}" for length in lengths]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for level in found.difficulty_order():
        cells = [_fmt(r) if (r := found.at(found.rule, level, n, length)) else "" for length in lengths]
        base = found.base_pass.get(level)
        lines.append(f"| {level} | {'' if base is None else f'{base:.3f}'} | " + " | ".join(cells) + " |")
    positions = sorted({r["position"] for r in found.turns})
    lines += ["", "Accuracy of the t-th attempt (all levels):", "",
              "| " + " | ".join(f"t={p}" for p in positions) + " |", "|" + "---|" * len(positions),
              "| " + " | ".join(f"{found.turn(0, p)['accuracy']:.3f}" for p in positions) + " |"]
    return "\n".join(lines) + "\n"


def plot_heatmaps(found: RevisionFindings, path: Path) -> Path:
    """Accuracy over (N, L) for the report's rule: one panel for all levels, one per level."""
    ns = powers_of_two(found.budget)
    panels = [0] + found.levels
    # constrained layout: one colorbar spans every panel, which tight_layout cannot place
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 0.6, 2.8), squeeze=False,
                             layout="constrained")
    for ax, level in zip(axes[0], panels):
        grid = np.full((len(ns), len(ns)), np.nan)
        for i, length in enumerate(ns):
            for j, n in enumerate(ns):
                if (r := found.at(found.rule, level, n, length)) is not None:
                    grid[i, j] = r["accuracy"]
                    ax.text(j, i, f"{r['accuracy']:.2f}", ha="center", va="center", fontsize=7)
        image = ax.imshow(grid, origin="lower", vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(ns)), [str(n) for n in ns])
        ax.set_yticks(range(len(ns)), [str(length) for length in ns])
        ax.set(title="all levels" if level == 0 else f"level {level}", xlabel="budget N")
    axes[0][0].set_ylabel("chain length L")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=f"accuracy ({found.rule})")
    fig.suptitle("Sequential (large L) vs parallel (L=1) revisions", fontsize=9)
    return save_figure(fig, path)
