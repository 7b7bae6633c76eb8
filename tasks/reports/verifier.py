"""How good is the verifier: PRM quality against held-out MC labels, and selection curves.

Quality: step-level AUC (a step counts as good when most of its rollouts succeeded) and
calibration (predicted value vs the MC label, in ten bins) on problems the PRM never
trained on. Curves: accuracy vs N per rule, aggregation and level, read back from the
warehouse's `selection_curves`, as a markdown table, MLflow metrics and plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ttscale.tasks.reports.bank import save_figure  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from ttscale.tasks.selection import CurvePoint, aggregate  # noqa: E402

RULE_STYLE = {"oracle": ("pass@N (oracle)", "k", ":"), "majority": ("majority", "C1", "-"),
              "weighted": ("best-of-N weighted", "C2", "-"), "best_of_n": ("best-of-N", "C3", "--")}


@dataclass(frozen=True)
class Quality:
    auc: float
    ece: float
    brier: float
    steps: int
    bins: list[tuple[float, float, int]]  # (mean prediction, mean label, count) per bin

    def metrics(self) -> list[tuple[str, float]]:
        return [("prm_step_auc", self.auc), ("prm_ece", self.ece), ("prm_brier", self.brier),
                ("prm_val_steps", float(self.steps))]

    def metrics_table(self, run_id: str) -> pa.Table:
        return pa.Table.from_pylist([{"run_id": run_id, "name": name, "level": 0, "k": 0, "value": float(v)}
                                     for name, v in self.metrics()])


def quality(predictions: Sequence[float], labels: Sequence[float], n_bins: int = 10) -> Quality:
    pred, gold = np.asarray(predictions, float), np.asarray(labels, float)
    positive = gold >= 0.5
    auc = float(roc_auc_score(positive, pred)) if 0 < positive.sum() < len(positive) else float("nan")
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(pred, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            bins.append((float(pred[sel].mean()), float(gold[sel].mean()), int(sel.sum())))
            ece += sel.mean() * abs(pred[sel].mean() - gold[sel].mean())
    return Quality(auc, float(ece), float(((pred - gold) ** 2).mean()), len(pred), bins)


def plot_calibration(q: Quality, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    ax.plot([b[0] for b in q.bins], [b[1] for b in q.bins], "o-", label=f"PRM (ECE {q.ece:.3f})")
    ax.set(xlabel="predicted step value", ylabel="MC label (held-out problems)", xlim=(0, 1), ylim=(0, 1),
           title=f"PRM calibration, step AUC {q.auc:.3f}")
    ax.legend(loc="upper left")
    return save_figure(fig, path)


def curves_table(points: Sequence[CurvePoint], bank: str, scorer: str, run_id: str, resamples: int) -> pa.Table:
    return pa.Table.from_pylist([
        {"bank_id": bank, "scorer_id": scorer, "run_id": run_id, "rule": p.rule, "aggregation": p.aggregation,
         "level": p.level, "n": p.n, "accuracy": p.accuracy, "lo": p.lo, "hi": p.hi, "resamples": resamples,
         "problems": p.problems} for p in points
    ])


def points_from_table(table: pa.Table) -> list[CurvePoint]:
    return [CurvePoint(r["rule"], r["aggregation"], r["level"], r["n"], r["accuracy"], r["lo"], r["hi"],
                       r["problems"]) for r in table.to_pylist()]


def curve_metrics(points: Sequence[CurvePoint], prefix: str = "") -> list[tuple[str, float, int]]:
    """MLflow metrics with step = N, so MLflow's UI draws each as a curve over the budget."""
    out = []
    for p in points:
        name = p.rule if p.aggregation == "-" else f"{p.rule}_{p.aggregation}"
        suffix = "" if p.level == 0 else f"/level_{p.level}"
        out += [(f"{prefix}verifier/{name}{suffix}", p.accuracy, p.n)]
    return out


def _index(points: Sequence[CurvePoint]) -> dict[tuple[str, str, int, int], CurvePoint]:
    return {(p.rule, p.aggregation, p.level, p.n): p for p in points}


