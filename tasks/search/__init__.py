"""Search against the PRM: one strategy per module, one signature.

    STRATEGIES[name](problems, generator, scorer, params) -> {problem_id: ProblemSearch}

Every strategy returns the final candidates it would choose among and every node it
expanded, with exact sample and token counts; `tasks.search.records` picks the final
answer by best-of-N weighted over the final candidates (the paper's choice) and turns
both into warehouse rows.
"""

from collections.abc import Callable, Sequence

from ttscale.models.generator import Generator
from ttscale.models.prm import StepScorer
from ttscale.tasks.problems import Problem
from ttscale.tasks.search import beam, best_of_n, dvts, lookahead, majority
from ttscale.tasks.search.tree import Node, ProblemSearch, SearchParams
from ttscale.tasks.search.records import to_tables

Strategy = Callable[[Sequence[Problem], Generator, StepScorer, SearchParams], dict[str, ProblemSearch]]

STRATEGIES: dict[str, Strategy] = {
    "best_of_n": best_of_n.search,
    "majority": majority.search,
    "beam": beam.search,
    "lookahead": lookahead.search,
    "dvts": dvts.search,
}

# How each strategy picks its answer from its final candidates (default: best-of-N weighted).
SELECTION: dict[str, str] = {"majority": majority.SELECTION}

__all__ = ["Node", "ProblemSearch", "SearchParams", "SELECTION", "STRATEGIES", "Strategy", "run_search"]


def run_search(params: SearchParams, problems: Sequence[Problem], generator: Generator, scorer: StepScorer,
               run_id: str, scorer_id: str):  # -> (search_nodes, selections) Arrow tables
    """One strategy's search over the problems, as the rows search_nodes and selections store."""
    searches = STRATEGIES[params.strategy](problems, generator, scorer, params)
    return to_tables(searches, params, run_id, scorer_id, generator.n_params, scorer.n_params,
                     SELECTION.get(params.strategy, "weighted"))
