"""Which step scorer a config names, opened behind the one `StepScorer` seam.

`scoring.prm` names a PRM folder (the trained one, a registry version or a local path)
or one of three scorers that need no training, each a baseline a trained PRM is read
against:

- `random`: every score is a hash of the prefix it scores, so it is uniform on [0, 1),
  the same for the same text in the bank, in search and in revisions, and independent of
  whether the prefix is right. Run the pipeline with it and every finding must come out
  inconclusive: the floor that proves the instrument.
- `confidence`: the generator's own token probabilities (models/confidence.py), free
  where the generator returns log-probabilities, and the baseline every PRM must beat.
  `confidence:NAME` reads another model's probabilities of the same text (NAME a model
  of the workdir, e.g. `large`, or a folder): a verifier that knows what the generator
  does not, with no labels, its forward passes charged at its own size.
- `oracle`: exact step checks (`tasks.arith.step_truth`), the embedded task only: a
  ceiling for the curves that shows what a perfect step checker would buy, never a
  training label.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mlflow

from ttscale.configs.schema import GeneratorConfig, ScoreConfig, confidence_model
from ttscale.models.prm import PRM, StepScorer, parameter_count
from ttscale.models.surprise_prm import SurpriseHead, is_surprise_prm
from ttscale.tasks import arith
from ttscale.tasks.sampling import stable_hash
from ttscale.tasks.tracking import registered_model_path
from ttscale.workdir import Workdir, fingerprint, read_record

RANDOM, CONFIDENCE, ORACLE = "random", "confidence", "oracle"
ScorerKind = Literal["prm", "random", "confidence", "oracle"]
PRMFormat = Literal["classifier", "math-shepherd", "rlhflow"]


@dataclass(frozen=True)
class ScorerSource:
    """What scores steps: a PRM folder, the generator's folder (confidence), or nothing (random, oracle)."""

    kind: ScorerKind
    path: Path | None = None
    chat_template: bool = False  # confidence: read the prompt as the generator was given it
    prm_format: PRMFormat = "classifier"  # a PRM folder: token classification, or a causal LM read at labels

    def identity(self) -> str:
        """What a scorer id hashes: a PRM's weights (as ids have always been), or the kind and its weights."""
        if self.path is None:
            return self.kind
        if self.kind == "prm":
            weights = fingerprint(self.path)
            return weights if self.prm_format == "classifier" else f"{self.prm_format}:{weights}"
        return f"{self.kind}:{fingerprint(self.path)}:{self.chat_template}"

    def parameters(self) -> int:
        """Parameters a scorer spends FLOPs with (for compute accounting), without loading weights."""
        if self.kind == "prm" and self.prm_format == "classifier" and not is_surprise_prm(self.path):
            return parameter_count(self.path)
        if self.kind in ("prm", CONFIDENCE):
            from ttscale.models.confidence import causal_parameter_count

            return causal_parameter_count(self.path)
        return 0

    def record(self) -> dict:
        """The training record of a PRM this workdir trained ({} for every other scorer)."""
        return (read_record(self.path) or {}) if self.kind == "prm" else {}


class _PathScorer:
    """A scorer that reads no tokens and has no parameters: one rule from a whole path to its prefix scores."""

    n_params = 0

    def path_scores(self, prompt: str, steps: Sequence[str]) -> list[float]:
        raise NotImplementedError

    def score(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        return [self.path_scores(p, steps) for p, steps in zip(prompts, step_lists)]

    def score_with_tokens(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]
                          ) -> tuple[list[list[float]], list[list[int]]]:
        scores = self.score(prompts, step_lists)
        return scores, [[0] * len(s) for s in scores]

    def score_extensions(self, groups: Sequence[tuple[str, Sequence[str], Sequence[str]]]
                         ) -> list[list[tuple[float, int]]]:
        return [[(self.path_scores(prompt, [*shared, step])[-1], 0) for step in nexts]
                for prompt, shared, nexts in groups]


class RandomScorer(_PathScorer):
    """Uniform scores from a hash of (seed, prompt, steps so far)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _score(self, prompt: str, steps: Sequence[str]) -> float:
        digest = hashlib.blake2b(repr((self.seed, prompt, tuple(steps))).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def path_scores(self, prompt: str, steps: Sequence[str]) -> list[float]:
        return [self._score(prompt, steps[: i + 1]) for i in range(len(steps))]


class OracleScorer(_PathScorer):
    """1 while every step so far is right by the exact checks, 0 from the first wrong one on.

    A prefix score, so `last` and `min` agree. Knows the embedded task only: any other
    prompt is an error, not a guess."""

    def path_scores(self, prompt: str, steps: Sequence[str]) -> list[float]:
        try:
            truth = arith.step_truth(prompt, list(steps))
        except ValueError as err:
            raise ValueError("scoring.prm: oracle checks steps exactly, which only the embedded task (task.kind "
                             f"arith) allows: {err}") from None
        out, right = [], True
        for error in truth:
            right = right and error is None
            out.append(1.0 if right else 0.0)
        return out


def open_scorer(source: ScorerSource, cfg: ScoreConfig) -> StepScorer:
    """The scorer as the scoring section configures it."""
    if source.kind == RANDOM:
        return RandomScorer()
    if source.kind == ORACLE:
        return OracleScorer()
    if source.kind == CONFIDENCE:
        from ttscale.models.confidence import ConfidenceScorer

        return ConfidenceScorer(source.path, cfg.batch_size, cfg.threads, chat_template=source.chat_template)
    if source.prm_format != "classifier":
        from ttscale.models.lm_prm import LabelTokenPRM

        return LabelTokenPRM(source.path, source.prm_format, cfg.batch_size, cfg.threads)
    if is_surprise_prm(source.path):  # a trained head over the generator's surprise (models/surprise_prm.py)
        from ttscale.models.confidence import ConfidenceScorer, SurpriseFold

        return ConfidenceScorer(source.path, cfg.batch_size, cfg.threads,
                                fold=SurpriseFold(SurpriseHead.load(source.path)))
    return PRM.for_scoring(source.path, cfg)


def resolve_prm(spec: str, wd: Workdir, generator: GeneratorConfig = GeneratorConfig(),
                prm_format: PRMFormat = "classifier") -> ScorerSource:
    """'trained' -> the workdir's PRM; 'models:/NAME/VERSION' -> the registry; 'random' / 'oracle' ->
    the scorers that need no weights; 'confidence' -> the generator's folder; 'confidence:NAME' -> that
    model's folder; else a local folder, read in `prm_format` (scoring.prm_format)."""
    if spec in (RANDOM, ORACLE):
        return ScorerSource(spec)
    reads = generator.model if spec == CONFIDENCE else confidence_model(spec)
    if reads is not None:
        return ScorerSource(CONFIDENCE, wd.require_model(reads), generator.chat_template)
    if spec == "trained":
        path = wd.models / "prm"
        if not path.is_dir():
            raise FileNotFoundError(f"no trained PRM at {path}: run `ttscale train-prm` first")
        return ScorerSource("prm", path)
    if spec.startswith("models:/"):
        mlflow.set_tracking_uri(wd.mlflow_uri)
        return ScorerSource("prm", registered_model_path(spec))
    path = Path(spec).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"scoring.prm: no PRM folder at {path}")
    return ScorerSource("prm", path, prm_format=prm_format)


def scorer_key(source: ScorerSource, step_separator: str | None) -> str:
    """A scorer is one PRM's weights plus how steps are presented to it (or a scorer without training)."""
    return stable_hash("scorer", source.identity(), step_separator)
