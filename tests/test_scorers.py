"""The random scorer: the null floor every verifier is measured against, behind the same seam as a PRM."""

from __future__ import annotations

import numpy as np
from scipy.stats import kstest

from configs.schema import ScoreConfig
from flows.score_bank import resolve_prm, scorer_key
from models.scorers import RANDOM, RandomScorer, open_scorer, scorer_parameters
from ttscale.workdir import Workdir


def test_random_scores_are_uniform_repeatable_and_the_same_on_every_path(tmp_path):
    scorer = open_scorer(resolve_prm(RANDOM, Workdir.at(str(tmp_path))), ScoreConfig(prm=RANDOM))
    assert isinstance(scorer, RandomScorer) and scorer.n_params == 0 and scorer_parameters(RANDOM) == 0
    prompts = [f"problem {i}" for i in range(300)]
    steps = [[f"step {i}.{j}" for j in range(4)] for i in range(300)]
    scores, tokens = scorer.score_with_tokens(prompts, steps)
    flat = np.array(scores).ravel()
    assert kstest(flat, "uniform").pvalue > 0.01 and not np.array(tokens).any()
    assert scorer.score(prompts, steps) == scores  # repeatable
    ext = scorer.score_extensions([(prompts[0], steps[0][:2], [steps[0][2], "other"])])
    assert ext[0][0][0] == scores[0][2]  # search's extensions score what the bank would
    assert scorer_key(RANDOM, None) != scorer_key(RANDOM, "<sep>")
