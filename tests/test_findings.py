"""The findings instrument: verdicts from paired intervals, clustered by problem, that cannot overclaim."""

from __future__ import annotations

import numpy as np
import pytest

from ttscale.tasks.allocation import budget_ratio, choosable, cross_validate, efficiency
from ttscale.tasks.comparison import CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, REPRODUCED, claim_verdict, finding_verdict, paired
from ttscale.tasks.findings import (Finding, allocation_comparisons, exchange_comparisons, findings_table_rows,
                            revision_comparisons, search_comparisons, verifier_comparisons)
from ttscale.tasks.reports.findings import findings_markdown, plot_forest
from ttscale.tasks.selection import ProblemCandidates


def _outcomes(values: dict[str, list[float]]) -> dict[str, list[float]]:
    return {p: list(v) for p, v in values.items()}


def test_a_clear_effect_is_reproduced_its_reverse_contradicted_and_a_tie_inconclusive():
    ones = {str(i): [1.0] for i in range(30)}
    zeros = {str(i): [0.0] for i in range(30)}
    win = paired(ones, zeros, finding=1, claim="c", a_name="A", b_name="B")
    assert (win.effect, win.verdict, win.problems) == (1.0, REPRODUCED, 30)
    assert paired(zeros, ones, finding=1, claim="c", a_name="A", b_name="B").verdict == CONTRADICTED
    tie = paired(ones, ones, finding=1, claim="c", a_name="A", b_name="B")  # 1.000 vs 1.000 is no loss
    assert tie.verdict == INCONCLUSIVE and tie.effect == 0 and tie.detectable > 0
    assert paired({}, {}, finding=1, claim="c", a_name="A", b_name="B").verdict == NOT_MEASURED


def test_a_baseline_at_the_ceiling_is_reported_as_one_no_interval_could_beat(tmp_path):
    from ttscale.tasks.reports.findings import comparison_lines, to_decide
    from ttscale.warehouse.store import Warehouse

    ones = {str(i): [1.0] for i in range(16)}
    nearly = {str(i): [1.0 if i else 0.0] for i in range(16)}  # A misses one problem B solves
    ceiling = paired(nearly, ones, finding=4, claim="L > 1 above L = 1", a_name="L=2", b_name="L=1")
    assert ceiling.verdict == INCONCLUSIVE and ceiling.headroom == 0.0 and not ceiling.could_show
    half = {str(i): [float(i % 2)] for i in range(16)}
    room = paired(ones, half, finding=4, claim="L > 1 above L = 1", a_name="L=2", b_name="L=1")
    assert room.headroom == 0.5 and room.could_show and room.verdict == REPRODUCED
    [_, line] = comparison_lines([ceiling])
    assert "too little room to show A above B" in line and "at most +0.000" in line and "could detect" not in line
    assert "not testable on these problems" in to_decide(Finding(4, (ceiling,)))
    # a unit without a ceiling (nats, budget ratios) keeps saying what it could detect
    nats = paired(half, ones, finding=3, claim="c", a_name="A", b_name="B", unit="nats")
    assert nats.headroom is None and nats.could_show
    rows = findings_table_rows([Finding(4, (ceiling, room))], "run", {})
    with Warehouse(tmp_path / "w.duckdb") as wh:
        import pyarrow as pa

        wh.insert("findings", pa.Table.from_pylist(rows))
        assert wh.query("SELECT headroom, could_show FROM findings ORDER BY comparison").to_pylist() == [
            {"headroom": 0.0, "could_show": False}, {"headroom": 0.5, "could_show": True}]
        wh.con.execute("ALTER TABLE findings DROP COLUMN headroom; ALTER TABLE findings DROP COLUMN could_show")
    with Warehouse(tmp_path / "w.duckdb") as wh:  # a warehouse from before the columns: they are added, rows kept
        assert wh.query("SELECT count(*) AS n, count(headroom) AS h FROM findings").to_pylist() == [{"n": 2, "h": 0}]


