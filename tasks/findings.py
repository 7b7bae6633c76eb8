"""The paper's six findings, each stated as reproduced, not reproduced, or not measured.

Each finding reads what its stage stored and reuses that stage's own statement, so the
summary and the stage reports cannot disagree. The six (PAPER.md): (1) PRM-weighted
selection beats majority; (2) beam search beats best-of-N at small budgets and (3) falls
behind on easy problems at large ones, while lookahead loses at equal budget;
(4) sequential revisions win on easy problems and a mix on hard ones; (5) compute-optimal
scaling matches best-of-N with up to 4x less budget; (6) at matched FLOPs, test-time
compute beats a 14x larger model at small R on easy and medium problems, pretraining wins
at large R and on the hardest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured"


@dataclass(frozen=True)
class Finding:
    number: int
    claim: str
    verdict: str
    evidence: tuple[str, ...]


def verifier_finding(verdicts: Sequence[str]) -> Finding:
    claim = "A PRM's best-of-N weighted selection beats majority voting"
    if not verdicts:
        return Finding(1, claim, NOT_MEASURED, ())
    above = all("not above" not in v for v in verdicts)
    return Finding(1, claim, REPRODUCED if above else NOT_REPRODUCED, tuple(verdicts))


def _merge(picked: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """A verdict from stage statements that each say ': holds:' or ': does not hold:'."""
    if not picked:
        return NOT_MEASURED, ()
    verdict = REPRODUCED if all(": holds:" in s for s in picked) else NOT_REPRODUCED
    if all("intervals overlap" in s for s in picked):
        verdict += ", every comparison within noise"
    return verdict, tuple(picked)


def search_findings(statements: Sequence[str]) -> list[Finding]:
    small = _merge([s for s in statements if "at a small budget" in s])
    large = _merge([s for s in statements if "catches up" in s or "Lookahead below" in s])
    return [Finding(2, "Beam search beats best-of-N at small budgets", *small),
            Finding(3, "Best-of-N catches up with beam search on easy problems at large budgets; lookahead loses "
                       "at equal budget", *large)]


def revision_finding(statements: Sequence[str]) -> Finding:
    verdict, evidence = _merge([s for s in statements if "beat parallel" in s or "mix of sequential" in s])
    extra = tuple(s for s in statements if s.startswith("Revisions turn") or s.startswith("Revision model"))
    return Finding(4, "Sequential revisions win on easy problems, a mix of sequential and parallel on hard ones",
                   verdict, evidence + extra)


def allocation_finding(results: Sequence[dict], statements: Sequence[str]) -> Finding:
    claim = "Compute-optimal scaling matches best-of-N with up to 4x less generation budget"
    if not results:
        return Finding(5, claim, NOT_MEASURED, ())
    evidence = tuple(s for s in statements if s.startswith("Compute-optimal"))
    gains = [r for r in results if r["censored"] != "<=" and r["ratio"] >= 2.0]
    if not gains:
        return Finding(5, claim, NOT_REPRODUCED, evidence)
    # a 2x gain whose interval still holds best-of-N's accuracy at that budget is not a measured gain
    clear = [r for r in gains if r["optimal_lo"] > r["baseline_accuracy"]]
    return Finding(5, claim, REPRODUCED if clear else REPRODUCED + ", every comparison within noise", evidence)


def exchange_finding(rows: Sequence[dict]) -> Finding:
    claim = ("At matched FLOPs, test-time compute beats a ~14x larger model at small R on easy and medium "
             "problems; pretraining wins at large R and on the hardest problems")
    if not rows:
        return Finding(6, claim, NOT_MEASURED, ())
    small_r, large_r = min(r["ratio"] for r in rows), max(r["ratio"] for r in rows)
    bins = sorted({r["bin"] for r in rows if r["bin"]})
    easy_medium, hardest = bins[: max(1, (2 * len(bins)) // 3)], bins[-1:]
    ok_small = all(r["winner"] == "test-time compute" for r in rows if r["ratio"] == small_r and r["bin"] in easy_medium)
    ok_large = all(r["winner"] != "test-time compute" for r in rows
                   if (r["ratio"] == large_r or r["bin"] in hardest) and r["bin"] != 0)
    evidence = tuple(f"R={r['ratio']:g}, bin {'all' if r['bin'] == 0 else r['bin']}: small "
                     f"{'>=' if r['lower_bound'] else ''}{r['small_optimal']:.3f} at N={r['samples_used']} vs large "
                     f"greedy {r['large_greedy']:.3f} [{r['large_lo']:.2f}, {r['large_hi']:.2f}] ({r['winner']})"
                     for r in rows)
    return Finding(6, claim, REPRODUCED if ok_small and ok_large else NOT_REPRODUCED, evidence)


def findings_markdown(findings: Sequence[Finding], title: str) -> str:
    lines = [f"## {title}", "", "| # | finding (Snell et al. 2024) | here |", "|---|---|---|"]
    lines += [f"| {f.number} | {f.claim} | **{f.verdict}** |" for f in findings]
    for f in findings:
        lines += ["", f"### {f.number}. {f.claim}: {f.verdict}", ""]
        lines += [f"- {e}" for e in f.evidence] or ["- no stored results for this finding (its stage did not run)"]
    return "\n".join(lines) + "\n"
