"""The paper's six findings as data: each a set of paired comparisons (tasks/comparison.py).

A builder per finding turns what its stage stored (per-problem outcomes, never a stage's
prose) into comparisons, A always the side the paper says wins, at the same charged
budget on the same problems. The verdict follows from the intervals alone
(`claim_verdict`, `finding_verdict`). The six (PAPER.md): (1) PRM-weighted selection
beats majority; (2) beam search beats best-of-N at small budgets; (3) best-of-N catches up
on easy problems at large budgets, and lookahead loses at equal charged budget;
(4) sequential revisions win on easy problems, a mix on hard ones; (5) compute-optimal
scaling beats best-of-N and needs less budget (paper: up to 4x); (6) at matched FLOPs,
test-time compute beats a ~14x larger model at small R on easy and medium problems, and
pretraining wins at large R and on the hardest problems.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ttscale.tasks.comparison import NOT_MEASURED, Comparison, claim_verdict, finding_verdict, paired
from ttscale.tasks.metrics import powers_of_two
from ttscale.tasks.reports.search import variant
from ttscale.tasks.selection import ProblemCandidates, select, subset_masks
from ttscale.warehouse.store import Warehouse

CLAIMS: dict[int, str] = {
    1: "A PRM's best-of-N weighted selection beats majority voting",
    2: "Beam search beats best-of-N at small budgets",
    3: "Best-of-N catches up with beam search on easy problems at large budgets; lookahead loses at equal "
       "charged budget",
    4: "Sequential revisions win on easy problems, a mix of sequential and parallel on hard ones",
    5: "Compute-optimal scaling beats best-of-N at equal budget, matching it with up to 4x less",
    6: "At matched FLOPs, test-time compute beats a ~14x larger model at small R on easy and medium problems; "
       "pretraining wins at large R and on the hardest problems",
}

Outcomes = dict[str, list[float]]  # problem -> outcomes (one per seed, chain set or CV split)


@dataclass(frozen=True)
class Finding:
    number: int
    comparisons: tuple[Comparison, ...]
    notes: tuple[str, ...] = ()  # measurements that inform the finding but decide nothing

    @property
    def claim(self) -> str:
        return CLAIMS[self.number]

    @property
    def claims(self) -> dict[str, list[Comparison]]:
        out: dict[str, list[Comparison]] = {}
        for c in self.comparisons:
            out.setdefault(c.claim, []).append(c)
        return out

    @property
    def verdict(self) -> str:
        return finding_verdict(self.claims)


def problem_levels(wh: Warehouse) -> dict[str, int]:
    return {r["problem_id"]: r["level"] for r in wh.query("SELECT problem_id, level FROM problems").to_pylist()}


def easy_and_hard(wh: Warehouse, bank: str) -> tuple[list[int], list[int]]:
    """The easiest and hardest levels (two each with four or more levels, else one) by the base model's
    pass@1 on the bank: the same rule for every stage report and the findings report."""
    rows = wh.query("SELECT p.level, avg(c.correct::INT) AS pass1 FROM candidates c JOIN problems p USING (problem_id) "
                    "WHERE c.bank_id = ? AND p.level > 0 GROUP BY p.level ORDER BY pass1 DESC, p.level",
                    [bank]).to_pylist()  # level 0: the dataset gives none (GSM8K), so no level is easy or hard
    ease = [r["level"] for r in rows]
    k = 2 if len(ease) >= 4 else 1
    return ease[:k], ease[-k:]


def _family(specs: Sequence[tuple[dict, Outcomes, Outcomes]], finding: int, claim: str, seed: int,
            decides: bool = True, unit: str = "accuracy") -> list[Comparison]:
    """Paired comparisons that share one Bonferroni correction; a spec is (labels, A outcomes, B outcomes)."""
    return [paired(a, b, finding=finding, claim=claim, family=len(specs), seed=seed + i, decides=decides,
                   unit=unit, **labels)
            for i, (labels, a, b) in enumerate(specs)]


# ---- 1: the verifier ----------------------------------------------------------------------------------

def verifier_budgets(bank_n: int) -> list[int]:
    """Where finding 1 is judged: the larger half of the bank's budgets (the paper's gap opens with N)."""
    return [n for n in powers_of_two(bank_n) if n >= max(2, bank_n // 2)]


def verifier_comparisons(candidates: Mapping[str, tuple[int, ProblemCandidates]], budgets: Sequence[int],
                         aggregation: str, resamples: int, seed: int = 0) -> list[Comparison]:
    """Best-of-N weighted vs majority from the bank: the same N-subsets feed both rules (paired within a
    problem too), each problem's outcome being its expected accuracy over the subsets."""
    rng = np.random.default_rng(seed)
    weighted: dict[int, Outcomes] = defaultdict(dict)
    majority: dict[int, Outcomes] = defaultdict(dict)
    levels: dict[str, int] = {}
    for p, (level, pc) in sorted(candidates.items()):
        levels[p] = level
        for n in budgets:
            masks = subset_masks(len(pc.codes), n, resamples if n < len(pc.codes) else 1, rng)
            weighted[n][p] = [float(select(pc, masks, "weighted", aggregation, rng).mean())]
            majority[n][p] = [float(select(pc, masks, "majority", None, rng).mean())]
    claim = f"best-of-N weighted ({aggregation}) above majority, all problems"
    specs = [(dict(a_name=f"best-of-N weighted ({aggregation})", b_name="majority", budget=n),
              weighted[n], majority[n]) for n in budgets]
    out = _family(specs, 1, claim, seed)
    for level in sorted(set(levels.values()) - {0}):  # 0: no level given; those problems are in "all" only
        members = {p for p, lv in levels.items() if lv == level}
        specs = [(dict(a_name=f"best-of-N weighted ({aggregation})", b_name="majority", budget=n,
                       stratum=f"level {level}"),
                  _only(weighted[n], members), _only(majority[n], members)) for n in budgets]
        out += _family(specs, 1, "per level (detail)", seed, decides=False)
    return out


