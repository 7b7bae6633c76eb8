"""Best-of-N: N independent full solutions, each one node; the PRM scores its last step and
best-of-N weighted picks the answer. The baseline every search is measured against."""

from __future__ import annotations

from collections.abc import Sequence

from ttscale.models.generator import Generator, SamplingSpec
from ttscale.models.prm import StepScorer
from ttscale.tasks.grading import split_steps
from ttscale.tasks.problems import Problem
from ttscale.tasks.sampling import prompt_for, stable_hash
from ttscale.tasks.search.tree import Node, ProblemSearch, SearchParams, score_last_step


def sample(problems: Sequence[Problem], generator: Generator, params: SearchParams) -> dict[str, ProblemSearch]:
    """N full solutions per problem, one node each, all final; unscored."""
    spec = SamplingSpec(n=params.budget, temperature=params.temperature, max_tokens=params.max_tokens,
                        seed=params.seed)
    outs = generator.generate([prompt_for(p) for p in problems], spec)
    searches: dict[str, ProblemSearch] = {}
    for problem, completions in zip(problems, outs):
        search = searches[problem.problem_id] = ProblemSearch(problem, done=True)
        for i, c in enumerate(completions):
            node = Node(stable_hash(params.key(), problem.problem_id, None, i, 0), problem.problem_id, None, 0, i,
                        tuple(split_steps(c.text)), True, c.prompt_tokens, c.generated_tokens, kept=True)
            search.nodes.append(node)
            search.finals.append(node)
    return searches


def search(problems: Sequence[Problem], generator: Generator, scorer: StepScorer,
           params: SearchParams) -> dict[str, ProblemSearch]:
    searches = sample(problems, generator, params)
    nodes = [n for s in searches.values() for n in s.nodes]
    score_last_step(nodes, {p.problem_id: p for p in problems}, generator, scorer, params)
    return searches
