"""Which step scorer a config names, opened behind the one `StepScorer` seam.

`scoring.prm` names a PRM folder (the trained one, a registry version or a local path),
or `random`: a scorer that knows nothing. Every score is a hash of the prefix it scores,
so it is uniform on [0, 1), the same for the same text in the bank, in search and in
revisions, and independent of whether the prefix is right. Run the pipeline with it
and every finding must come out inconclusive: the floor that proves the instrument
(and a baseline a user can put under any verifier's curves).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from configs.schema import ScoreConfig
from models.prm import PRM, StepScorer, parameter_count

RANDOM = "random"
ScorerSource = Path | str  # a PRM folder, or RANDOM


class RandomScorer:
    """Uniform scores from a hash of (seed, prompt, steps so far); reads no tokens and has no parameters."""

    n_params = 0

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _score(self, prompt: str, steps: Sequence[str]) -> float:
        digest = hashlib.blake2b(repr((self.seed, prompt, tuple(steps))).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def score(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        return [[self._score(p, steps[: i + 1]) for i in range(len(steps))] for p, steps in zip(prompts, step_lists)]

    def score_with_tokens(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]
                          ) -> tuple[list[list[float]], list[list[int]]]:
        scores = self.score(prompts, step_lists)
        return scores, [[0] * len(s) for s in scores]

    def score_extensions(self, groups: Sequence[tuple[str, Sequence[str], Sequence[str]]]
                         ) -> list[list[tuple[float, int]]]:
        return [[(self._score(prompt, [*shared, step]), 0) for step in nexts] for prompt, shared, nexts in groups]


def open_scorer(source: ScorerSource, cfg: ScoreConfig) -> StepScorer:
    """The scorer as the scoring section configures it."""
    return RandomScorer() if source == RANDOM else PRM.for_scoring(Path(source), cfg)


def scorer_parameters(source: ScorerSource) -> int:
    """Parameters a scorer spends FLOPs with (for compute accounting), without loading weights."""
    return 0 if source == RANDOM else parameter_count(Path(source))