def _only(outcomes: Outcomes, members: set[str]) -> Outcomes:
    return {p: v for p, v in outcomes.items() if p in members}


# ---- 2 and 3: search ----------------------------------------------------------------------------------

def search_outcomes(rows: Sequence[dict]) -> dict[tuple[str, int], Outcomes]:
    """`selections` rows -> (variant label, charged budget) -> problem -> one outcome per seed."""
    out: dict[tuple[str, int], Outcomes] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[(variant(r), int(r["charged"]))][r["problem_id"]].append(
            float(r["correct"]))
    return {k: dict(v) for k, v in out.items()}


def stored_search_outcomes(wh: Warehouse, scorer_id: str) -> dict[tuple[str, int], Outcomes]:
    """Every stored search selection of this scorer, as search_outcomes takes them."""
    return search_outcomes(wh.query("SELECT strategy, width, lookahead, charged, seed, problem_id, correct "
                                    "FROM selections WHERE scorer_id = ?", [scorer_id]).to_pylist())


def search_comparisons(outcomes: Mapping[tuple[str, int], Outcomes], levels: Mapping[str, int],
                       easy_levels: Sequence[int], seed: int = 0) -> list[Comparison]:
    """Finding 2 at the budgets below the largest that beam search ran; finding 3 on the easy levels at the
    largest budget, and lookahead against beam search at the same charged budget N(k+1)."""
    beams = sorted({label for label, _ in outcomes if label.startswith("beam")})
    beam_budgets = sorted({n for label, n in outcomes if label.startswith("beam")})
    out: list[Comparison] = []
    if not beams or ("best-of-N", beam_budgets[0]) not in outcomes and not any(
            ("best-of-N", n) in outcomes for n in beam_budgets):
        return out
    small = beam_budgets[:-1] or beam_budgets
    specs = [(dict(a_name=beam, b_name="best-of-N", budget=n), outcomes[(beam, n)], outcomes[("best-of-N", n)])
             for n in small for beam in beams if (beam, n) in outcomes and ("best-of-N", n) in outcomes]
    out += _family(specs, 2, f"beam search above best-of-N at N in {small}", seed)
    large = max(n for label, n in outcomes if label == "best-of-N")
    specs = []
    for level in easy_levels:
        members = {p for p, lv in levels.items() if lv == level}
        specs += [(dict(a_name="best-of-N", b_name=beam, budget=large, stratum=f"level {level}"),
                   _only(outcomes[("best-of-N", large)], members), _only(outcomes[(beam, large)], members))
                  for beam in beams if (beam, large) in outcomes]
    out += _family(specs, 3, f"best-of-N at least catches up with beam search on the easy levels at N={large}",
                   seed + 100)
    specs = []
    for label, charged in sorted(outcomes):
        if label.startswith("lookahead"):
            beam = "beam " + label.split()[1]  # same width M
            if (beam, charged) in outcomes:
                specs.append((dict(a_name=f"{beam} (N={charged})", b_name=f"{label} (charged {charged})",
                                   budget=charged), outcomes[(beam, charged)], outcomes[(label, charged)]))
    out += _family(specs, 3, "lookahead below beam search at the same charged budget N(k+1)", seed + 200)
    return out