def test_seeds_are_redrawn_inside_a_problem_not_counted_as_problems():
    rng = np.random.default_rng(0)
    # 8 problems, each with its own true difference; 200 seeds per problem make each mean precise,
    # but only 8 problems were seen: the interval must be about as wide as with 8 single means.
    truth = rng.choice([-0.6, 0.6], size=8)
    a = {str(i): list((rng.random(200) < 0.5 + t / 2).astype(float)) for i, t in enumerate(truth)}
    b = {str(i): list((rng.random(200) < 0.5 - t / 2).astype(float)) for i, t in enumerate(truth)}
    nested = paired(a, b, finding=2, claim="c", a_name="A", b_name="B")
    means = paired({p: [np.mean(v)] for p, v in a.items()}, {p: [np.mean(v)] for p, v in b.items()},
                   finding=2, claim="c", a_name="A", b_name="B")
    flat = paired({f"{p}/{j}": [x] for p, v in a.items() for j, x in enumerate(v)},
                  {f"{p}/{j}": [x] for p, v in b.items() for j, x in enumerate(v)},
                  finding=2, claim="c", a_name="A", b_name="B")  # the old mistake: seeds as problems
    width = nested.hi - nested.lo
    assert width == pytest.approx(means.hi - means.lo, rel=0.25)
    assert width > 4 * (flat.hi - flat.lo)
    assert nested.problems == 8


def test_null_data_are_almost_never_called_reproduced_even_taking_the_best_of_a_family():
    """The instrument's false-positive rate: under no difference, 'reproduced' at most at the 2.5% one-sided
    rate, also when a claim takes the best of four variants (Bonferroni)."""
    rng = np.random.default_rng(1)
    single, best_of_four = 0, 0
    trials = 200
    for t in range(trials):
        base = {str(p): list((rng.random(2) < 0.5).astype(float)) for p in range(40)}
        variants = [{p: list((rng.random(2) < 0.5).astype(float)) for p in base} for _ in range(4)]
        single += paired(variants[0], base, finding=2, claim="c", a_name="A", b_name="B", seed=t,
                         resamples=400).verdict == REPRODUCED
        family = [paired(v, base, finding=2, claim="c", a_name="A", b_name="B", family=4, seed=t, resamples=400)
                  for v in variants]
        best_of_four += claim_verdict(family) == REPRODUCED
    assert single / trials <= 0.06
    assert best_of_four / trials <= 0.06


def test_a_claim_and_a_finding_follow_their_intervals():
    up = paired({"a": [1.0], "b": [1.0]}, {"a": [0.0], "b": [0.0]}, finding=3, claim="x", a_name="A", b_name="B")
    flat = paired({"a": [1.0]}, {"a": [1.0]}, finding=3, claim="y", a_name="A", b_name="B")
    down = paired({"a": [0.0], "b": [0.0]}, {"a": [1.0], "b": [1.0]}, finding=3, claim="y", a_name="A", b_name="B")
    assert claim_verdict([up, flat]) == REPRODUCED
    assert claim_verdict([up, down]) == INCONCLUSIVE  # one each way: the claim is not shown
    assert finding_verdict({"x": [up], "y": [flat]}) == INCONCLUSIVE  # every claim must hold
    assert finding_verdict({"x": [up], "y": [down]}) == CONTRADICTED
    assert Finding(4, ()).verdict == NOT_MEASURED


