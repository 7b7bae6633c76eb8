"""The FLOPs formulas, the matched budget, and the exchange flow against a larger embedded model."""

from __future__ import annotations

import duckdb
import pytest

from tasks.exchange import exchange_rows, inference_flops, matched_samples, pretrain_flops, usable_budget


@pytest.mark.parametrize("ratio", [0.16, 0.79, 22.0])
def test_matched_samples_spend_the_same_total_flops(ratio):
    small, large, tokens = 1.0e6, 14.0e6, 2.0e6
    n = matched_samples(small, large, ratio)
    small_total = pretrain_flops(small, tokens) + inference_flops(small, n * ratio * tokens)
    large_total = pretrain_flops(large, tokens) + inference_flops(large, ratio * tokens)
    assert small_total == pytest.approx(large_total)
    assert pretrain_flops(2, 3) == 36 and inference_flops(2, 3) == 12


def test_paper_ratios_and_what_the_bank_can_serve():
    assert matched_samples(1, 14, 0.16) == pytest.approx(3 * 13 / 0.16 + 14)  # 257.75
    assert matched_samples(1, 14, 22.0) == pytest.approx(15.77, abs=0.01)
    assert matched_samples(1, 14, 22.0, token_ratio=0.5) == pytest.approx(15.77 / 2, abs=0.01)  # longer samples
    assert usable_budget(257.75, 32) == (32, True)  # cut to the bank: a lower bound
    assert usable_budget(15.77, 32) == (8, False)
    assert usable_budget(0.5, 32) == (0, False)
    rows = exchange_rows([22.0], 1, 14, 32, {("weighted", 8): {0: 0.7, 1: 0.9}, ("majority", 8): {0: 0.6, 1: 1.0},
                                             ("optimal", 8): {0: 0.7, 1: 1.0}}, {0: 0.65, 1: 1.0})
    assert [(r["bin"], r["samples_used"], r["winner"]) for r in rows] == [(0, 8, "test-time compute"), (1, 8, "tie")]


def test_exchange_flow_writes_the_table(trained_workdir, smoke_config):
    from flows.pipeline import pipeline

    large = smoke_config.base_model.model_copy(update={"hidden_size": 128, "intermediate_size": 256, "n_heads": 4,
                                                       "max_updates": 60})
    config = smoke_config.model_copy(update={"large_model": large})
    out = pipeline(config=config, workdir=str(trained_workdir))
    with duckdb.connect(str(trained_workdir / "ttscale.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT ratio, bin, matched_samples, samples_used, lower_bound, small_optimal, large_greedy "
                           "FROM flops_exchange WHERE run_id = ? ORDER BY ratio, bin", [out["exchange"]]).fetchall()
        greedy = con.execute("SELECT count(*), max(budget) FROM candidates WHERE method = 'greedy'").fetchall()[0]
    assert greedy == (smoke_config.task.n_test, 1)  # one greedy sample per test problem
    assert {r[0] for r in rows} == set(config.exchange.ratios) and {r[1] for r in rows} >= {0}
    for ratio, _, matched, used, cut, small, large_acc in rows:
        assert used <= smoke_config.bank.n and cut == (matched > smoke_config.bank.n)
        assert 0 <= small <= 1 and 0 <= large_acc <= 1
    assert (trained_workdir / "reports" / f"exchange-{out['exchange']}.md").read_text().count("R = ") == 3
    findings = (trained_workdir / "reports" / "findings.md").read_text()
    assert "| 6 |" in findings and "### 6." in findings and "](exchange-" in findings  # its plots are linked
    assert "not measured" not in findings.split("### 6.")[1][:200]