# ---- 4: revisions -------------------------------------------------------------------------------------

def revision_outcomes(rows: Sequence[dict], rule: str) -> dict[tuple[int, int], Outcomes]:
    """`revision_selections` rows of one rule -> (budget N, length L) -> problem -> one outcome per chain set."""
    out: dict[tuple[int, int], Outcomes] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["rule"] == rule:
            out[(int(r["budget"]), int(r["length"]))][r["problem_id"]].append(float(r["correct"]))
    return {k: dict(v) for k, v in out.items()}


def stored_revision_outcomes(wh: Warehouse, chain_set_id: str, run_id: str, rule: str
                             ) -> dict[tuple[int, int], Outcomes]:
    """One revision sweep's stored selections under `rule`, as revision_outcomes takes them."""
    return revision_outcomes(wh.query("SELECT rule, budget, length, chain_set, problem_id, correct FROM "
                                      "revision_selections WHERE chain_set_id = ? AND run_id = ?",
                                      [chain_set_id, run_id]).to_pylist(), rule)


def revision_comparisons(outcomes: Mapping[tuple[int, int], Outcomes], levels: Mapping[str, int],
                         easy_levels: Sequence[int], hard_levels: Sequence[int], rule: str,
                         seed: int = 0) -> list[Comparison]:
    """At the sweep's largest budget: on easy levels every L > 1 against L = 1 (all parallel); on hard
    levels every mix (1 < L < N) against L = N (all sequential), which the paper says it beats there."""
    if not outcomes:
        return []
    n = max(b for b, _ in outcomes)
    lengths = sorted(length for b, length in outcomes if b == n)
    out: list[Comparison] = []
    specs = []
    for level in easy_levels:
        members = {p for p, lv in levels.items() if lv == level}
        specs += [(dict(a_name=f"L={length} ({rule})", b_name="L=1", budget=n, stratum=f"level {level}"),
                   _only(outcomes[(n, length)], members), _only(outcomes[(n, 1)], members))
                  for length in lengths if length > 1 and (n, 1) in outcomes]
    out += _family(specs, 4, f"sequential (L > 1) above parallel (L = 1) on the easy levels at N={n}", seed)
    specs = []
    for level in hard_levels:
        members = {p for p, lv in levels.items() if lv == level}
        specs += [(dict(a_name=f"L={length} ({rule})", b_name=f"L={n}", budget=n, stratum=f"level {level}"),
                   _only(outcomes[(n, length)], members), _only(outcomes[(n, n)], members))
                  for length in lengths if 1 < length < n and (n, n) in outcomes]
    out += _family(specs, 4, f"a mix (1 < L < N) above all-sequential on the hard levels at N={n}", seed + 100)
    return out


# ---- 5: compute-optimal allocation --------------------------------------------------------------------

def allocation_comparisons(rows: Sequence[dict], ratio: Callable[..., Comparison] | None = None,
                           seed: int = 0) -> list[Comparison]:
    """`allocation_outcomes` rows (held-out outcome of the compute-optimal policy per problem, budget and CV
    split; the baseline's at the same budget) -> compute-optimal vs best-of-N at equal budget, only at
    budgets where at least two different strategies could be chosen; plus the budget ratio with its
    interval (`ratio`, from tasks.allocation) where given."""
    groups: dict[tuple[str, str, int], tuple[Outcomes, Outcomes]] = {}
    for r in rows:
        if not r["choosable"] >= 2:
            continue
        optimal, baseline = groups.setdefault((r["source"], r["bin_kind"], int(r["budget"])), ({}, {}))
        optimal.setdefault(r["problem_id"], []).append(float(r["optimal"]))
        baseline[r["problem_id"]] = [float(r["baseline"])]
    specs = [(dict(a_name=f"compute-optimal {source} ({kind} bins)", b_name=_baseline_of(rows, source), budget=n),
              optimal, baseline) for (source, kind, n), (optimal, baseline) in sorted(groups.items())]
    out = _family(specs, 5, "compute-optimal above best-of-N at equal budget (held-out)", seed)
    if ratio is not None:
        keys = sorted(groups)
        out += [ratio(rows, source, kind, n, family=len(keys), seed=seed + 100 + i)
                for i, (source, kind, n) in enumerate(keys)]
    return out


def _baseline_of(rows: Sequence[dict], source: str) -> str:
    return next((r["baseline_name"] for r in rows if r["source"] == source), "best-of-N")


