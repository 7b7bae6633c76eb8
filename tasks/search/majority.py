"""Majority vote: N independent full solutions, the most frequent final answer wins.
The verifier-free baseline, through the same accounting (no PRM tokens)."""

from __future__ import annotations

from collections.abc import Sequence

from ttscale.models.generator import Generator
from ttscale.models.prm import StepScorer
from ttscale.tasks.problems import Problem
from ttscale.tasks.search.best_of_n import sample
from ttscale.tasks.search.tree import ProblemSearch, SearchParams

SELECTION = "majority"  # records.py picks the answer by vote count, not by PRM score


def search(problems: Sequence[Problem], generator: Generator, scorer: StepScorer,
           params: SearchParams) -> dict[str, ProblemSearch]:
    return sample(problems, generator, params)