def test_weighted_beats_majority_only_with_a_verifier_that_ranks_candidates():
    # each problem: the right answer once, a wrong answer twice (majority picks it), 3 candidates
    def problem(right_score: float) -> tuple[int, ProblemCandidates]:
        return 1, ProblemCandidates.build(["7", "9", "9"], [True, False, False],
                                          {"last": [right_score, 0.1, 0.1]})
    good = {str(i): problem(0.99) for i in range(30)}  # the verifier puts the right one far above
    [c] = [c for c in verifier_comparisons(good, [3], "last", 50) if c.decides]
    assert c.verdict == REPRODUCED and c.effect == pytest.approx(1.0)
    blind = {str(i): problem(0.1) for i in range(30)}  # same scores: weighted = majority
    [c] = [c for c in verifier_comparisons(blind, [3], "last", 50) if c.decides]
    assert c.verdict == INCONCLUSIVE and c.effect == pytest.approx(0.0)


def test_problems_without_a_level_get_no_level_0_stratum_and_no_easy_level(tmp_path):
    """GSM8K gives no level: its comparisons are "all" only, never a "level 0" copy of them, and no level is
    easy or hard, so the per-level findings say not measured instead of naming level 0."""
    from ttscale.tasks.findings import easy_and_hard
    from ttscale.warehouse.store import Warehouse

    bank = {str(i): (0, ProblemCandidates.build(["7", "9", "9"], [True, False, False], {"last": [0.9, 0.1, 0.1]}))
            for i in range(10)}
    found = verifier_comparisons(bank, [3], "last", 20)
    assert [c.stratum for c in found] == ["all"]
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.con.execute("INSERT INTO problems SELECT 'p' || i, 'gsm8k', 'test', i, 0, 'q', '1', '{}' FROM range(3) t(i)")
        wh.con.execute("INSERT INTO candidates (candidate_id, bank_id, run_id, problem_id, method, budget, sample_index, "
                       "seed, model, text, correct, n_steps, prompt_tokens, generated_tokens, finish_reason, flops, "
                       "created_at) SELECT 'c' || i, 'b', 'r', 'p' || i, 'sample', 1, 0, 0, 'm', '', i = 0, 1, 1, 1, "
                       "'stop', 1.0, now() FROM range(3) t(i)")
        assert easy_and_hard(wh, "b") == ([], [])


def test_lookahead_is_held_against_beam_at_the_same_charged_budget():
    ones = {str(i): [1.0] for i in range(10)}
    zeros = {str(i): [0.0] for i in range(10)}
    outcomes = {("best-of-N", 2): zeros, ("best-of-N", 4): zeros, ("beam M=2", 2): zeros, ("beam M=2", 4): ones,
                ("lookahead M=2 k=1", 4): zeros}  # lookahead at N = 2 is charged N(k+1) = 4
    levels = {str(i): 1 for i in range(10)}
    look = [c for c in search_comparisons(outcomes, levels, [1]) if "lookahead" in c.claim]
    assert len(look) == 1 and look[0].budget == 4 and look[0].a.startswith("beam M=2 (N=4)")
    assert look[0].verdict == REPRODUCED  # beam at N = 4 beats lookahead charged 4
    small = [c for c in search_comparisons(outcomes, levels, [1]) if c.finding == 2]
    assert [c.budget for c in small] == [2.0] and small[0].verdict == INCONCLUSIVE  # 0 vs 0 at N = 2


def test_revisions_compare_every_length_against_the_ends_on_the_right_levels():
    rows = {(4, 1): {}, (4, 2): {}, (4, 4): {}}
    for p in range(12):
        level = 1 if p < 6 else 5
        rows[(4, 1)][str(p)] = [0.0]
        rows[(4, 2)][str(p)] = [1.0 if level == 5 else 0.0]
        rows[(4, 4)][str(p)] = [1.0 if level == 1 else 0.0]
    levels = {str(p): 1 if p < 6 else 5 for p in range(12)}
    found = revision_comparisons(rows, levels, [1], [5], "orm_hier")
    easy = [c for c in found if "easy" in c.claim]
    hard = [c for c in found if "hard" in c.claim]
    assert {(c.a, c.b, c.stratum) for c in easy} == {("L=2 (orm_hier)", "L=1", "level 1"),
                                                     ("L=4 (orm_hier)", "L=1", "level 1")}
    assert claim_verdict(easy) == REPRODUCED  # L=4 is right on every easy problem, L=1 on none
    assert [(c.a, c.b, c.verdict) for c in hard] == [("L=2 (orm_hier)", "L=4", REPRODUCED)]