# ---- 6: FLOPs-matched exchange ------------------------------------------------------------------------

def exchange_comparisons(rows: Sequence[dict], seed: int = 0) -> list[Comparison]:
    """`exchange_outcomes` rows -> per (R, bin) the small model at its matched N against the larger model's
    greedy answer on the same problems. Deciding comparisons count the generator only, as the paper does;
    charging the verifier's labeling, training and scoring FLOPs is shown alongside."""
    cells: dict[tuple[bool, float, int], tuple[Outcomes, Outcomes, float]] = {}
    for r in rows:
        small, large, _ = cells.setdefault((bool(r["verifier_charged"]), float(r["ratio"]), int(r["bin"])),
                                           ({}, {}, float(r["samples"])))
        small[r["problem_id"]] = [float(r["small"])]
        large[r["problem_id"]] = [float(r["large"])]
    if not cells:
        return []
    ratios = sorted({r for _, r, _ in cells})
    bins = sorted({b for _, _, b in cells})
    easy_medium, hardest = bins[: max(1, (2 * len(bins)) // 3)], bins[-1]
    out: list[Comparison] = []
    for charged in (False, True):
        note = " (verifier FLOPs charged)" if charged else ""
        specs = [(dict(a_name=f"small model, N={cells[(charged, ratios[0], b)][2]:.1f}{note}",
                       b_name="larger model, greedy", budget=cells[(charged, ratios[0], b)][2], stratum=f"bin {b}"),
                  *cells[(charged, ratios[0], b)][:2]) for b in easy_medium if (charged, ratios[0], b) in cells]
        out += _family(specs, 6, f"test-time compute above the larger model at R={ratios[0]:g} on easy and medium "
                       f"bins{note}", seed, decides=not charged)
        keys = sorted({(r, b) for c, r, b in cells if c == charged and (r == ratios[-1] or b == hardest)})
        specs = [(dict(a_name="larger model, greedy", b_name=f"small model, N={cells[(charged, r, b)][2]:.1f}{note}",
                       budget=cells[(charged, r, b)][2], stratum=f"bin {b}, R={r:g}"),
                  cells[(charged, r, b)][1], cells[(charged, r, b)][0]) for r, b in keys]
        out += _family(specs, 6, f"pretraining above test-time compute at R={ratios[-1]:g} and on the hardest "
                       f"bin{note}", seed + 100, decides=not charged)
    return out


# ---- the table and the words --------------------------------------------------------------------------

def findings_table_rows(findings: Sequence[Finding], run_id: str, ids: Mapping[str, str]) -> list[dict]:
    """Rows of the warehouse `findings` table: one per comparison, with its claim's and finding's verdicts;
    a finding with no comparison (its stage did not run) gets one 'not measured' row, so a query sees all six."""
    rows = []
    for f in findings:
        if not f.comparisons:
            rows.append({"run_id": run_id, "finding": f.number, "comparison": 0, "claim": f.claim, "a": "", "b": "",
                         "stratum": "", "budget": 0.0, "effect": 0.0, "lo": 0.0, "hi": 0.0, "problems": 0,
                         "detectable": 0.0, "family": 0, "confidence": 0.95, "unit": "accuracy", "decides": True,
                         "verdict": NOT_MEASURED, "problems_to_decide": None, "headroom": None,
                         "could_show": None, "claim_verdict": NOT_MEASURED,
                         "finding_verdict": NOT_MEASURED, "bank_id": ids.get("bank_id"),
                         "scorer_id": ids.get("scorer_id")})
            continue
        claims = f.claims
        for i, c in enumerate(f.comparisons):
            rows.append({"run_id": run_id, "finding": f.number, "comparison": i, **{k: v for k, v in c.row().items()
                                                                                    if k != "finding"},
                         "claim_verdict": claim_verdict(claims[c.claim]), "finding_verdict": f.verdict,
                         "bank_id": ids.get("bank_id"), "scorer_id": ids.get("scorer_id")})
    return rows


def headline(f: Finding) -> Comparison | None:
    """The deciding comparison that says most, in accuracy where the finding has one: the largest lower
    bound when reproduced, the lowest upper bound when contradicted, else the one whose interval reaches
    furthest in the paper's direction."""
    deciding = [c for c in f.comparisons if c.decides and c.problems]
    deciding = [c for c in deciding if c.unit == "accuracy"] or deciding
    if not deciding:
        return None
    if f.verdict == "contradicted":
        return min(deciding, key=lambda c: c.hi)
    return max(deciding, key=lambda c: (c.lo if f.verdict == "reproduced" else c.hi))
