"""Search invariants on the real tiny model and a real (quickly trained) PRM, fixed seeds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ttscale.configs.schema import GeneratorConfig, PRMConfig, SearchConfig, TaskConfig
from ttscale.flows.search import plan
from ttscale.models.generator import Completion, RepeatedRequests, SamplingSpec, open_generator
from ttscale.models.prm import PRM
from ttscale.models.prm_train import LabeledSolution, train_prm
from ttscale.models.scorers import RandomScorer
from ttscale.tasks import arith
from ttscale.tasks.grading import split_steps
from ttscale.tasks.sampling import prompt_for, response_prefix
from ttscale.tasks.search import STRATEGIES, SearchParams
from ttscale.tasks.search.lookahead import score_by_rollout
from ttscale.tasks.search.records import majority_answer, to_tables, weighted_answer
from ttscale.tasks.search.tree import DELIMITER, Node

PROBLEMS = arith.make_split(TaskConfig(n_test=5), "test")


@pytest.fixture(scope="module")
def scorer(base_model_dir: Path, tmp_path_factory) -> PRM:
    sols = []
    for p in arith.make_split(TaskConfig(n_test=20, seed=5), "test"):
        steps = split_steps(p.meta["reference_solution"])
        sols.append(LabeledSolution(p.problem_id, prompt_for(p), steps, [1.0] * len(steps)))
    out = tmp_path_factory.mktemp("prm")
    train_prm(PRMConfig(mode="head", epochs=1, batch_size=8), base_model_dir, sols, out)
    return PRM(out, batch_size=32)


@pytest.fixture(scope="module")
def generator(base_model_dir: Path):
    with open_generator(GeneratorConfig(backend="hf", batch_size=64), base_model_dir) as gen:
        yield gen


def _run(strategy: str, generator, scorer, **kw):
    params = SearchParams(strategy, seed=3, step_tokens=40, max_rounds=8, max_tokens=96, **kw)
    return params, STRATEGIES[strategy](PROBLEMS, generator, scorer, params)


def test_beam_counts_per_round_and_finished_beams_are_kept(generator, scorer):
    params, searches = _run("beam", generator, scorer, budget=8, width=2)
    for search in searches.values():
        per_round = Counter(n.depth for n in search.nodes)
        assert per_round[0] == 8  # N first steps
        for depth in sorted(per_round)[1:]:
            kept_before = [n for n in search.nodes if n.depth == depth - 1 and n.kept and not n.finished]
            assert len(kept_before) <= 8 // 2  # top N/M live beams
            assert per_round[depth] == 2 * len(kept_before)  # each expanded by M
            parents = {n.parent_id for n in search.nodes if n.depth == depth}
            assert parents == {n.node_id for n in kept_before}
        finished = sorted((n for n in search.nodes if n.finished), key=lambda n: n.score, reverse=True)
        # finished beams are kept as finals, up to N of them (the best-scored when more finish)
        assert len(search.finals) == min(8, len(finished))
        assert {n.node_id for n in search.finals} <= {n.node_id for n in finished}
        assert min(f.score for f in search.finals) >= max([n.score for n in finished[8:]], default=-1.0)
        assert all(n.kept for n in search.finals)
        assert search.finals, "every beam ends: by the answer, its tokens or the round limit"


def test_beam_keeps_exactly_the_top_scored_live_beams(generator):
    """With a scorer whose every score is known (a hash of the prefix), each round keeps the N/M live
    children with the highest scores and no others: what makes beam search a search."""
    scorer = RandomScorer(seed=7)
    _, searches = _run("beam", generator, scorer, budget=4, width=2)
    compared = 0
    for search in searches.values():
        for node in search.nodes:
            assert node.score == pytest.approx(scorer.score([prompt_for(search.problem)], [list(node.steps)])[0][-1])
        for depth in sorted({n.depth for n in search.nodes}):
            live = [n for n in search.nodes if n.depth == depth and not n.finished]
            if not live:
                continue
            kept = {n.node_id for n in live if n.kept}
            top = {n.node_id for n in sorted(live, key=lambda n: n.score, reverse=True)[: 4 // 2]}
            assert kept == top
            compared += len(live) > 4 // 2  # rounds where the choice mattered
    assert compared > 0


def test_budget_accounting_adds_up(generator, scorer):
    for strategy, kw in (("majority", {"budget": 4}), ("best_of_n", {"budget": 4}), ("beam", {"budget": 4, "width": 2}),
                         ("lookahead", {"budget": 4, "width": 2, "depth": 1}), ("dvts", {"budget": 4, "width": 2})):
        params, searches = _run(strategy, generator, scorer, **kw)
        nodes, selections = to_tables(searches, params, "run", "scorer", generator.n_params, scorer.n_params)
        rows = selections.to_pylist()
        assert len(rows) == len(PROBLEMS) and nodes.num_rows == sum(len(s.nodes) for s in searches.values())
        by_problem = Counter(nodes.column("problem_id").to_pylist())
        for r in rows:
            mine = [n for n in nodes.to_pylist() if n["problem_id"] == r["problem_id"]]
            assert r["generations"] == len(mine) + sum(n["lookahead_steps"] for n in mine) == \
                by_problem[r["problem_id"]] + sum(n["lookahead_steps"] for n in mine)
            assert r["prompt_tokens"] == sum(n["prompt_tokens"] + n["lookahead_prompt_tokens"] for n in mine)
            assert r["generated_tokens"] == sum(n["generated_tokens"] + n["lookahead_generated_tokens"] for n in mine)
            assert r["scored_tokens"] == sum(n["scored_tokens"] for n in mine)
            assert (r["scored_tokens"] > 0) == (strategy != "majority")  # majority needs no PRM
            assert r["flops"] == pytest.approx(2 * generator.n_params * (r["prompt_tokens"] + r["generated_tokens"])
                                               + 2 * scorer.n_params * r["scored_tokens"])
            assert r["charged"] == params.budget * (params.depth + 1)
            assert 1 <= r["finals"] <= params.budget
        if strategy in ("best_of_n", "majority"):
            assert all(r["generations"] == 4 and r["finals"] == 4 for r in rows)
        if strategy == "lookahead":
            assert sum(n["lookahead_steps"] for n in nodes.to_pylist()) > 0
        assert len(set(nodes.column("node_id").to_pylist())) == nodes.num_rows


def test_lookahead_scores_are_the_rollout_end_scores(generator, scorer):
    problem = PROBLEMS[0]
    first = generator.generate([prompt_for(problem)],
                               SamplingSpec(n=3, temperature=1.0, max_tokens=40, stop=(DELIMITER,), seed=1))[0]
    nodes = [Node(f"n{i}", problem.problem_id, None, 0, i, (c.text.strip(),), not c.text.endswith(DELIMITER),
                  c.prompt_tokens, c.generated_tokens) for i, c in enumerate(first)]
    params = SearchParams("lookahead", budget=3, width=1, depth=2, step_tokens=40)
    score_by_rollout(nodes, {problem.problem_id: problem}, generator, scorer, params)
    greedy = SamplingSpec(n=1, temperature=0.0, max_tokens=40, stop=(DELIMITER,))
    for node in nodes:
        path = list(node.steps)
        for _ in range(node.lookahead_steps):
            (c,), = generator.generate([prompt_for(problem)], greedy, prefixes=[response_prefix(path)])
            path.append((c.text[: -len(DELIMITER)] if c.text.endswith(DELIMITER) else c.text).strip())
        expected = scorer.score([prompt_for(problem)], [path])[0][-1]
        assert node.score == pytest.approx(expected, abs=1e-5)
        assert node.finished or node.lookahead_steps >= 1


def test_dvts_subtrees_never_share_nodes(generator, scorer):
    params, searches = _run("dvts", generator, scorer, budget=8, width=2)
    for search in searches.values():
        by_id = {n.node_id: n for n in search.nodes}
        assert len(by_id) == len(search.nodes)
        assert sorted({n.subtree for n in search.nodes if n.depth == 0}) == [0, 1, 2, 3]  # N/M subtrees
        for n in search.nodes:
            if n.parent_id is not None:
                assert by_id[n.parent_id].subtree == n.subtree
        for depth in {n.depth for n in search.nodes}:
            per_subtree = Counter(n.subtree for n in search.nodes if n.depth == depth)
            assert max(per_subtree.values()) <= 2  # one kept beam per subtree, expanded by M
        assert len({f.subtree for f in search.finals}) == len(search.finals)  # one final per subtree at most


def test_weighted_and_majority_answers_and_plan():
    assert weighted_answer(["1", "2", "2", None], [0.9, 0.5, 0.5, 5.0]) == "2"
    assert weighted_answer(["1", "2", "2"], [0.9, 0.3, 0.3]) == "1"
    assert majority_answer(["1", "2", "2", None, None, None]) == "2"  # unparseable never wins
    assert weighted_answer([None], [1.0]) is None
    runs = plan(SearchConfig(budgets=[2, 8], widths=[4], lookahead_depths=[1, 3], seeds=[0, 1]), "ctx")
    names = Counter((r.strategy, r.budget) for r in runs)
    assert names[("beam", 2)] == 0 and names[("beam", 8)] == 2  # M > N is skipped
    assert names[("lookahead", 8)] == 4 and names[("best_of_n", 2)] == 2 and names[("majority", 8)] == 2
    assert len({r.key() for r in runs}) == len(runs)


class _CountingGenerator:
    """Every call a fresh draw (like vLLM on CPU, where the engine's seed governs sampling)."""

    n_params = 1

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts, spec, prefixes=None):
        self.calls += 1
        return [[Completion(f"{p}:{self.calls}:{i}", 1, 1, "stop") for i in range(spec.n)] for p in prompts]

    def close(self) -> None:
        pass


