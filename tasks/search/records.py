"""From a finished search to warehouse rows: every node, and the answer picked per problem.

The final answer is best-of-N weighted over the strategy's final candidates (sum of
last-step scores per answer), the paper's choice for every search; majority vote counts
answers instead. Compute is counted
per problem: generations in the paper's unit, tokens the generator read and wrote
(lookahead rollouts included), tokens the PRM read, and FLOPs = 2 * params * tokens.
"""

from __future__ import annotations

import pyarrow as pa

from ttscale.tasks.grading import grade
from ttscale.tasks.search.tree import DELIMITER, ProblemSearch, SearchParams


def weighted_answer(answers: list[str | None], scores: list[float]) -> str | None:
    """The answer with the largest summed score; unparseable answers never win."""
    totals: dict[str, float] = {}
    for answer, score in zip(answers, scores):
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + score
    return max(sorted(totals), key=lambda a: totals[a]) if totals else None


def majority_answer(answers: list[str | None]) -> str | None:
    """The most frequent parseable answer (ties: the smallest, so the choice repeats)."""
    return weighted_answer(answers, [1.0] * len(answers))


def to_tables(searches: dict[str, ProblemSearch], params: SearchParams, run_id: str, scorer_id: str,
              generator_params: int, scorer_params: int, rule: str = "weighted") -> tuple[pa.Table, pa.Table]:
    """`rule`: 'weighted' (best-of-N weighted over the finals) or 'majority' (vote count)."""
    key = params.key()
    nodes: list[dict] = []
    selections: list[dict] = []
    for search in searches.values():
        problem = search.problem
        for n in search.nodes:
            nodes.append({
                "node_id": n.node_id, "search_key": key, "run_id": run_id, "problem_id": n.problem_id,
                "strategy": params.strategy, "budget": params.budget, "width": params.width,
                "lookahead": params.depth, "seed": params.seed, "parent_id": n.parent_id, "depth": n.depth,
                "subtree": n.subtree, "text": n.text, "score": float(n.score), "prompt_tokens": n.prompt_tokens,
                "generated_tokens": n.generated_tokens, "scored_tokens": n.scored_tokens,
                "lookahead_steps": n.lookahead_steps, "lookahead_prompt_tokens": n.lookahead_prompt_tokens,
                "lookahead_generated_tokens": n.lookahead_generated_tokens, "finished": n.finished, "kept": n.kept,
            })
        graded = [grade(problem, DELIMITER.join(f.steps)) for f in search.finals]
        answers = [a for a, _ in graded]
        answer = (majority_answer(answers) if rule == "majority"
                  else weighted_answer(answers, [f.score for f in search.finals]))
        correct = answer is not None and any(a == answer and ok for a, ok in graded)
        prompt = sum(n.prompt_tokens + n.lookahead_prompt_tokens for n in search.nodes)
        generated = sum(n.generated_tokens + n.lookahead_generated_tokens for n in search.nodes)
        scored = sum(n.scored_tokens for n in search.nodes)
        selections.append({
            "search_key": key, "problem_id": problem.problem_id, "run_id": run_id, "scorer_id": scorer_id,
            "strategy": params.strategy, "budget": params.budget, "width": params.width, "lookahead": params.depth,
            "seed": params.seed, "answer": answer, "correct": correct, "finals": len(search.finals),
            "charged": params.charged, "generations": search.samples, "prompt_tokens": prompt,
            "generated_tokens": generated, "scored_tokens": scored,
            "flops": 2.0 * generator_params * (prompt + generated) + 2.0 * scorer_params * scored,
        })
    return pa.Table.from_pylist(nodes), pa.Table.from_pylist(selections)
