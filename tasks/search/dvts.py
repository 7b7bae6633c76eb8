"""Diverse verifier tree search: the N first steps form N/M subtrees of M; each subtree
greedily keeps its single best child and expands it by M, so the subtrees never meet
and the final candidates stay diverse at large N (from the open reproductions)."""

from __future__ import annotations

from collections.abc import Sequence

from ttscale.models.generator import Generator
from ttscale.models.prm import StepScorer
from ttscale.tasks.problems import Problem
from ttscale.tasks.search.tree import Node, ProblemSearch, SearchParams, grow


def keep_best_per_subtree(children: list[Node], search: ProblemSearch,
                          params: SearchParams) -> tuple[list[Node], list[Node]]:
    best: dict[int, Node] = {}
    for child in children:
        if child.subtree not in best or child.score > best[child.subtree].score:
            best[child.subtree] = child
    chosen = list(best.values())
    return [c for c in chosen if not c.finished], [c for c in chosen if c.finished]


def search(problems: Sequence[Problem], generator: Generator, scorer: StepScorer,
           params: SearchParams) -> dict[str, ProblemSearch]:
    return grow(problems, generator, scorer, params, keep_best_per_subtree)
