"""Revisions: trajectory construction, chain windowing, selection rules, the ORM, the flows, resume."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import duckdb
import pytest
from faults import DiesOnCall
from mlflow.tracking import MlflowClient
from rapidfuzz.distance import Levenshtein

import ttscale.tasks.revisions as revisions_module
from ttscale.flows.pipeline import pipeline
from ttscale.flows.revise import revise
from ttscale.flows.train_orm import REGISTERED_NAME as ORM_NAME
from ttscale.models.prm import PRM
from ttscale.models.confidence import ConfidenceScorer
from ttscale.models.generator import Completion, SamplingSpec
from ttscale.models.reviser import ContextRoom, context_length
from ttscale.tasks.metrics import wilson
from ttscale.tasks.grading import split_steps
from ttscale.tasks.problems import Problem
from ttscale.tasks.revision_sweep import ChainAttempt, grid, select, sweep
from ttscale.tasks import arith
from ttscale.tasks.reports.revision import RevisionFindings
from ttscale.tasks.revisions import (ATTEMPT_SEPARATOR, Attempt, ContextEditor, RestartEditor, attempts_table, fitted,
                                     generate_round, least_confident, next_round, revision_prompt,
                                     slip_trajectories, staircase, trajectories, window)
from ttscale.warehouse.store import Warehouse
from ttscale.tasks.sampling import prompt_for, response_prefix

CORRECT = "01: 1111+0001=1112\n\n00: 1112+0001=1113\n\nans=1113"
WRONG = [
    "01: 1111+0001=1112\n\n00: 1112+0001=1114\n\nans=1114",  # one digit off
    "01: 1111+0001=1119\n\n00: 1119+0001=1120\n\nans=1120",  # a few off
    "01: 1111+0001=9999\n\n00: 9999+0001=0000\n\nans=0000",  # far
    "nonsense",  # farthest
    "01: 1111+0001=1112\n\n00: 1112+0001=1115\n\nans=1115",  # one digit off
]


def test_trajectories_order_by_edit_distance_and_never_show_a_correct_answer():
    texts = [CORRECT, CORRECT] + WRONG
    correct = [True, True] + [False] * len(WRONG)
    seen_sizes = set()
    for seed in range(60):
        for t in trajectories("p", texts, correct, max_context=4, per_problem=2, rng=random.Random(seed)):
            assert t.target == CORRECT
            assert CORRECT not in t.context and len(t.context) <= 4
            assert list(t.distances) == [Levenshtein.distance(c, CORRECT) for c in t.context]
            assert list(t.distances) == sorted(t.distances, reverse=True)  # most similar last
            if t.context:  # drawn from the 2k nearest
                nearest = sorted(Levenshtein.distance(w, CORRECT) for w in WRONG)[: 2 * len(t.context)]
                assert max(t.distances) <= max(nearest)
            seen_sizes.add(len(t.context))
    assert seen_sizes == {0, 1, 2, 3, 4}
    # context is bounded by the incorrect samples there are; no correct sample means no trajectory
    assert all(len(t.context) <= 1 for t in trajectories("p", [CORRECT, WRONG[0]], [True, False], 4, 3, random.Random(0)))
    assert trajectories("p", WRONG, [False] * len(WRONG), 4, 3, random.Random(0)) == []
    assert len(trajectories("p", [CORRECT] * 9, [True] * 9, 4, 3, random.Random(0))) == 3


@pytest.mark.parametrize("question", ["rule\n\n02: init+0001=1111", "rule\n\n05: init#0357=4821"])
def test_a_slip_is_one_wrong_step_and_the_rest_derived_from_it(question: str):
    """The synthetic wrong attempt: exactly one miscomputed step, every other step right given the one before."""
    steps = []
    head = arith._INIT.search(question)
    remaining, sym, key, value = int(head[1]), head[2], int(head[3]), int(head[4])
    fn = next(f for _, s, f in arith.OPS.values() if s == sym)
    for r in range(remaining - 1, -1, -1):
        steps.append(arith.STEP_TEMPLATE.format(remaining=r, value=value, sym=sym, key=key, result=fn(value, key)))
        value = fn(value, key)
    right = arith.solution(steps + [arith.ANSWER_TEMPLATE.format(answer=value)])
    assert arith.grade(right, f"{value:04d}")[1]
    wrong_steps_seen = set()
    for seed in range(40):
        slip = arith.slipped(question, right, random.Random(seed))
        errors = arith.step_truth(question, slip.split(arith.STEP_DELIMITER))
        assert [e for e in errors if e] == ["arithmetic"]  # one wrong step, of the arithmetic kind
        wrong_steps_seen.add(errors.index("arithmetic"))
        assert not arith.grade(slip, f"{value:04d}")[1]  # and so a wrong answer
    assert wrong_steps_seen == set(range(remaining))  # any step can slip
    assert arith.slipped(question, "nonsense", random.Random(0)) is None
    assert arith.slipped(question, right.replace("ans=", "ans=9"), random.Random(0)) is None  # not a right derivation


def test_slip_trajectories_hold_only_slips_of_their_target_farthest_first():
    slip = lambda text, rng: text.replace("1113", f"{rng.randrange(1000, 1113)}")  # noqa: E731
    sizes = set()
    for seed in range(30):
        for t in slip_trajectories("p", [CORRECT] * 3, slip, max_context=4, per_problem=2, rng=random.Random(seed)):
            assert t.target == CORRECT and CORRECT not in t.context and len(t.context) <= 4
            assert list(t.distances) == sorted(t.distances, reverse=True)
            assert list(t.distances) == [Levenshtein.distance(c, CORRECT) for c in t.context]
            sizes.add(len(t.context))
    assert sizes == {0, 1, 2, 3, 4}
    assert slip_trajectories("p", [], slip, 4, 2, random.Random(0)) == []


def test_transitions_count_what_independent_attempts_would_give(tmp_path: Path):
    """The null a reviser must beat: each attempt after the first is expected to be right as often as its
    problem's turn-0 attempts (leaving out the one before it); a reviser that fixes every wrong attempt
    beats it, one that ignores its context does not."""
    # problem a: turn 0 right in 1 of 4 chains; every attempt after a wrong one right, after a right one right
    # problem b: turn 0 right in 2 of 4; attempts copy the one before them (correct stays correct, wrong stays wrong)
    chains = {("a", 0): [0, 1], ("a", 1): [0, 1], ("a", 2): [0, 1], ("a", 3): [1, 1],
              ("b", 0): [1, 1], ("b", 1): [1, 1], ("b", 2): [0, 0], ("b", 3): [0, 0]}
    rows = [Attempt(p, c, i, "x", None, bool(ok), 1, 1) for (p, c), oks in chains.items() for i, ok in enumerate(oks)]
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.insert("revision_attempts", attempts_table(rows, "cs", "run", 10))
        t = wh.query("SELECT * FROM revision_transitions WHERE chain_set_id = 'cs'").to_pylist()[0]
        assert (t["after_incorrect"], t["incorrect_to_correct"], t["after_correct"], t["correct_to_incorrect"]) == (5, 3, 3, 0)
        # after a wrong turn 0, its problem's other three turn-0 attempts: a 1/3 (x3), b 2/3 (x2)
        assert t["independent_incorrect_to_correct"] == pytest.approx(3 * 1 / 3 + 2 * 2 / 3)
        # after a right turn 0: a's other three 0/3 right, b's 1/3 right (x2)
        assert t["independent_correct_to_incorrect"] == pytest.approx(1.0 + 2 * (2 / 3))
        found = RevisionFindings(rule="orm_hier", budget=2, curves=[], turns=[], transitions=t,
                                 pairs=wh.query("SELECT * FROM revision_pairs").to_pylist())
    fixes = found.context_gain(after=False)
    assert fixes.problems == 2 and fixes.effect == pytest.approx(((1 - 1 / 3) + (0 - 2 / 3)) / 2)


def _problem(pid: str = "p1") -> Problem:
    return Problem(problem_id=pid, source="arith", split="test", index=0, level=1,
                   question="rule\n\n02: init#0001=1111", answer="1113", meta={})


def test_chain_window_and_prompt():
    problem = _problem()
    attempts = ["a0", "a1", "a2", "a3", "a4", "a5"]
    assert window(attempts, 4) == ["a2", "a3", "a4", "a5"] and window(attempts, 0) == [] and window(["a0"], 4) == ["a0"]
    prompt = revision_prompt(problem, window(attempts, 2))
    assert prompt == prompt_for(problem) + "a4" + ATTEMPT_SEPARATOR + prompt_for(problem) + "a5" + ATTEMPT_SEPARATOR \
        + prompt_for(problem)
    assert "a3" not in prompt and prompt.endswith(prompt_for(problem))  # a fresh attempt starts as from scratch
    assert revision_prompt(problem, []) == prompt_for(problem)
    # next_round continues each chain at its next position, with only the window in view
    done = {("p1", 0): ["x0", "x1", "x2"], ("p1", 1): ["y0"]}
    todo = next_round([problem], [4, 1, 2], done, ContextEditor(window=2))
    assert [(chain, pos) for _, chain, pos, _ in todo] == [(0, 3), (2, 0)]
    prompt, prefix, read = todo[0][3]
    assert "x0" not in prompt and "x1" in prompt and "x2" in prompt and (prefix, read) == ("", 0)


def test_a_window_that_would_not_fit_loses_its_oldest_attempts_first(base_model_dir: Path):
    problem = _problem()
    room = ContextRoom(base_model_dir, limit=160)
    attempts = [f"0{i}: step#{i}{i}{i}{i}=" + "1" * 30 for i in range(4)]
    fits = lambda prompt: room.fits(prompt, 40)  # noqa: E731 - room for a 40-token answer
    kept = fitted(problem, attempts, fits)
    assert 0 < len(kept) < len(attempts) and kept == attempts[-len(kept):]  # the most recent stay
    assert fits(revision_prompt(problem, kept)) and not fits(revision_prompt(problem, attempts[-len(kept) - 1:]))
    assert room.tokens(revision_prompt(problem, kept)) + 1 + 40 <= 160
    assert fitted(problem, attempts, lambda _: False) == []  # nothing fits: a fresh attempt
    todo = next_round([problem], [5], {("p1", 0): attempts}, ContextEditor(window=4, fits=fits))
    assert todo[0][3][0] == revision_prompt(problem, kept)
    assert context_length(base_model_dir) >= 160  # the limit a served reviser is held to by default


class _Confidence:
    """Step scores as the lowest-so-far fold gives them: the second step is the least confident."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str]]] = []

    def score_with_tokens(self, prompts, step_lists):
        self.seen += list(zip(prompts, step_lists))
        scores = [[0.9, 0.2, 0.2][: len(steps)] for steps in step_lists]
        return scores, [[10 * (i + 1) for i in range(len(steps))] for steps in step_lists]