def curves_markdown(points: Sequence[CurvePoint], title: str, q: Quality | None = None,
                    bank_auc: float | None = None, statements: Sequence[str] = ()) -> str:
    idx = _index(points)
    ns = sorted({p.n for p in points})
    shown = [n for n in ns if n in (1, 4, 16, 64, 256) or n == ns[-1]]
    aggs = sorted({p.aggregation for p in points if p.aggregation != "-"})
    lines = [f"## {title}", ""]
    if q is not None:
        lines += [f"PRM on held-out problems: step AUC {q.auc:.3f}, ECE {q.ece:.3f}, Brier {q.brier:.3f} "
                  f"({q.steps} steps).", ""]
    if bank_auc is not None:
        lines += [f"Within-problem AUC of the last-step score vs correctness on the bank: {bank_auc:.3f} "
                  "(0.5 = no better than chance at telling a problem's right candidates from its wrong ones).", ""]
    lines += [f"- {s}" for s in statements] + [""]
    combos = [("oracle", "-"), ("majority", "-")] + [(r, a) for r in ("weighted", "best_of_n") for a in aggs]
    head = ["level", "rule"] + [f"N={n}" for n in shown]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for level in sorted({p.level for p in points}):
        for rule, agg in combos:
            cells = []
            for n in shown:
                p = idx.get((rule, agg, level, n))
                cells.append("" if p is None else f"{p.accuracy:.3f} [{p.lo:.2f}, {p.hi:.2f}]")
            name = rule if agg == "-" else f"{rule} ({agg})"
            lines.append(f"| {'all' if level == 0 else level} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


BASELINE_COLORS = {"confidence": "C4", "oracle": "C7", "random": "C5"}


def plot_curves(points: Sequence[CurvePoint], path: Path, aggregation: str = "last",
                baselines: dict[str, Sequence[CurvePoint]] | None = None) -> Path:
    """One panel per level (and all): each rule's accuracy vs N with its interval band, and each
    baseline scorer's best-of-N weighted as a thin line (what the PRM has to beat, and the ceiling)."""
    levels = sorted({p.level for p in points})
    fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.4), sharey=True, squeeze=False)
    for ax, level in zip(axes[0], levels):
        for rule, (label, color, line) in RULE_STYLE.items():
            agg = "-" if rule in ("oracle", "majority") else aggregation
            pts = sorted((p for p in points if p.rule == rule and p.aggregation == agg and p.level == level),
                         key=lambda p: p.n)
            if not pts:
                continue
            ns = [p.n for p in pts]
            ax.plot(ns, [p.accuracy for p in pts], color=color, linestyle=line, marker=".", label=label)
            ax.fill_between(ns, [p.lo for p in pts], [p.hi for p in pts], color=color, alpha=0.15)
        for name, others in (baselines or {}).items():
            pts = sorted((p for p in others if p.rule == "weighted" and p.aggregation == aggregation
                          and p.level == level), key=lambda p: p.n)
            ax.plot([p.n for p in pts], [p.accuracy for p in pts], color=BASELINE_COLORS.get(name, "C9"), lw=1,
                    linestyle="-.", label=f"weighted, {name} scorer")
        ax.set_xscale("log", base=2)
        ax.set(title="all levels" if level == 0 else f"level {level}", xlabel="N (samples)", ylim=(0, 1.02))
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


