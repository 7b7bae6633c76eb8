"""The scorers that need no training, behind the same seam as a PRM: random (the null floor),
oracle (exact step checks, the ceiling) and confidence (the generator's own token probabilities)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import kstest
from transformers import AutoModelForCausalLM, AutoTokenizer

from ttscale.configs.schema import ScoreConfig
from ttscale.models.scorers import resolve_prm, scorer_key
from ttscale.models.confidence import ConfidenceScorer
from ttscale.models.scorers import CONFIDENCE, ORACLE, RANDOM, OracleScorer, RandomScorer, ScorerSource, open_scorer
from ttscale.tasks import arith
from ttscale.workdir import Workdir

PROMPT = arith.prompt("x#k adds k to x digit by digit, mod 10\n\n03: init#0011=1234")
RIGHT = ["02: 1234#0011=1245", "01: 1245#0011=1256", "00: 1256#0011=1267", "ans=1267"]
SLIP = ["02: 1234#0011=1245", "01: 1245#0011=1257", "00: 1257#0011=1268", "ans=1268"]  # step 2 miscomputed


def test_random_scores_are_uniform_repeatable_and_the_same_on_every_path(tmp_path):
    source = resolve_prm(RANDOM, Workdir.at(str(tmp_path)))
    scorer = open_scorer(source, ScoreConfig(prm=RANDOM))
    assert isinstance(scorer, RandomScorer) and scorer.n_params == 0 and source.parameters() == 0
    prompts = [f"problem {i}" for i in range(300)]
    steps = [[f"step {i}.{j}" for j in range(4)] for i in range(300)]
    scores, tokens = scorer.score_with_tokens(prompts, steps)
    flat = np.array(scores).ravel()
    assert kstest(flat, "uniform").pvalue > 0.01 and not np.array(tokens).any()
    assert scorer.score(prompts, steps) == scores  # repeatable
    ext = scorer.score_extensions([(prompts[0], steps[0][:2], [steps[0][2], "other"])])
    assert ext[0][0][0] == scores[0][2]  # search's extensions score what the bank would
    assert scorer_key(source, None) != scorer_key(source, "<sep>")


def test_oracle_scores_a_prefix_one_until_its_first_wrong_step(tmp_path):
    source = resolve_prm(ORACLE, Workdir.at(str(tmp_path)))
    scorer = open_scorer(source, ScoreConfig(prm=ORACLE))
    assert isinstance(scorer, OracleScorer) and source.parameters() == 0
    # The slip's later steps are right given the step before; the prefix is wrong from step 2 on.
    assert scorer.score([PROMPT, PROMPT], [RIGHT, SLIP]) == [[1.0] * 4, [1.0, 0.0, 0.0, 0.0]]
    assert scorer.score_extensions([(PROMPT, RIGHT[:1], [RIGHT[1], SLIP[1]])]) == [[(1.0, 0), (0.0, 0)]]
    with pytest.raises(ValueError, match="only the embedded task"):
        scorer.score(["What is 2 + 2?"], [["4"]])
    assert len({scorer_key(ScorerSource(k), None) for k in (RANDOM, ORACLE)}) == 2


def _direct_confidence(model_dir, prompt: str, steps: list[str]) -> list[float]:
    """The same quantity computed the plain way: full-vocabulary log-softmax over the whole text."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    text = prompt + arith.STEP_DELIMITER.join(steps)
    ids = tok(text, return_offsets_mapping=True)
    with torch.inference_mode():
        lp = torch.log_softmax(model(input_ids=torch.tensor([ids["input_ids"]])).logits[0].float(), -1)
    out, lowest, start = [], 1.0, len(prompt)
    for step in steps:
        inside = [k for k, (a, b) in enumerate(ids["offset_mapping"]) if b > a and start <= a < start + len(step)]
        mean = sum(float(lp[k - 1, ids["input_ids"][k]]) for k in inside) / len(inside)
        lowest = min(lowest, math.exp(mean))
        out.append(lowest)
        start += len(step) + len(arith.STEP_DELIMITER)
    return out


