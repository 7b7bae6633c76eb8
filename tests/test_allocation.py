"""Difficulty bins, the cross-validated policy, the efficiency interpolation, the allocator's budget."""

from __future__ import annotations

import math
import random

import pytest

from ttscale.tasks.allocation import Policy, allocate, cross_validate, efficiency, evaluate_allocator, fit_policy, folds
from ttscale.tasks.difficulty import agreement, quantile_bins


def test_quantile_bins_on_hand_made_pass_rates():
    rates = {f"p{i}": r for i, r in enumerate([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0])}
    bins = quantile_bins(rates, 5)
    assert [bins[f"p{i}"] for i in range(10)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # bin 1 easiest
    tied = quantile_bins({f"q{i}": 0.5 for i in range(10)}, 5)
    assert sorted(tied.values()) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # ties still fill equal bins
    same = agreement(rates, rates, 5)
    assert same.exact == 1.0 and same.spearman == pytest.approx(1.0)
    flipped = agreement(rates, {p: -v for p, v in rates.items()}, 5)
    assert flipped.exact < 0.5 and flipped.spearman == pytest.approx(-1.0)


def test_cross_validation_never_scores_a_problem_with_a_choice_it_made():
    problems = [f"p{i}" for i in range(12)]
    bins = {p: 1 + i % 3 for i, p in enumerate(problems)}
    # strategy s_p solves only problem p: choosing on a problem's own outcome would score 1 there
    outcomes = {(f"s_{p}", 4): {q: float(q == p) for q in problems} for p in problems}
    outcomes[("bon", 4)] = {q: 0.0 for q in problems}
    in_sample = fit_policy(outcomes, bins, problems, "bon")
    assert all(acc > 0 for _, acc in in_sample.values())  # in-sample selection looks good...
    cv = cross_validate(outcomes, bins, "bon", splits=4)
    assert cv.accuracy[4] == 0.0  # ...held out it is worth nothing: no leakage between folds
    a, b = folds(problems, bins, random.Random(0))
    assert not set(a) & set(b) and sorted(a + b) == sorted(problems)
    assert all(abs(sum(bins[p] == k for p in a) - sum(bins[p] == k for p in b)) <= 1 for k in (1, 2, 3))


def test_policy_prefers_what_works_per_bin_and_serves_new_problems():
    problems = [f"p{i}" for i in range(20)]
    bins = {p: 1 if i < 10 else 2 for i, p in enumerate(problems)}
    outcomes = {("beam", 4): {p: float(bins[p] == 2) for p in problems},
                ("bon", 4): {p: float(bins[p] == 1) for p in problems}}
    cv = cross_validate(outcomes, bins, "bon", splits=3)
    assert cv.accuracy[4] == 1.0 and cv.baseline[4] == 0.5
    policy = fit_policy(outcomes, bins, problems, "bon")
    assert policy[(1, 4)][0] == "bon" and policy[(2, 4)][0] == "beam"
    served = Policy(({"bin": 1, "budget": 4, "strategy": "bon", "value_min": 0.6, "value_max": 0.9},
                     {"bin": 2, "budget": 4, "strategy": "beam", "value_min": 0.1, "value_max": 0.5}))
    assert served.choose(0.7, 8) == ("bon", 4) and served.choose(0.05, 4) == ("beam", 4)
    with pytest.raises(ValueError, match="budget 2"):
        served.choose(0.7, 2)


def test_efficiency_interpolates_in_log_budget():
    baseline = {1: 0.2, 2: 0.4, 4: 0.6, 8: 0.7}
    got = {e.budget: e for e in efficiency({1: 0.4, 2: 0.5, 4: 0.8, 8: 0.1}, baseline, charge=0)}
    assert got[1].equivalent == pytest.approx(2.0) and got[1].ratio == pytest.approx(2.0) and got[1].censored == ""
    assert got[2].equivalent == pytest.approx(2 ** 1.5) and got[2].ratio == pytest.approx(2 ** 1.5 / 2)
    assert got[4].censored == ">=" and got[4].equivalent == 8
    assert got[8].censored == "<="
    charged = {e.budget: e for e in efficiency({1: 0.4}, baseline, charge=3)}
    assert charged[1].ratio == pytest.approx(2.0 / 4)


def test_allocator_never_exceeds_the_total():
    rng = random.Random(0)
    for trial in range(50):
        bins = {f"p{i}": rng.randint(1, 3) for i in range(rng.randint(1, 15))}
        curves = {b: {n: min(1.0, rng.random() * math.log2(2 * n)) for n in (1, 2, 4, 8, 16)} for b in (1, 2, 3)}
        total, charge = rng.uniform(0, 100), rng.choice([0.0, 1.0, 2.5])
        spent = allocate(curves, bins, total, charge)
        assert sum(spent.values()) + charge * len(bins) <= total or all(v == 0 for v in spent.values())
        assert all(v == 0 or v & (v - 1) == 0 for v in spent.values())
    # the budget goes where it gains first; a bin nothing helps gets only what is left over
    curves = {1: {1: 0.0, 2: 0.0}, 2: {1: 0.5, 2: 0.9}}
    assert allocate(curves, {"hopeless": 1, "medium": 2}, total=2) == {"hopeless": 0, "medium": 2}
    assert allocate(curves, {"hopeless": 1, "medium": 2}, total=3) == {"hopeless": 1, "medium": 2}
    # a flat stretch before a gain does not stop it: 0 -> 4 is bought in one raise
    assert allocate({1: {1: 0.0, 2: 0.0, 4: 1.0}}, {"p": 1}, total=4) == {"p": 4}


def test_allocator_evaluation_is_at_equal_compute():
    problems = [f"p{i}" for i in range(10)]
    bins = {p: 1 + i % 2 for i, p in enumerate(problems)}
    outcomes = {("bon", n): {p: float(bins[p] == 1 or n >= 4) for p in problems} for n in (1, 2, 4)}
    result = evaluate_allocator(outcomes, bins, "bon", splits=2, charge=0.0)
    assert set(result) == {1, 2, 4}
    for charged, free, uniform, base in result.values():
        assert 0.0 <= charged <= free <= 1.0 and uniform == base  # one strategy: the policy is best-of-N
    assert result[2][1] > result[2][2]  # moving samples from solved bin 1 to bin 2 helps at N = 2
    expensive = evaluate_allocator(outcomes, bins, "bon", splits=2, charge=4.0)
    assert expensive[2][0] == 0.0 and expensive[4][0] == 0.0  # an estimate costing the whole budget leaves nothing


def test_pipeline_bins_problems_and_fits_the_policy(trained_workdir, smoke_config):
    import duckdb

    from ttscale.flows.allocate import allocate
    from ttscale.flows.pipeline import pipeline

    out = pipeline(config=smoke_config, workdir=str(trained_workdir))
    with duckdb.connect(str(trained_workdir / "ttscale.duckdb"), read_only=True) as con:
        kinds = con.execute("SELECT kind, count(*), min(bin), max(bin), min(samples), max(samples), min(flops) "
                            "FROM difficulty GROUP BY 1 ORDER BY 1").fetchall()
        n_test = smoke_config.task.n_test
        assert kinds == [("oracle", n_test, 1, smoke_config.difficulty.bins, smoke_config.bank.n,
                          smoke_config.bank.n, kinds[0][6]),
                         ("predicted", n_test, 1, smoke_config.difficulty.bins, smoke_config.difficulty.samples,
                          smoke_config.difficulty.samples, kinds[1][6])]
        assert kinds[1][6] < kinds[0][6]  # 2 samples and the PRM cost less than the 8-sample oracle
        results = con.execute("SELECT source, bin_kind, budget, optimal_accuracy, baseline_accuracy, ratio, "
                              "allocator_accuracy FROM allocation_results WHERE run_id = ?",
                              [out["allocation"]]).fetchall()
        assert {(s, k) for s, k, *_ in results} == {(s, k) for s in ("search", "revisions")
                                                      for k in ("oracle", "predicted")}
        # every held-out figure is the mean of the stored per-problem, per-split outcomes it came from, and
        # no ratio is stated at N = 1, where every strategy is one sample
        held_out = {(s, k, n): (o, b) for s, k, n, o, b in con.execute(
            "SELECT source, bin_kind, budget, avg(optimal), avg(baseline) FROM allocation_outcomes WHERE run_id = ? "
            "GROUP BY ALL", [out["allocation"]]).fetchall()}
        for s, k, n, o, b, r, _ in results:
            assert (o, b) == pytest.approx(held_out[(s, k, n)]) and n > 1 and r > 0
        assert con.execute("SELECT count(*) FROM allocation_outcomes WHERE run_id = ? AND budget = 1 AND choosable > 1",
                           [out["allocation"]]).fetchall()[0][0] == 0
        policy = con.execute("SELECT count(*) FROM allocation_policy WHERE run_id = ?", [out["allocation"]]).fetchall()
        assert policy[0][0] > 0
    text = (trained_workdir / "reports" / f"allocate-{out['allocation']}.md").read_text()
    assert "compute-optimal above best-of-N at equal budget (held-out)" in text and "paired 95% intervals" in text
    assert allocate(config=smoke_config, workdir=str(trained_workdir)) == out["allocation"]  # re-run: nothing new


def test_solve_runs_the_served_policy_on_new_problems(trained_workdir, smoke_config):
    import duckdb

    from ttscale.flows.pipeline import pipeline
    from ttscale.flows.solve import solve

    pipeline(config=smoke_config, workdir=str(trained_workdir))  # the policy (a no-op when already run)
    config = smoke_config.model_copy(update={"solve": smoke_config.solve.model_copy(
        update={"first": smoke_config.search.problems, "count": 3, "budget": 4})})
    run_id = solve(config=config, workdir=str(trained_workdir))
    with duckdb.connect(str(trained_workdir / "ttscale.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT p.index, s.strategy, s.charged, s.bin, s.estimate_tokens, s.search_tokens, s.flops "
                           "FROM policy_solutions s JOIN problems p USING (problem_id) WHERE run_id = ?",
                           [run_id]).fetchall()
        fitted = {r[0] for r in con.execute("SELECT DISTINCT strategy FROM allocation_policy").fetchall()}
    assert sorted(r[0] for r in rows) == [4, 5, 6]  # new problems, not the ones the policy was fitted on
    assert all(strategy in fitted and 0 < charged <= 4 and est > 0 and tokens > 0 and flops > 0
               for _, strategy, charged, _, est, tokens, flops in rows)
    assert solve(config=config, workdir=str(trained_workdir)) == run_id  # re-run: solves nothing twice
    with duckdb.connect(str(trained_workdir / "ttscale.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM policy_solutions WHERE run_id = ?", [run_id]).fetchall()[0][0] == 3


def test_policy_labels_parse_back_into_search_runs():
    from ttscale.tasks.reports.search import parse_variant, variant

    for strategy, m, k in [("beam", 4, 0), ("dvts", 2, 0), ("lookahead", 2, 3), ("best_of_n", 1, 0),
                           ("majority", 1, 0)]:
        label = variant({"strategy": strategy, "width": m, "lookahead": k})
        assert parse_variant(label) == (strategy, m, k)
    with pytest.raises(ValueError, match="not a search strategy"):
        parse_variant("revisions L=2 orm_flat")