class _Echo:
    """A generator that writes a fixed last step and records what it was asked to continue."""

    n_params = 10

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def generate(self, prompts, spec, prefixes=None):
        self.asked += list(zip(prompts, prefixes or [""] * len(prompts)))
        return [[Completion("ans=1113", 7, 3, "stop")] for _ in prompts]


def test_a_restart_keeps_the_steps_before_the_least_confident_one():
    assert least_confident([0.9, 0.4, 0.4, 0.4]) == 1 and least_confident([0.3, 0.3]) == 0
    assert least_confident([0.9, 0.8, 0.7]) == 2
    problem, confidence = _problem(), _Confidence()
    editor = RestartEditor(confidence, split_steps)
    done = {("p1", 0): [WRONG[0]]}
    todo = next_round([problem], [2, 1], done, editor)
    # chain 0 continues its attempt from the step before its least confident one; chain 1 starts fresh
    assert [(chain, pos) for _, chain, pos, _ in todo] == [(0, 1), (1, 0)]
    assert todo[0][3] == (prompt_for(problem), "01: 1111+0001=1112" + arith.STEP_DELIMITER, 30)
    assert todo[1][3] == (prompt_for(problem), "", 0)
    assert confidence.seen == [(prompt_for(problem), split_steps(WRONG[0]))]  # only chains with an attempt
    generator = _Echo()
    attempts = generate_round(generator, todo, SamplingSpec())
    assert generator.asked == [(prompt_for(problem), "01: 1111+0001=1112" + arith.STEP_DELIMITER), (prompt_for(problem), "")]
    assert attempts[0].text == "01: 1111+0001=1112" + arith.STEP_DELIMITER + "ans=1113"
    # the confidence pass read the problem and the earlier attempt: charged as read, beside the prompt
    assert (attempts[0].prompt_tokens, attempts[0].generated_tokens) == (7 + 30, 3)
    assert (attempts[1].prompt_tokens, attempts[1].text) == (7, "ans=1113")