def _allocation_rows(gain: float, budgets=(1, 2, 4, 8), problems: int = 60, splits: int = 2) -> list[dict]:
    """Held-out rows where the policy at N is exactly best-of-N at 2N (plus `gain` at N = 1)."""
    rng = np.random.default_rng(0)
    skill = rng.random(problems)
    base = {n: {str(p): float(skill[p] < 0.2 + 0.1 * np.log2(n)) for p in range(problems)} for n in budgets}
    rows = []
    for n in budgets:
        for s in range(splits):
            for p in range(problems):
                opt = base[min(2 * n, budgets[-1])][str(p)] if n > 1 else min(1.0, base[1][str(p)] + gain)
                opt = 1.0 - opt if rng.random() < 0.05 else opt  # a little noise: the interval has width
                rows.append(dict(source="search", bin_kind="oracle", budget=n, split=s, problem_id=str(p), bin=1,
                                 optimal=opt, baseline=base[n][str(p)], baseline_name="best-of-N",
                                 choosable=choosable({("a", n): {}, ("b", n): {}}, n)))
    return rows


def test_no_efficiency_claim_at_budget_one_where_every_strategy_is_one_sample():
    assert choosable({("majority", 1): {}, ("best-of-N", 1): {}}, 1) == 1
    assert choosable({("majority", 2): {}, ("best-of-N", 2): {}, ("beam M=2", 2): {}}, 2) == 3
    found = allocation_comparisons(_allocation_rows(gain=0.5), budget_ratio)
    assert 1.0 not in {c.budget for c in found}  # the "gain" planted at N = 1 is never compared
    # the old rule on the same numbers: +0.025 over a flat start of the baseline curve reads as 2x
    assert efficiency({1: 0.525}, {1: 0.5, 2: 0.5, 4: 0.55})[0].ratio > 2


def test_the_budget_ratio_has_an_interval_and_finds_a_planted_2x():
    rows = _allocation_rows(gain=0.0)
    ratios = [c for c in allocation_comparisons(rows, budget_ratio) if c.unit.startswith("log2")]
    at2 = next(c for c in ratios if c.budget == 2)
    # the policy at N = 2 is best-of-N at 4 (up to the noise): the planted 2x lies inside its interval
    assert at2.lo <= 1.0 <= at2.hi and at2.lo < at2.hi and at2.lo <= at2.effect <= at2.hi and at2.family == len(ratios)
    assert at2.verdict == REPRODUCED
    paired_rows = [c for c in allocation_comparisons(rows) if c.budget == 2]
    assert paired_rows[0].effect > 0


def test_cross_validation_keeps_each_problems_held_out_outcome_per_split():
    outcomes = {("a", 2): {"p1": 1.0, "p2": 0.0, "p3": 1.0, "p4": 0.0},
                ("b", 2): {"p1": 0.0, "p2": 1.0, "p3": 0.0, "p4": 1.0}}
    bins = {"p1": 1, "p2": 1, "p3": 1, "p4": 1}
    cv = cross_validate(outcomes, bins, "a", splits=3, seed=0)
    assert all(len(v) == 3 for v in cv.held_out.values()) and len(cv.held_out) == 4
    assert np.mean([x for v in cv.held_out.values() for x in v]) == pytest.approx(cv.accuracy[2])


