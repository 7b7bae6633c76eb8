"""Lookahead search with depth k: beam search in which a step is scored by rolling it out
k more steps at temperature 0 and taking the PRM's score at the end of the rollout.
Each kept step costs k + 1 generations, so at equal budget it expands fewer beams."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ttscale.models.generator import Generator, SamplingSpec
from ttscale.models.prm import StepScorer
from ttscale.tasks.problems import Problem
from ttscale.tasks.search.beam import keep_top
from ttscale.tasks.sampling import prompt_for, response_prefix
from ttscale.tasks.search.tree import DELIMITER, Node, ProblemSearch, SearchParams, grow, score_last_step


def score_by_rollout(nodes: list[Node], problems: dict[str, Problem], generator: Generator,
                     scorer: StepScorer, params: SearchParams) -> None:
    """Roll every unfinished node k steps further (greedy, one batched call per step), then
    score the rollout's end; the node keeps the rollout's cost and its score, not its steps."""
    paths = {n.node_id: list(n.steps) for n in nodes}
    open_ids = [n.node_id for n in nodes if not n.finished]
    by_id = {n.node_id: n for n in nodes}
    spec = SamplingSpec(n=1, temperature=0.0, max_tokens=params.step_tokens, stop=(DELIMITER,), seed=params.seed)
    for _ in range(params.depth):
        if not open_ids:
            break
        outs = generator.generate([prompt_for(problems[by_id[i].problem_id]) for i in open_ids], spec,
                                  prefixes=[response_prefix(paths[i]) for i in open_ids])
        still_open = []
        for node_id, (c,) in zip(open_ids, outs):
            node = by_id[node_id]
            node.lookahead_steps += 1
            node.lookahead_prompt_tokens += c.prompt_tokens
            node.lookahead_generated_tokens += c.generated_tokens
            ended = not c.text.endswith(DELIMITER)
            paths[node_id].append((c.text if ended else c.text[: -len(DELIMITER)]).strip())
            if not ended:
                still_open.append(node_id)
        open_ids = still_open
    rolled = [replace(n, steps=tuple(paths[n.node_id])) for n in nodes]
    score_last_step(rolled, problems, generator, scorer, params)
    for node, r in zip(nodes, rolled):
        node.score, node.scored_tokens = r.score, r.scored_tokens


def search(problems: Sequence[Problem], generator: Generator, scorer: StepScorer,
           params: SearchParams) -> dict[str, ProblemSearch]:
    return grow(problems, generator, scorer, params, keep_top, score_by_rollout)
