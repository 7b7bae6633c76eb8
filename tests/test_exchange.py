"""The FLOPs formulas, the matched budget, and the exchange flow against a larger embedded model."""

from __future__ import annotations

import duckdb
import pytest

import numpy as np

from ttscale.tasks.exchange import inference_flops, matched_samples, per_problem_accuracy, pretrain_flops, split_bank
from ttscale.tasks.selection import ProblemCandidates


@pytest.mark.parametrize("ratio", [0.16, 0.79, 22.0])
def test_matched_samples_spend_the_same_total_flops(ratio):
    small, large, tokens = 1.0e6, 14.0e6, 2.0e6
    n = matched_samples(small, large, ratio)
    small_total = pretrain_flops(small, tokens) + inference_flops(small, n * ratio * tokens)
    large_total = pretrain_flops(large, tokens) + inference_flops(large, ratio * tokens)
    assert small_total == pytest.approx(large_total)
    assert pretrain_flops(2, 3) == 36 and inference_flops(2, 3) == 12


def test_paper_ratios_and_the_verifier_charge():
    assert matched_samples(1, 14, 0.16) == pytest.approx(3 * 13 / 0.16 + 14)  # 257.75
    assert matched_samples(1, 14, 22.0) == pytest.approx(15.77, abs=0.01)
    assert matched_samples(1, 14, 22.0, token_ratio=0.5) == pytest.approx(15.77 / 2, abs=0.01)  # longer samples
    # charging a verifier: its one-time FLOPs and its parameters per scored sample leave the same totals
    small, large, verifier, tokens, flops, ratio = 1.0e6, 14.0e6, 1.0e6, 2.0e6, 3.0e12, 0.79
    n = matched_samples(small, large, ratio, 1.0, verifier, flops, tokens)
    small_total = (pretrain_flops(small, tokens) + flops
                   + inference_flops(small + verifier, n * ratio * tokens))
    assert small_total == pytest.approx(pretrain_flops(large, tokens) + inference_flops(large, ratio * tokens))
    assert n < matched_samples(small, large, ratio)
    assert matched_samples(small, large, ratio, 1.0, verifier, 1e30, tokens) == 0.0  # nothing left to sample


def test_a_fractional_budget_is_spent_exactly_and_bins_read_other_samples():
    rng = np.random.default_rng(0)
    pc = ProblemCandidates.build([str(i % 4) for i in range(12)], [i % 4 == 0 for i in range(12)],
                                 {"last": list(rng.random(12))})
    two, three = (per_problem_accuracy(pc, n, "majority", 400, np.random.default_rng(1)) for n in (2, 3))
    mixed = per_problem_accuracy(pc, 2.25, "majority", 400, np.random.default_rng(1))
    assert mixed == pytest.approx(0.75 * two + 0.25 * three, abs=0.05)  # not floored to 2
    assert per_problem_accuracy(pc, 50, "majority", 10, rng) == per_problem_accuracy(pc, 12, "majority", 10, rng)
    pass1, rest = split_bank(pc, 4)
    assert pass1 == 0.25 and len(rest.codes) == 8 and list(rest.correct) == list(pc.correct[4:])


def test_exchange_flow_writes_the_table(trained_workdir, smoke_config):
    from ttscale.flows.pipeline import pipeline

    large = smoke_config.base_model.model_copy(update={"hidden_size": 128, "intermediate_size": 256, "n_heads": 4,
                                                       "max_updates": 60})
    config = smoke_config.model_copy(update={"large_model": large})
    out = pipeline(config=config, workdir=str(trained_workdir))
    with duckdb.connect(str(trained_workdir / "ttscale.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT ratio, bin, matched_samples, samples_used, lower_bound, small_optimal, large_greedy "
                           "FROM flops_exchange WHERE run_id = ? ORDER BY ratio, bin", [out["exchange"]]).fetchall()
        greedy = con.execute("SELECT count(*), max(budget) FROM candidates WHERE method = 'greedy'").fetchall()[0]
        per_problem = {(r, c, b): (s, g, n) for r, c, b, s, g, n in con.execute(
            "SELECT ratio, verifier_charged, bin, avg(small), avg(large), max(samples) FROM exchange_outcomes "
            "WHERE run_id = ? GROUP BY ALL", [out["exchange"]]).fetchall()}
        overall = {(r, c): (s, g) for r, c, s, g in con.execute(
            "SELECT ratio, verifier_charged, avg(small), avg(large) FROM exchange_outcomes WHERE run_id = ? "
            "GROUP BY ALL", [out["exchange"]]).fetchall()}
    assert greedy == (smoke_config.task.n_test, 1)  # one greedy sample per test problem
    assert {r[0] for r in rows} == set(config.exchange.ratios) and {r[1] for r in rows} >= {0}
    scored = smoke_config.bank.n - smoke_config.bank.n // 2  # half the bank sets the bins, half is scored
    for ratio, b, matched, used, cut, small, large_acc in rows:
        assert used == pytest.approx(min(matched, scored)) and cut == (matched > scored)
        # the summary is the mean of the stored per-problem outcomes (uncharged: the paper's accounting)
        expect = overall[(ratio, False)] if b == 0 else per_problem[(ratio, False, b)][:2]
        assert (small, large_acc) == pytest.approx(expect)
        charged = next(n for (r, c, _), (*_, n) in per_problem.items() if r == ratio and c)
        assert charged < matched  # the verifier's FLOPs leave fewer samples
    assert (trained_workdir / "reports" / f"exchange-{out['exchange']}.md").read_text().count("R = ") == 3
    findings = (trained_workdir / "reports" / "findings.md").read_text()
    assert "| 6 |" in findings and "### 6." in findings and "](exchange-" in findings  # its plots are linked
    assert "not measured" not in findings.split("### 6.")[1][:200]