def test_majority_and_best_of_n_at_one_seed_share_their_samples_and_both_pay_for_them():
    inner = _CountingGenerator()
    generator = RepeatedRequests(inner)
    params = SearchParams("majority", budget=3, seed=2)
    voted = STRATEGIES["majority"](PROBLEMS, generator, RandomScorer(), params)
    weighted = STRATEGIES["best_of_n"](PROBLEMS, generator, RandomScorer(), SearchParams("best_of_n", budget=3, seed=2))
    assert inner.calls == 1 and generator.repeats == 1  # the second strategy's request was answered from memory
    for pid, search in voted.items():
        assert [n.steps for n in search.finals] == [n.steps for n in weighted[pid].finals]
        assert sum(n.generated_tokens for n in weighted[pid].nodes) == sum(n.generated_tokens for n in search.nodes) > 0
    STRATEGIES["majority"](PROBLEMS, generator, RandomScorer(), SearchParams("majority", budget=3, seed=3))
    STRATEGIES["majority"](PROBLEMS[:2], generator, RandomScorer(), params)
    assert inner.calls == 3  # another seed, or another set of prompts, is a new request
    small = RepeatedRequests(_CountingGenerator(), max_chars=1)  # room for the latest answer only
    spec = SamplingSpec(n=2)
    first = small.generate(["a"], spec)
    assert small.generate(["a"], spec) is first and small.inner.calls == 1
    small.generate(["b"], spec)
    assert small.generate(["a"], spec) is not first and small.inner.calls == 3  # "a" was dropped for "b"
