"""Beam search with N beams and width M: keep the top N/M live prefixes by PRM score,
expand each by M, until every beam has ended, N candidates are final, or 40 rounds.
Finished beams are kept as final candidates whatever their score."""

from __future__ import annotations

from collections.abc import Sequence

from ttscale.models.generator import Generator
from ttscale.models.prm import StepScorer
from ttscale.tasks.problems import Problem
from ttscale.tasks.search.tree import Node, ProblemSearch, SearchParams, grow


def keep_top(children: list[Node], search: ProblemSearch, params: SearchParams) -> tuple[list[Node], list[Node]]:
    live = sorted((c for c in children if not c.finished), key=lambda c: c.score, reverse=True)
    return live[: max(1, params.budget // params.width)], [c for c in children if c.finished]


def search(problems: Sequence[Problem], generator: Generator, scorer: StepScorer,
           params: SearchParams) -> dict[str, ProblemSearch]:
    return grow(problems, generator, scorer, params, keep_top)