def test_exchange_ties_are_not_losses_and_the_verifier_charge_is_shown_but_does_not_decide():
    rows = []
    for charged in (False, True):
        for ratio in (0.16, 22.0):
            for p in range(30):
                b = 1 + p % 3
                small = 1.0 if (ratio == 0.16 and b < 3) else 0.0
                large = 1.0 if b == 3 or ratio == 22.0 else 0.0
                rows.append(dict(verifier_charged=charged, ratio=ratio, bin=b, samples=10.0, problem_id=str(p),
                                 small=small, large=large))
    found = exchange_comparisons(rows)
    deciding = [c for c in found if c.decides]
    assert all("charged" not in c.claim for c in deciding) and any("charged" in c.claim for c in found)
    assert finding_verdict({c.claim: [x for x in deciding if x.claim == c.claim] for c in deciding}) == REPRODUCED


def test_the_table_rows_and_the_report_carry_every_comparison(tmp_path):
    ones = {str(i): [1.0] for i in range(20)}
    zeros = {str(i): [0.0] for i in range(20)}
    f = Finding(2, (paired(ones, zeros, finding=2, claim="beam above", a_name="beam M=2", b_name="best-of-N",
                           budget=4),))
    rows = findings_table_rows([f, Finding(6, ())], "run", {"bank_id": "b", "scorer_id": "s"})
    assert len(rows) == 2 and rows[0]["verdict"] == rows[0]["finding_verdict"] == REPRODUCED
    assert (rows[1]["finding"], rows[1]["finding_verdict"], rows[1]["problems"]) == (6, NOT_MEASURED, 0)
    assert set(rows[0]) == set(rows[1])  # the same columns: one table
    text = findings_markdown([f, Finding(6, ())], "t", ["the `base` model stopped at its cap"], "forest.png")
    assert "| 2 |" in text and "**reproduced**" in text and "+1.000 [+1.000, +1.000]" in text
    assert "its stage did not run" in text and "Warning:" in text and "forest.png" in text
    assert plot_forest([f], tmp_path / "forest.png").stat().st_size > 1000


def test_a_model_stopped_by_its_time_cap_is_named_at_the_top_of_the_report(tmp_path):
    from ttscale.flows.report import capped_models
    from ttscale.workdir import Workdir, write_record

    wd = Workdir.at(str(tmp_path))
    for name, stopped in (("base", "time cap"), ("prm", None)):
        (wd.models / name).mkdir(parents=True)
        write_record(wd.models / name, {"stopped_by": stopped, "updates": 2159, "max_updates": 2300,
                                        "train_seconds_cap": 420})
    [warning] = capped_models(wd)
    assert "`base`" in warning and "2159 of 2300" in warning
    text = findings_markdown([Finding(1, ())], "t", [warning])
    assert text.index("Warning") < text.index("| # |")  # before the verdicts


def test_a_bound_that_excludes_zero_never_prints_as_zero():
    from ttscale.tasks.reports.findings import _signed

    assert _signed(0.0003) == "+0.0003" and _signed(-0.00004) == "-0.00004"
    assert _signed(0.0) == "+0.000" and _signed(0.1234) == "+0.123"


def test_no_budget_ratio_when_the_policy_and_the_cheapest_best_of_n_both_solve_nothing():
    """SmolLM2 on GSM8K: one problem right at N = 2 moved best-of-N's curve off flat, the policy solved
    nothing, and the ratio read "0.5x, contradicted" from a tie at zero."""
    rows = [dict(source="search", bin_kind="oracle", budget=n, split=s, problem_id=str(p), bin=1, optimal=0.0,
                 baseline=float(n == 2 and p == 0), baseline_name="best-of-N", choosable=2)
            for n in (1, 2, 4) for s in range(2) for p in range(12)]
    ratio = budget_ratio(rows, "search", "oracle", 2)
    assert ratio.verdict == NOT_MEASURED and ratio.problems == 0  # not "contradicted"
    rows = [{**r, "baseline": 1.0 if r["problem_id"] in "123" or (r["problem_id"] == "5" and r["budget"] == 4)
             else r["baseline"]} for r in rows]
    assert budget_ratio(rows, "search", "oracle", 2).problems == 12  # best-of-N@1 solves some: a ratio exists
