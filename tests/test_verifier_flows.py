"""label-steps, train-prm and score-bank as flows: warehouse rows, registry, views, resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
from faults import DiesOnCall
from mlflow.tracking import MlflowClient

import ttscale.flows.label_steps as label_steps_module
from ttscale.flows.label_steps import label_steps
from ttscale.flows.pipeline import pipeline
from ttscale.flows.score_bank import score_bank
from ttscale.models.scorers import resolve_prm, scorer_key
from ttscale.flows.train_prm import REGISTERED_NAME
from ttscale.models.prm import PRM
from ttscale.tasks.selection import ProblemCandidates, select
from ttscale.workdir import Workdir


@pytest.fixture(scope="module")
def scored_workdir(trained_workdir: Path, smoke_config) -> tuple[Path, dict[str, str]]:
    return trained_workdir, pipeline(config=smoke_config, workdir=str(trained_workdir))


def test_pipeline_labels_trains_scores_and_draws_curves(scored_workdir, smoke_config):
    workdir, out = scored_workdir
    assert {"label_bank_id", "prm", "scorer_id"} <= set(out)
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        labeled, steps = con.execute(
            "SELECT count(DISTINCT c.candidate_id), count(*) FROM step_labels l JOIN candidates c USING (candidate_id) "
            "WHERE c.bank_id = ?", [out["label_bank_id"]]).fetchall()[0]
        assert labeled == smoke_config.labels.problems * smoke_config.labels.samples and steps >= labeled
        cost = con.execute("SELECT count(*), min(samples), sum(tokens), sum(flops) FROM labeling_cost "
                           "WHERE label_bank_id = ?", [out["label_bank_id"]]).fetchall()[0]
        assert cost[0] == smoke_config.labels.problems and cost[1] == smoke_config.labels.samples
        assert cost[2] > 0 and cost[3] > 0
        # every step of every bank candidate has one score from this scorer
        missing = con.execute(
            "SELECT count(*) FROM steps s JOIN candidates c USING (candidate_id) WHERE c.bank_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM step_scores x WHERE x.scorer_id = ? AND x.candidate_id = s.candidate_id "
            "AND x.step_index = s.step_index)", [out["bank_id"], out["scorer_id"]]).fetchall()[0][0]
        assert missing == 0
        rules = con.execute("SELECT DISTINCT rule, aggregation FROM verifier_curves WHERE scorer_id = ?",
                            [out["scorer_id"]]).fetchall()
        assert {("oracle", "-"), ("majority", "-")} <= set(rules)
        assert {a for r, a in rules if r == "weighted"} == {"last", "min", "prod", "mean"}
        ns = [n for (n,) in con.execute("SELECT DISTINCT n FROM verifier_curves WHERE level = 0 ORDER BY n").fetchall()]
        assert ns == [1, 2, 4, 8]
        # every step of the bank and the labeled solutions (what score-bank finds stored) is checked
        # exactly, and a candidate without an error that reaches an answer is right
        unchecked = con.execute("SELECT count(*) FROM steps s JOIN candidates c USING (candidate_id) WHERE c.method "
                                "IN ('sample', 'label') AND NOT EXISTS (SELECT 1 FROM step_truth t WHERE "
                                "t.candidate_id = s.candidate_id AND t.step_index = s.step_index)").fetchall()[0][0]
        assert unchecked == 0
        assert con.execute("SELECT count(*) FROM candidates c JOIN (SELECT candidate_id FROM step_truth GROUP BY 1 "
                           "HAVING count(error) = 0 AND bool_or(step_index = 0)) USING (candidate_id) "
                           "WHERE NOT c.correct AND c.final_answer IS NOT NULL").fetchall()[0][0] == 0
        # the baselines score every step of the same bank beside the PRM, each with its own curves
        ids = {k: scorer_key(resolve_prm(k, Workdir.at(str(workdir))), None) for k in ("confidence", "oracle")}
        for name, sid in ids.items():
            assert con.execute("SELECT count(*) FROM step_scores x JOIN candidates c USING (candidate_id) "
                               "WHERE x.scorer_id = ? AND c.bank_id = ?", [sid, out["bank_id"]]).fetchall()[0][0] \
                == con.execute("SELECT count(*) FROM steps JOIN candidates c USING (candidate_id) WHERE c.bank_id = ?",
                               [out["bank_id"]]).fetchall()[0][0], name
            assert con.execute("SELECT count(*) FROM verifier_curves WHERE scorer_id = ? AND rule = 'weighted'",
                               [sid]).fetchall()[0][0] > 0, name
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ttscale")
    (prm_run,) = client.search_runs([exp.experiment_id], "tags.stage = 'train-prm'")
    assert {"prm_train_loss", "prm_val_loss", "prm_step_auc", "prm_ece"} <= set(prm_run.data.metrics)
    (score_run,) = client.search_runs([exp.experiment_id], "tags.stage = 'score-bank'")
    assert "verifier/weighted_last" in score_run.data.metrics
    assert len(client.get_metric_history(score_run.info.run_id, "verifier/majority")) == 4  # one point per N
    assert (workdir / "reports" / f"score-bank-{out['bank_id']}-{out['scorer_id']}.png").stat().st_size > 1000
    report = (workdir / "reports" / f"score-bank-{out['bank_id']}-{out['scorer_id']}.md").read_text()
    assert "| level | trained | confidence | oracle |" in report
    # each baseline cell is within-problem AUC; weighted; best-of-N at the bank's N, the latter from the curves
    table = report.split("| level | trained | confidence | oracle |")[1]
    oracle_all = next(line for line in table.splitlines() if line.startswith("| all |")).split(" | ")[3]
    auc, weighted, best = (float(x) for x in oracle_all.strip(" |").split("; "))
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        stored = dict(con.execute("SELECT rule, accuracy FROM verifier_curves WHERE scorer_id = ? AND level = 0 AND "
                                  "aggregation = 'last' AND n = (SELECT max(n) FROM verifier_curves) AND rule IN "
                                  "('weighted', 'best_of_n')", [ids["oracle"]]).fetchall())
    assert (weighted, best) == (round(stored["weighted"], 3), round(stored["best_of_n"], 3))
    assert auc != auc or 0 <= auc <= 1  # nan where no smoke problem has both right and wrong candidates
    assert "| level | within-problem AUC | first-error AUC |" in report and "| first error | ranked first |" in report
    # adaptive self-consistency: every lead, overall and per level, in the warehouse, MLflow and the report
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        adaptive = con.execute("SELECT k, value FROM metrics WHERE name = 'adaptive_sc/mean_samples' AND level = 0 "
                               "ORDER BY k").fetchall()
    assert [k for k, _ in adaptive] == smoke_config.scoring.adaptive_leads
    assert all(1 <= v <= smoke_config.bank.n for _, v in adaptive)
    assert [v for _, v in adaptive] == sorted(v for _, v in adaptive)  # the same orders for every lead
    assert len(client.get_metric_history(score_run.info.run_id, "adaptive_sc_accuracy")) == len(adaptive)
    assert "Adaptive self-consistency" in report and "vs majority@" in report
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        rows = dict(con.execute("SELECT name, count(*) FROM metrics WHERE name IN ('adaptive_sc/accuracy', "
                                "'adaptive_weighted/accuracy') GROUP BY 1").fetchall())
    # the weighted vote at every lead and level the plain one has (smoke_config.scoring.adaptive_weighted is on)
    assert rows["adaptive_weighted/accuracy"] == rows["adaptive_sc/accuracy"] >= len(adaptive)
    assert "Adaptive weighted voting" in report and "vs weighted@" in report


def test_registry_round_trip_scores_the_same(scored_workdir):
    workdir, _ = scored_workdir
    wd = Workdir.at(workdir)
    client = MlflowClient(tracking_uri=wd.mlflow_uri)
    (version,) = client.search_model_versions(f"name = '{REGISTERED_NAME}'")
    from_registry = resolve_prm(f"models:/{REGISTERED_NAME}/{version.version}", wd)
    local = resolve_prm("trained", wd)
    assert from_registry != local
    prompts, steps = ["rule\n\n02: init#0011=1234\n\n"], [["01: 1234#0011=1245", "00: 1245#0011=1256", "ans=1256"]]
    assert PRM(from_registry.path).score(prompts, steps) == PRM(local.path).score(prompts, steps)
    with pytest.raises(ValueError, match="registry"):
        resolve_prm("models:/no-such-prm/7", wd)


def test_bank_selection_view_agrees_with_python_at_full_n(scored_workdir):
    workdir, out = scored_workdir
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        view = {r[0]: r[1:] for r in con.execute(
            "SELECT problem_id, weighted_correct, majority_correct, oracle_correct FROM bank_selection "
            "WHERE bank_id = ? AND scorer_id = ?", [out["bank_id"], out["scorer_id"]]).fetchall()}
        rows = con.execute("SELECT problem_id, final_answer, correct, last FROM candidate_scores "
                           "WHERE bank_id = ? AND scorer_id = ? ORDER BY problem_id", [out["bank_id"], out["scorer_id"]]
                           ).fetchall()
    groups: dict[str, list] = {}
    for pid, answer, correct, last in rows:
        groups.setdefault(pid, []).append((answer, correct, last))
    compared = 0
    for pid, cands in groups.items():
        pc = ProblemCandidates.build([c[0] for c in cands], [c[1] for c in cands], {"last": [c[2] for c in cands]})
        totals: dict[str, float] = {}
        for answer, _, last in cands:
            if answer is not None:
                totals[answer] = totals.get(answer, 0.0) + last
        top = sorted(totals.values(), reverse=True)
        if pid not in view or (len(top) > 1 and abs(top[0] - top[1]) < 1e-9):
            continue  # no parseable answer, or a tie the two sides may break differently
        mask = np.ones((1, len(cands)), bool)
        assert bool(view[pid][0]) == bool(select(pc, mask, "weighted", "last")[0])
        assert bool(view[pid][2]) == bool(select(pc, mask, "oracle")[0])
        compared += 1
    assert compared > 0


def test_rerun_writes_nothing_new(scored_workdir, smoke_config):
    workdir, out = scored_workdir
    tables = ("candidates", "steps", "step_labels", "step_scores", "selection_curves", "search_nodes", "selections")

    def counts() -> dict[str, int]:
        with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in tables}

    before = counts()
    assert pipeline(config=smoke_config, workdir=str(workdir)) == out
    assert counts() == before
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    assert len(client.search_model_versions(f"name = '{REGISTERED_NAME}'")) == 1  # not retrained


def test_killed_labeling_resumes_without_duplicate_labels(trained_workdir: Path, smoke_config, tmp_path, monkeypatch):
    workdir = tmp_path / "resume-labels"
    shutil.copytree(trained_workdir / "models" / "base", workdir / "models" / "base")
    real = label_steps_module.label_chunk
    monkeypatch.setattr(label_steps_module, "label_chunk", DiesOnCall(real, dies_on=2))
    with pytest.raises(BaseException):
        label_steps(config=smoke_config, workdir=str(workdir))
    db = str(workdir / "ttscale.duckdb")
    with duckdb.connect(db, read_only=True) as con:
        first = con.execute("SELECT candidate_id, step_index, label FROM step_labels ORDER BY 1, 2").fetchall()
        n_first = con.execute("SELECT count(DISTINCT problem_id) FROM candidates WHERE method = 'label'").fetchall()[0][0]
        assert n_first == smoke_config.labels.problems_per_chunk  # one whole chunk, nothing of the second
    resumed = DiesOnCall(real)
    monkeypatch.setattr(label_steps_module, "label_chunk", resumed)
    label_steps(config=smoke_config, workdir=str(workdir))
    assert resumed.calls == 1  # the resumed run labeled only the missing chunk
    with duckdb.connect(db, read_only=True) as con:
        n, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (candidate_id, step_index)) FROM step_labels").fetchall()[0]
        assert n == distinct
        kept = con.execute("SELECT candidate_id, step_index, label FROM step_labels WHERE candidate_id IN "
                           f"({','.join('?' * len(first))}) ORDER BY 1, 2", [r[0] for r in first]).fetchall()
        assert kept == first
        problems = con.execute("SELECT count(DISTINCT problem_id) FROM candidates WHERE method = 'label'").fetchall()
        assert problems[0][0] == smoke_config.labels.problems


def test_score_bank_without_prm_says_what_to_do(trained_workdir: Path, smoke_config, tmp_path):
    workdir = tmp_path / "no-prm"
    shutil.copytree(trained_workdir / "models" / "base", workdir / "models" / "base")
    with pytest.raises(FileNotFoundError, match="train-prm"):
        score_bank(config=smoke_config, workdir=str(workdir))


def test_pipeline_searches_and_stores_every_node(scored_workdir, smoke_config):
    workdir, _ = scored_workdir
    cfg = smoke_config.search
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        runs = con.execute("SELECT strategy, budget, width, lookahead, count(*) FROM selections GROUP BY ALL").fetchall()
        assert {(s, n) for s, n, *_ in runs} == {(s, n) for s in cfg.strategies for n in cfg.budgets}
        assert all(count == cfg.problems for *_, count in runs)
        orphans = con.execute("SELECT count(*) FROM search_nodes n WHERE parent_id IS NOT NULL AND NOT EXISTS "
                              "(SELECT 1 FROM search_nodes p WHERE p.node_id = n.parent_id)").fetchall()[0][0]
        assert orphans == 0  # every expanded node's parent is stored too
        curve = con.execute("SELECT strategy, budget, charged, accuracy, tokens_per_problem FROM accuracy_vs_budget "
                            "WHERE level = 0").fetchall()
        assert {(s, n) for s, n, *_ in curve} == {(s, n) for s in cfg.strategies for n in cfg.budgets}
        raw = dict(((s, n), (acc, tokens)) for s, n, acc, tokens in con.execute(
            "SELECT strategy, budget, avg(correct::INT), avg(prompt_tokens + generated_tokens) FROM selections "
            "GROUP BY ALL").fetchall())  # one seed: the view's mean over seeds is the plain mean
        for s, n, _, acc, tokens in curve:
            assert (acc, tokens) == pytest.approx(raw[(s, n)]) and tokens > 0
        assert all(charged == 2 * n for s, n, charged, *_ in curve if s == "lookahead")
    assert list((workdir / "reports").glob("search-*.png"))