@dataclass(frozen=True)
class Diagnosis:
    """What the PRM knows within a problem, per level (0 = all), checked against exact step truth."""

    within_auc: dict[int, float]  # right vs wrong candidates of one problem, averaged over problems
    first_error_auc: dict[int, float]  # the first wrong step vs the right steps before it (1 - score)
    argmax_errors: dict[str, float]  # first-error kinds of the wrong candidates the PRM ranks first
    wrong_errors: dict[str, float]  # first-error kinds of all wrong candidates
    has_step_truth: bool = True  # False on tasks without exact step checks (GSM8K, HumanEval, ...)

    def metrics(self) -> list[tuple[str, int, float]]:
        out = [("within_problem_auc", lv, v) for lv, v in self.within_auc.items()]
        out += [("first_error_auc", lv, v) for lv, v in self.first_error_auc.items()]
        out += [(f"argmax_first_error/{k}", 0, v) for k, v in self.argmax_errors.items()]
        out += [(f"wrong_first_error/{k}", 0, v) for k, v in self.wrong_errors.items()]
        return out

    def metrics_table(self, run_id: str, prefix: str = "") -> pa.Table:
        return pa.Table.from_pylist([{"run_id": run_id, "name": prefix + n, "level": lv, "k": 0, "value": float(v)}
                                     for n, lv, v in self.metrics() if v == v])  # NaN: nothing to measure

    def markdown(self) -> list[str]:
        levels = sorted(set(self.within_auc) | set(self.first_error_auc))
        if not self.has_step_truth:  # no exact step checks on this task: only right vs wrong candidates
            return ["Within a problem (right vs wrong candidates of one problem; 0.5 = chance):", "",
                    "| level | within-problem AUC |", "|---|---|"] + [
                    f"| {'all' if lv == 0 else lv} | {self.within_auc[lv]:.3f} |" for lv in levels]
        lines = ["Within a problem, against exact step checks (0.5 = chance):", "",
                 "| level | within-problem AUC | first-error AUC |", "|---|---|---|"]
        lines += [f"| {'all' if lv == 0 else lv} | {self.within_auc.get(lv, float('nan')):.3f} | "
                  f"{self.first_error_auc.get(lv, float('nan')):.3f} |" for lv in levels]
        kinds = sorted(set(self.argmax_errors) | set(self.wrong_errors))
        lines += ["", "First error of the wrong candidates the PRM ranks first in their problem, against all wrong "
                  "candidates (a kind the PRM favours is over-represented on the left):", "",
                  "| first error | ranked first | all wrong |", "|---|---|---|"]
        lines += [f"| {k} | {self.argmax_errors.get(k, 0.0):.1%} | {self.wrong_errors.get(k, 0.0):.1%} |" for k in kinds]
        return lines


def diagnose(rows: Sequence[dict], aggregation: str = "last") -> Diagnosis:
    """`rows`: one per candidate with problem_id, level, correct, scores (per step) and errors (per step,
    None = right). Candidates without step truth (other tasks) have errors of None and add nothing to
    the first-error AUC."""
    by_problem: dict[str, list[dict]] = {}
    for r in rows:
        by_problem.setdefault(r["problem_id"], []).append(r)

    within: dict[int, list[float]] = {}
    first: dict[int, tuple[list[int], list[float]]] = {}
    ranked_first: list[str] = []
    wrong: list[str] = []
    for members in by_problem.values():
        level = members[0]["level"]
        correct = np.array([bool(r["correct"]) for r in members])
        scores = np.array([aggregate(r["scores"] or [], aggregation) for r in members])
        if 0 < correct.sum() < len(correct):
            auc = float(roc_auc_score(correct, scores))
            for key in {0, level}:  # a problem without a level (0) counts once, under all
                within.setdefault(key, []).append(auc)
        for r in members:
            errors = list(r["errors"] or [])
            at = next((i for i, e in enumerate(errors) if e is not None), None)
            if at is None or not r["scores"] or at >= len(r["scores"]):
                continue
            labels, risk = first.setdefault(level, ([], []))
            labels += [0] * at + [1]
            risk += [1.0 - x for x in r["scores"][: at + 1]]
            if not r["correct"]:
                wrong.append(errors[at])
        top = members[int(scores.argmax())]
        errors = [e for e in (top["errors"] or []) if e is not None]
        if not top["correct"] and errors:
            ranked_first.append(errors[0])
    first_auc = {lv: float(roc_auc_score(y, x)) for lv, (y, x) in first.items() if 0 < sum(y) < len(y)}
    pooled = [(y, x) for lv, (ys, xs) in first.items() for y, x in zip(ys, xs)]
    if pooled and 0 < sum(y for y, _ in pooled) < len(pooled):
        first_auc[0] = float(roc_auc_score([y for y, _ in pooled], [x for _, x in pooled]))

    def shares(kinds: list[str]) -> dict[str, float]:
        return {k: kinds.count(k) / len(kinds) for k in sorted(set(kinds))} if kinds else {}

    return Diagnosis({lv: float(np.mean(v)) for lv, v in sorted(within.items())}, dict(sorted(first_auc.items())),
                     shares(ranked_first), shares(wrong), has_step_truth=any(r["errors"] for r in rows))
