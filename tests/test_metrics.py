from datetime import datetime
from itertools import combinations
from math import comb

import numpy as np
import pyarrow as pa
import pytest

from ttscale.tasks.metrics import ProblemSamples, answer_prior, bank_curves, guess_at_k, majority_at_k, pass_at_k


@pytest.mark.parametrize("n, c, k", [(10, 0, 1), (10, 3, 1), (10, 3, 4), (10, 9, 2), (64, 5, 16), (8, 8, 8)])
def test_pass_at_k_matches_combinatorics(n: int, c: int, k: int):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_majority_exact_on_small_bank():
    answers = ["7", "7", "3", None]
    correct = [True, True, False, False]
    # Enumerate all 2-subsets: the vote is right when it has a lone '7' or two 7s; ties split.
    expected = []
    for idx in combinations(range(4), 2):
        votes = [answers[i] for i in idx if answers[i] is not None]
        if not votes:
            expected.append(0.0)
            continue
        counts = {a: votes.count(a) for a in votes}
        top = max(counts.values())
        leaders = [a for a, v in counts.items() if v == top]
        expected.append(sum(a == "7" for a in leaders) / len(leaders))
    est = majority_at_k(answers, correct, 2, draws=20000, rng=np.random.default_rng(0))
    assert est == pytest.approx(np.mean(expected), abs=0.02)
    assert majority_at_k(answers, correct, 4, draws=5, rng=np.random.default_rng(0)) == 1.0


def test_majority_can_lose_to_pass():
    answers = ["1", "2", "2", "2"]
    correct = [True, False, False, False]
    assert majority_at_k(answers, correct, 4, 10, np.random.default_rng(0)) == 0.0
    assert pass_at_k(4, 1, 4) == 1.0


def test_guessing_baseline():
    prior = answer_prior(["1", "1", "2", "3"])
    assert guess_at_k("1", prior, 1) == pytest.approx(0.5)
    assert guess_at_k("9", prior, 64) == 0.0
    assert guess_at_k("3", prior, 2) == pytest.approx(1 - 0.75**2)


def test_bank_curves_levels_and_all():
    problems = [ProblemSamples(1, "5", ["5", "5", "4", "4"], [True, True, False, False]),
                ProblemSamples(2, "9", ["1", "2", "3", "9"], [False, False, False, True])]
    curves = bank_curves(problems, {"5": 0.5}, draws=100)
    assert curves[("pass", 1, 1)] == pytest.approx(0.5)
    assert curves[("pass", 2, 4)] == 1.0
    assert curves[("pass", 0, 1)] == pytest.approx((0.5 + 0.25) / 2)
    assert curves[("guess", 1, 1)] == 0.5 and curves[("guess", 2, 1)] == 0.0
    assert {k for _, _, k in curves} == {1, 2, 4}


def test_sql_view_matches_python_estimator(tmp_path):
    from ttscale.warehouse.store import Warehouse

    rng = np.random.default_rng(3)
    cand_rows, prob_rows, truth = [], [], {}
    for i in range(6):
        pid = f"p{i}"
        prob_rows.append({"problem_id": pid, "source": "arith", "split": "test", "index": i, "level": i % 2 + 1,
                          "question": f"q{i}", "answer": "1", "meta": "{}"})
        correct = rng.random(16) < rng.random()
        truth[pid] = (i % 2 + 1, int(correct.sum()))
        for j, ok in enumerate(correct):
            cand_rows.append({"candidate_id": f"{pid}-{j}", "bank_id": "b", "run_id": "r", "problem_id": pid,
                              "method": "sample", "budget": 16, "sample_index": j, "seed": 0, "model": "m",
                              "text": "", "final_answer": None, "correct": bool(ok), "n_steps": 0,
                              "prompt_tokens": 1, "generated_tokens": 1, "finish_reason": "stop", "flops": 1.0,
                              "created_at": datetime(2026, 1, 1)})
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.insert("problems", pa.Table.from_pylist(prob_rows))
        wh.insert("candidates", pa.Table.from_pylist(cand_rows))
        view = {(r["level"], r["k"]): r["pass_at_k"] for r in wh.query("SELECT * FROM pass_at_k").to_pylist()}
    for k in (1, 2, 4, 8, 16):
        expected = np.mean([pass_at_k(16, c, k) for _, c in truth.values()])
        assert view[(0, k)] == pytest.approx(expected)
        level1 = np.mean([pass_at_k(16, c, k) for lv, c in truth.values() if lv == 1])
        assert view[(1, k)] == pytest.approx(level1)


def test_wilson_matches_the_sql_views_and_holds_its_estimate():
    import duckdb

    from ttscale.tasks.metrics import wilson

    assert wilson(0.0, 7)[0] == 0.0 and wilson(1.0, 7)[1] == 1.0
    lo, hi = wilson(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    sql = duckdb.sql("SELECT (a + 1.9208 / n - 1.96 * sqrt(a * (1 - a) / n + 0.9604 / (n * n))) / (1 + 3.8416 / n) "
                     "FROM (SELECT 0.3 AS a, 40 AS n)").fetchall()[0][0]
    assert wilson(0.3, 40)[0] == pytest.approx(sql)


def test_a_base_model_that_did_not_learn_the_task_is_named_in_a_warning():
    from ttscale.tasks.reports.bank import LEARNED_BAR, unlearned_warning

    # the 12-05 broken run's bank: pass@1 0.104 on level 1, 0.024 overall (level 0)
    broken = {0: 0.024, 1: 0.104, 2: 0.006, 3: 0.002, 4: 0.009, 5: 0.0}
    warning = unlearned_warning(broken, "base")
    assert warning and "level (1) is 0.104" in warning and "base_model.restarts" in warning
    healthy = {0: 0.47, 1: 0.96, 2: 0.9, 3: 0.8, 4: 0.2, 5: 0.01}
    assert unlearned_warning(healthy, "base") is None
    assert unlearned_warning({0: 0.9, 1: LEARNED_BAR - 0.01}, "base")  # level 0 (all) never hides a level
    assert unlearned_warning({}, "base") is None
