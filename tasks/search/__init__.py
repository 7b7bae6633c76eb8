"""Search against the PRM: one strategy per module, one signature.

    strategy.search(problems, generator, scorer, params) -> {problem_id: ProblemSearch}

Every strategy returns the final candidates it would choose among and every node it
expanded, with exact sample and token counts; `select_answer` then picks the final
answer by best-of-N weighted over the final candidates (the paper's choice).
"""

from tasks.search.tree import Node, ProblemSearch, SearchParams

STRATEGIES = ("best_of_n", "beam", "lookahead", "dvts")

__all__ = ["Node", "ProblemSearch", "SearchParams", "STRATEGIES"]