def test_confidence_of_another_model_reads_that_models_folder(base_model_dir, tmp_path):
    """confidence:large is the FLOPs-matched stage's larger model as a verifier: the same scorer, another
    model's weights (so another scorer id), charged at that model's size; missing, it says what trains it."""
    wd = Workdir.at(str(tmp_path))
    wd.models.mkdir(parents=True, exist_ok=True)
    (wd.models / "base").symlink_to(base_model_dir)
    with pytest.raises(FileNotFoundError, match="ttscale train-large"):
        resolve_prm("confidence:large", wd)
    other = tmp_path / "other"
    shutil.copytree(base_model_dir, other)
    model = AutoModelForCausalLM.from_pretrained(other)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(0.5)  # the same shape, other weights
    model.save_pretrained(other)
    (wd.models / "large").symlink_to(other)
    large, own = resolve_prm("confidence:large", wd), resolve_prm(CONFIDENCE, wd)
    assert large.kind == own.kind == CONFIDENCE and large.path == wd.models / "large"
    assert resolve_prm(f"confidence:{other}", wd).path == other
    assert scorer_key(large, None) != scorer_key(own, None)
    cfg = ScoreConfig(prm=CONFIDENCE, batch_size=4)
    theirs, ours = (open_scorer(s, cfg).score([PROMPT], [SLIP])[0] for s in (large, own))
    assert theirs == pytest.approx(_direct_confidence(other, PROMPT, SLIP), rel=1e-4) and theirs != ours


def test_confidence_is_the_generators_token_probability_lowest_step_so_far(base_model_dir, tmp_path):
    wd = Workdir.at(str(tmp_path))
    (wd.models).mkdir(parents=True, exist_ok=True)
    (wd.models / "base").symlink_to(base_model_dir)
    source = resolve_prm(CONFIDENCE, wd)
    assert source.kind == CONFIDENCE and source.parameters() > 0
    scorer = open_scorer(source, ScoreConfig(prm=CONFIDENCE, batch_size=1))
    assert isinstance(scorer, ConfidenceScorer)
    scores, tokens = scorer.score_with_tokens([PROMPT, PROMPT], [RIGHT, SLIP])
    for got, steps in zip(scores, (RIGHT, SLIP)):
        assert got == pytest.approx(_direct_confidence(base_model_dir, PROMPT, steps), rel=1e-4)
        assert all(a >= b for a, b in zip(got, got[1:]))  # a prefix is as sure as its least sure step
    whole = AutoTokenizer.from_pretrained(base_model_dir)(PROMPT + arith.STEP_DELIMITER.join(RIGHT))["input_ids"]
    assert tokens[0] == sorted(tokens[0]) and tokens[0][-1] == len(whole)  # a score has read its whole prefix
    batched = ConfidenceScorer(base_model_dir, batch_size=8).score([PROMPT, PROMPT], [RIGHT, SLIP])
    assert np.allclose(batched, scores, rtol=1e-4)  # padding changes nothing
    # search's extensions (the prefix run once per group, its KV shared by the children) score what the
    # whole path would, in groups of different depths, one without children among them
    groups = [(PROMPT, RIGHT[:1], [RIGHT[1], SLIP[1]]), (PROMPT, [], [RIGHT[0]]), (PROMPT, RIGHT[:2], []),
              (PROMPT, SLIP[:3], [SLIP[3]])]
    for size in (1, 8):
        ext = ConfidenceScorer(base_model_dir, batch_size=size).score_extensions(groups)
        assert [s for s, _ in ext[0]] == pytest.approx([scores[0][1], scores[1][1]], rel=1e-4)
        assert [t for _, t in ext[0]] == [tokens[0][1], tokens[1][1]]
        assert ext[1][0][0] == pytest.approx(scores[0][0], rel=1e-4) and ext[2] == []
        assert ext[3][0] == (pytest.approx(scores[1][3], rel=1e-4), tokens[1][3])
    assert scorer_key(source, None) != scorer_key(ScorerSource("prm", base_model_dir), None)
