"""The tree that every PRM-guided search grows, and the loop that grows it round by round.

Each round sends the live beams of ALL problems to the generator in one call (one step
each, the step delimiter as stop string) and all new prefixes to the scorer in one
call; the anchor implementation searched one problem at a time and took ~20x the wall
time of best-of-N. Strategies differ only in which children they keep (`KeepRule`) and
how a child is scored (`ScoreRule`); both are small functions in their own modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ttscale.models.generator import Generator, SamplingSpec
from ttscale.models.prm import StepScorer
from ttscale.tasks import arith
from ttscale.tasks.problems import Problem
from ttscale.tasks.sampling import prompt_for, response_prefix, stable_hash

DELIMITER = arith.STEP_DELIMITER


@dataclass(frozen=True)
class SearchParams:
    strategy: str
    budget: int  # N: generations per round, the paper's budget
    width: int = 4  # M: children per kept beam (beam, lookahead, DVTS)
    depth: int = 0  # k: lookahead steps
    seed: int = 0
    temperature: float = 1.0
    max_rounds: int = 40
    step_tokens: int = 48  # most tokens in one step
    max_tokens: int = 320  # most tokens in a whole solution (best-of-N)
    context: str = ""  # what else shapes the result (model and scorer fingerprints): part of the key

    def key(self) -> str:
        """Identifies one search run; every node and selection it writes is keyed by it."""
        return stable_hash("search", self.strategy, self.budget, self.width, self.depth, self.seed,
                           self.temperature, self.max_rounds, self.step_tokens, self.max_tokens, self.context)

    @property
    def charged(self) -> int:
        """The budget this run spends in the paper's unit: N, or N(k+1) with a k-step lookahead."""
        return self.budget * (self.depth + 1)



@dataclass
class Node:
    node_id: str
    problem_id: str
    parent_id: str | None
    depth: int  # 0 = first step
    subtree: int  # which of the first round's groups it descends from (DVTS)
    steps: tuple[str, ...]  # the whole path, this node's step last
    finished: bool  # the path is a complete solution (no delimiter after the step, or out of tokens)
    prompt_tokens: int
    generated_tokens: int
    score: float = 0.0
    scored_tokens: int = 0
    lookahead_steps: int = 0  # greedy rollout steps generated to score this node (lookahead)
    lookahead_prompt_tokens: int = 0
    lookahead_generated_tokens: int = 0
    kept: bool = False  # chosen to expand or to be a final candidate

    @property
    def text(self) -> str:
        return self.steps[-1] if self.steps else ""


@dataclass
class ProblemSearch:
    problem: Problem
    nodes: list[Node] = field(default_factory=list)
    finals: list[Node] = field(default_factory=list)
    done: bool = False

    @property
    def samples(self) -> int:
        """Generations spent, in the paper's unit: one per expanded node plus one per lookahead step."""
        return len(self.nodes) + sum(n.lookahead_steps for n in self.nodes)


# keep(children of one problem, its search so far, params) -> (children to expand by M, children that are final)
KeepRule = Callable[[list[Node], ProblemSearch, SearchParams], tuple[list[Node], list[Node]]]
# score(children of every problem, generator, scorer, params) -> scores set on the nodes, in place
ScoreRule = Callable[[list[Node], dict[str, Problem], Generator, StepScorer, SearchParams], None]


def score_last_step(nodes: list[Node], problems: dict[str, Problem], generator: Generator,
                    scorer: StepScorer, params: SearchParams) -> None:
    """The PRM's score at each node's last step. Siblings share their path up to that step,
    so the scorer reads each shared prefix once (a KV cache) and only the new steps on top."""
    groups: dict[tuple[str, tuple[str, ...]], list[Node]] = {}
    for node in nodes:
        groups.setdefault((node.problem_id, node.steps[:-1]), []).append(node)
    keys = list(groups)
    results = scorer.score_extensions([(prompt_for(problems[pid]), prefix, [n.text for n in groups[(pid, prefix)]])
                                       for pid, prefix in keys])
    for key, scored in zip(keys, results):
        for node, (score, tokens) in zip(groups[key], scored):
            node.score, node.scored_tokens = score, tokens


def _children(parent: Node | None, problem: Problem, completions, params: SearchParams, round_: int,
              first_index: int) -> list[Node]:
    out = []
    for i, c in enumerate(completions):
        ended = not c.text.endswith(DELIMITER)  # the model ended the solution (or ran out of tokens)
        text = c.text[: -len(DELIMITER)] if not ended else c.text
        steps = (parent.steps if parent else ()) + (text.strip(),)
        index = first_index + i
        subtree = parent.subtree if parent else i // max(1, params.width)  # round 0: groups of M
        node_id = stable_hash(params.key(), problem.problem_id, parent.node_id if parent else None, index, round_)
        out.append(Node(node_id, problem.problem_id, parent.node_id if parent else None, round_, subtree, steps,
                        ended or round_ + 1 >= params.max_rounds, c.prompt_tokens, c.generated_tokens))
    return out


def grow(problems: Sequence[Problem], generator: Generator, scorer: StepScorer, params: SearchParams,
         keep: KeepRule, score: ScoreRule = score_last_step) -> dict[str, ProblemSearch]:
    """Round 0 samples N first steps per problem; each later round expands every kept beam by M."""
    searches = {p.problem_id: ProblemSearch(p) for p in problems}
    by_id = {p.problem_id: p for p in problems}
    frontier: list[tuple[Problem, Node | None, int]] = [(p, None, params.budget) for p in problems]
    for round_ in range(params.max_rounds):
        if not frontier:
            break
        children: list[Node] = []
        for n_children in sorted({n for _, _, n in frontier}):  # one generator call per fan-out size
            group = [(p, parent) for p, parent, n in frontier if n == n_children]
            spec = SamplingSpec(n=n_children, temperature=params.temperature, max_tokens=params.step_tokens,
                                stop=(DELIMITER,), seed=params.seed * 1000 + round_)
            outs = generator.generate([prompt_for(p) for p, _ in group], spec,
                                      prefixes=[response_prefix(parent.steps if parent else ()) for _, parent in group])
            for j, ((problem, parent), completions) in enumerate(zip(group, outs)):
                children += _children(parent, problem, completions, params, round_, j * n_children)
        score(children, by_id, generator, scorer, params)
        frontier = []
        per_problem: dict[str, list[Node]] = {}
        for child in children:
            per_problem.setdefault(child.problem_id, []).append(child)
        for pid, kids in per_problem.items():
            search = searches[pid]
            search.nodes += kids
            expand, final = keep(kids, search, params)
            for node in expand + final:
                node.kept = True
            search.finals += final
            if len(search.finals) > params.budget:  # at most N final candidates: the best-scored ones
                ranked = sorted(search.finals, key=lambda n: n.score, reverse=True)
                for dropped in ranked[params.budget :]:
                    dropped.kept = False
                search.finals = ranked[: params.budget]
            if len(search.finals) >= params.budget or not expand:
                search.done = True
                continue
            frontier += [(search.problem, node, params.width) for node in expand]
    return searches