def test_staircase_holds_every_budget_and_length():
    assert staircase(8) == [8, 4, 2, 2, 1, 1, 1, 1]
    assert staircase(1) == [1] and staircase(4) == [4, 2, 1, 1]
    for budget in (1, 2, 4, 8, 16):
        lengths = staircase(budget)
        for n, length in grid(budget):
            assert all(lengths[i] >= length for i in range(n // length))


def _a(answer: str | None, correct: bool, orm: float = 0.5) -> ChainAttempt:
    return ChainAttempt(answer, correct, {"orm": orm})


def test_flat_and_hierarchical_selection_on_hand_made_chains():
    rng = random.Random(0)
    # chain 0 is noisy (right answer once, a wrong one twice); chains 1 and 2 say "7" once each
    chains = [[_a("5", False), _a("7", True), _a("5", False)], [_a("7", True), _a("9", False), _a("8", False)],
              [_a("7", True), _a("3", False), _a("4", False)]]
    assert select(chains, "majority_flat", rng) == ("7", True)  # 7 x3 vs 5 x2
    # within-chain winners: 5 (chain 0), and a random one of the three singletons per other chain
    assert select([[_a("5", False), _a("5", False), _a("7", True)], [_a("7", True)], [_a("5", False)]],
                  "majority_hier", rng) == ("5", False)
    # the ORM's weights decide: a lone confident right answer beats two doubtful wrong ones
    weighted = [[_a("1", False, 0.2), _a("2", True, 0.9)], [_a("1", False, 0.3), _a("3", False, 0.1)]]
    assert select(weighted, "orm_flat", rng) == ("2", True)
    # hierarchical: each chain's winner carries its best score; 0.9 beats 0.3
    assert select(weighted, "orm_hier", rng) == ("2", True)
    # unparseable answers never win; with nothing parseable there is no answer
    assert select([[_a(None, False, 0.99), _a("4", True, 0.01)]], "orm_flat", rng) == ("4", True)
    assert select([[_a(None, False)]], "majority_flat", rng) == (None, False)
    assert select(chains, "oracle", rng)[1] and not select([[_a("1", False)]], "oracle", rng)[1]
    with pytest.raises(ValueError, match="unknown revision selection rule"):
        select(chains, "best_guess_flat", rng)


def test_sweep_cuts_budgets_and_lengths_from_the_staircase():
    # chain i's attempts are right only at position 1: L = 1 never sees a right answer, longer chains do
    pattern = [_a("0", False), _a("1", True), _a("0", False), _a("0", False)]
    chains = {i: pattern[:length] for i, length in enumerate(staircase(4))}
    rows = sweep({"p": chains}, budget=4, chain_sets=1, rules=["oracle", "majority_flat"])
    got = {(r["budget"], r["length"], r["rule"]): r["correct"] for r in rows}
    assert set(got) == {(n, length, rule) for n, length in grid(4) for rule in ("oracle", "majority_flat")}
    assert not got[(4, 1, "oracle")] and got[(4, 2, "oracle")] and got[(2, 2, "oracle")]
    with pytest.raises(ValueError, match="missing attempts"):
        sweep({"p": {0: chains[0]}}, budget=4, chain_sets=1, rules=["oracle"])


@pytest.fixture(scope="module")
def revised_workdir(trained_workdir: Path, smoke_config) -> tuple[Path, dict[str, str]]:
    return trained_workdir, pipeline(config=smoke_config, workdir=str(trained_workdir))


def test_pipeline_revises_and_writes_the_sweep(revised_workdir, smoke_config):
    workdir, out = revised_workdir
    cfg = smoke_config.revisions
    assert {"revision_data_id", "reviser", "orm", "chain_set_id"} <= set(out)
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        n, distinct = con.execute("SELECT count(*), count(DISTINCT (problem_id, chain, position)) FROM revision_attempts "
                                  "WHERE chain_set_id = ?", [out["chain_set_id"]]).fetchall()[0]
        assert n == distinct == cfg.chains.problems * sum(staircase(cfg.chains.budget))
        trajectories_n = con.execute("SELECT count(*), max(len(context)) FROM revision_trajectories").fetchall()[0]
        assert trajectories_n[0] > 0 and trajectories_n[1] <= cfg.data.max_context
        scored = con.execute("SELECT verifier, count(*) FROM revision_scores GROUP BY 1").fetchall()
        assert dict(scored) == {"orm": n, "prm": n}
        curves = con.execute("SELECT rule, budget, length, accuracy, lo, hi FROM revision_curves WHERE level = 0 "
                             "AND chain_set_id = ?", [out["chain_set_id"]]).fetchall()
        assert {(b, length) for _, b, length, *_ in curves} == set(grid(cfg.chains.budget))
        assert {"oracle", "majority_flat", "orm_hier", "prm_flat"} <= {r for r, *_ in curves}
        # each point recomputed from the stored selections, its interval clustered by problem: a chain set
        # is a redraw of the same problem, so n is the number of problems, not problems x chain sets
        raw = {(r, b, length): (acc, n) for r, b, length, acc, n in con.execute(
            "SELECT rule, budget, length, avg(correct::INT), count(DISTINCT problem_id) FROM revision_selections "
            "WHERE chain_set_id = ? GROUP BY ALL", [out["chain_set_id"]]).fetchall()}
        for r, b, length, acc, lo, hi in curves:
            assert acc == pytest.approx(raw[(r, b, length)][0])
            assert (lo, hi) == pytest.approx(wilson(acc, raw[(r, b, length)][1]))
        # the oracle bounds every rule at the same (N, L)
        oracle = {(b, length): acc for r, b, length, acc, *_ in curves if r == "oracle"}
        assert all(acc <= oracle[(b, length)] + 1e-9 for r, b, length, acc, *_ in curves)
        turns = con.execute("SELECT position FROM revision_turns WHERE level = 0 AND chain_set_id = ? ORDER BY 1",
                            [out["chain_set_id"]]).fetchall()
        assert [p for (p,) in turns] == list(range(cfg.chains.budget))
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    assert client.search_model_versions("name = 'ttscale-reviser'") and client.search_model_versions(f"name = '{ORM_NAME}'")
    report = next((workdir / "reports").glob(f"revise-{out['chain_set_id']}.md")).read_text()
    assert "Chain pass@1 at turn 0" in report and "| rule | L=1 |" in report


def test_orm_round_trip_scores_the_same_from_the_registry(revised_workdir):
    workdir, out = revised_workdir
    from ttscale.models.scorers import resolve_prm
    from ttscale.workdir import Workdir

    prompt, attempt = "rule\n\n01: init#0001=0001\n\n", "00: 0001#0001=0002\n\nans=0002"
    local = PRM(Path(out["orm"])).score([prompt], [[attempt]])
    registered = PRM(resolve_prm(f"models:/{ORM_NAME}/latest", Workdir.at(workdir)).path).score([prompt], [[attempt]])
    assert len(local[0]) == 1 and 0.0 <= local[0][0] <= 1.0
    assert registered[0] == pytest.approx(local[0])


def test_rerun_adds_no_attempts(revised_workdir, smoke_config):
    workdir, out = revised_workdir

    def counts() -> tuple[int, ...]:
        with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
            return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in
                         ("revision_trajectories", "revision_attempts", "revision_scores", "revision_selections"))

    before = counts()
    assert revise(config=smoke_config, workdir=str(workdir)) == out["chain_set_id"]
    assert counts() == before


def test_restart_chains_keep_the_steps_before_the_previous_attempts_least_confident_one(
        revised_workdir, smoke_config, tmp_path):
    workdir, out = revised_workdir
    fresh = tmp_path / "restart"
    shutil.copytree(workdir, fresh, ignore=shutil.ignore_patterns("reviser*"))  # every stage but the reviser's
    config = smoke_config.model_copy(update={"revisions": smoke_config.revisions.model_copy(update={
        "chains": smoke_config.revisions.chains.model_copy(update={"edit": "restart"})})})
    ran = pipeline(config=config, workdir=str(fresh))  # the whole pipeline: restarts need no revision model
    assert "reviser" not in ran and not (fresh / "models" / "reviser").exists()
    chain_set_id = ran["chain_set_id"]
    assert chain_set_id != out["chain_set_id"]
    with duckdb.connect(str(fresh / "ttscale.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT a.problem_id, a.chain, a.position, a.text, a.prompt_tokens, p.question, p.answer "
                           "FROM revision_attempts a JOIN problems p USING (problem_id) WHERE a.chain_set_id = ? "
                           "ORDER BY a.problem_id, a.chain, a.position", [chain_set_id]).fetchall()
    assert len(rows) == config.revisions.chains.problems * sum(staircase(config.revisions.chains.budget))
    by_chain = {(r[0], r[1], r[2]): r for r in rows}
    later = [r for r in rows if r[2] > 0]
    assert later
    # what each later attempt kept is exactly the earlier attempt's steps before its least confident one
    confidence = ConfidenceScorer(fresh / "models" / "base")
    earlier = [by_chain[(r[0], r[1], r[2] - 1)] for r in later]
    problems = [Problem(problem_id=e[0], source="arith", split="test", index=0, level=1, question=e[5], answer=e[6],
                        meta={}) for e in earlier]
    scores, tokens = confidence.score_with_tokens([prompt_for(p) for p in problems], [split_steps(e[3]) for e in earlier])
    kept = 0
    for r, e, row, read in zip(later, earlier, scores, tokens):
        prefix = response_prefix(split_steps(e[3])[: least_confident(row)])
        assert r[3].startswith(prefix)
        assert r[4] > read[-1]  # charged: the confidence pass over the earlier attempt, then the prompt and prefix
        kept += bool(prefix)
    assert kept > 0  # some attempts did keep work (a slip in a first step keeps nothing)


def test_killed_chains_resume_without_duplicate_attempts(revised_workdir, smoke_config, tmp_path, monkeypatch):
    workdir, _ = revised_workdir
    fresh = tmp_path / "resume-revise"
    for name in ("base", "reviser", "orm", "prm"):
        shutil.copytree(workdir / "models" / name, fresh / "models" / name)
    real = revisions_module.generate_round
    monkeypatch.setattr(revisions_module, "generate_round", DiesOnCall(real, dies_on=3))
    with pytest.raises(BaseException):
        revise(config=smoke_config, workdir=str(fresh))
    db = str(fresh / "ttscale.duckdb")
    with duckdb.connect(db, read_only=True) as con:
        first = con.execute("SELECT attempt_id, text FROM revision_attempts ORDER BY 1").fetchall()
        assert {p for (p,) in con.execute("SELECT DISTINCT position FROM revision_attempts").fetchall()} == {0, 1}
    resumed = DiesOnCall(real)
    monkeypatch.setattr(revisions_module, "generate_round", resumed)
    revise(config=smoke_config, workdir=str(fresh))
    budget = smoke_config.revisions.chains.budget
    assert resumed.calls == max(staircase(budget)) - 2  # only the rounds that were missing
    with duckdb.connect(db, read_only=True) as con:
        n, distinct = con.execute("SELECT count(*), count(DISTINCT (chain_set_id, problem_id, chain, position)) "
                                  "FROM revision_attempts").fetchall()[0]
        assert n == distinct == smoke_config.revisions.chains.problems * sum(staircase(budget))
        kept = dict(con.execute("SELECT attempt_id, text FROM revision_attempts").fetchall())
        assert all(kept[a] == text for a, text in first)  # committed rounds were not regenerated


def test_revise_without_a_revision_model_says_what_to_do(trained_workdir: Path, smoke_config, tmp_path):
    workdir = tmp_path / "no-reviser"
    shutil.copytree(trained_workdir / "models" / "base", workdir / "models" / "base")
    with pytest.raises(FileNotFoundError, match="train-reviser"):
        revise(config=smoke_config, workdir=str(workdir))


def test_reviser_learns_only_the_target_and_lora_merges(base_model_dir: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttscale.configs.schema import ReviserConfig
    from ttscale.models.reviser import encode_example, first_edit, train_reviser

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    ids, labels = encode_example(tokenizer, "question\n\n", "answer")
    n_target = len(tokenizer.encode("answer", add_special_tokens=False)) + 1  # + <eos>
    assert len(ids) == len(labels) and labels[-n_target:] == ids[-n_target:]
    assert all(label == -100 for label in labels[:-n_target])
    examples = [(revision_prompt(_problem(), [WRONG[0]]), CORRECT, first_edit(CORRECT, [WRONG[0]])),
                (revision_prompt(_problem(), []), CORRECT, None)]
    cfg = ReviserConfig(mode="lora", max_updates=2, batch_size=2, max_seq_len=512, lora_r=2, lora_alpha=4)
    result = train_reviser(cfg, base_model_dir, examples, tmp_path / "lora")
    assert result.updates == 2 and result.trainable_params < result.n_params and result.skipped_too_long == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "lora")
    assert merged.config.max_position_embeddings == 512  # served at the revision context length
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_edit_weight_marks_the_token_where_the_target_leaves_the_last_attempt(base_model_dir: Path):
    from transformers import AutoTokenizer

    from ttscale.models.reviser import first_edit, loss_weights

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    edit = first_edit(CORRECT, [WRONG[1], WRONG[0]])
    assert CORRECT[:edit] == WRONG[0][:edit] and CORRECT[edit] != WRONG[0][edit]  # the last attempt decides
    assert first_edit(CORRECT, []) is None
    weights = loss_weights(tokenizer, CORRECT, edit, 8.0)
    marked = weights.index(8.0)
    assert weights.count(8.0) == 1 and len(weights) == len(tokenizer.encode(CORRECT, add_special_tokens=False)) + 1
    assert marked == len(tokenizer.encode(CORRECT[:edit], add_special_tokens=False))
    assert loss_weights(tokenizer, CORRECT, edit, 1.0) == [1.0] * len(weights)
