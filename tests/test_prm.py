"""The PRM: step positions, the soft-label loss, the three training modes, an external
Qwen2.5-Math-PRM-shaped model through the same seam, and Monte-Carlo labeling counts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForTokenClassification, Qwen2Config, Qwen2ForTokenClassification

from ttscale.configs.schema import GeneratorConfig, PRMConfig, TaskConfig
from ttscale.models import tiny
from ttscale.models.generator import SamplingSpec, open_generator
from ttscale.models.prm import PRM, collate, encode
from ttscale.models.prm_train import LabeledSolution, split_by_problem, step_loss, train_prm
from ttscale.tasks import arith
from ttscale.tasks.grading import split_steps
from ttscale.tasks.labeling import label_chunk
from ttscale.tasks.sampling import prompt_for

PROBLEMS = arith.make_split(TaskConfig(n_test=6), "test")


def _solutions() -> list[LabeledSolution]:
    """Reference solutions labeled 1, and copies with a corrupted step labeled 0 from there on."""
    out = []
    for p in PROBLEMS:
        steps = split_steps(p.meta["reference_solution"])
        out.append(LabeledSolution(p.problem_id, prompt_for(p), steps, [1.0] * len(steps)))
        bad = steps[:1] + [steps[1][:-1] + str((int(steps[1][-1]) + 1) % 10)] + steps[2:]
        out.append(LabeledSolution(p.problem_id, prompt_for(p), bad, [1.0] + [0.0] * (len(steps) - 1)))
    return out


def test_encode_reads_each_steps_last_token():
    tok = tiny.build_tokenizer()
    steps = ["01: 1234#0011=1245", "00: 1245#0011=1256", "ans=1256"]
    enc = encode(tok, "rule\n\n02: init#0011=1234\n\n", steps)
    assert len(enc.positions) == 3
    for pos, step in zip(enc.positions, steps):
        assert tok.decode([enc.input_ids[pos]]) == step[-1]
    assert enc.positions[-1] == len(enc.input_ids) - 1
    assert tok.decode(enc.input_ids[enc.positions[0] + 1 : enc.positions[0] + 3]) == "\n\n"


def test_step_loss_is_bce_on_soft_labels_at_step_positions_only():
    logits = torch.zeros(2, 5, 1)
    logits[0, 2, 0], logits[1, 4, 0], logits[0, 0, 0] = 2.0, -1.0, 50.0  # (0, 0) is not a step: ignored
    rows, cols, labels = torch.tensor([0, 1]), torch.tensor([2, 4]), torch.tensor([0.75, 0.25])

    def bce(z: float, y: float) -> float:
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    assert float(step_loss(logits, rows, cols, labels)) == pytest.approx((bce(2.0, 0.75) + bce(-1.0, 0.25)) / 2)


def test_collate_maps_steps_to_rows_and_clips_to_max_len():
    a, b = encode(tiny.build_tokenizer(), "p\n\n", ["ab", "cd"]), encode(tiny.build_tokenizer(), "p\n\n", ["x"])
    batch = collate([a, b], pad_id=0, labels=[[1.0, 0.5], [0.0]], max_len=6)
    assert batch["input_ids"].shape == (2, 6)
    assert batch["rows"].tolist() == [0, 0, 1] and batch["labels"].tolist() == [1.0, 0.5, 0.0]
    assert max(batch["cols"].tolist()) <= 5


def test_validation_holds_out_whole_problems():
    train, val = split_by_problem(_solutions(), 0.34, seed=0)
    assert val and train
    assert not {s.problem_id for s in train} & {s.problem_id for s in val}


@pytest.mark.parametrize("mode", ["head", "lora", "full"])
def test_training_modes(mode: str, base_model_dir: Path, tmp_path: Path):
    cfg = PRMConfig(mode=mode, epochs=2, patience=2, batch_size=4, learning_rate=1e-3)
    result = train_prm(cfg, base_model_dir, _solutions(), tmp_path / mode)
    assert result.epochs == 2 and len(result.val_loss) == 2 and all(math.isfinite(x) for x in result.train_loss)
    assert result.val_predictions and len(result.val_predictions) == len(result.val_labels)
    saved = load_file(str(tmp_path / mode / "model.safetensors"))
    assert not any("lora" in k for k in saved)  # adapters merged on save
    base = load_file(str(base_model_dir / "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj.weight"
    changed = not torch.equal(saved[key], base[key])
    assert changed == (mode != "head")  # head mode leaves the base untouched
    assert result.trainable_params < result.n_params if mode != "full" else result.trainable_params == result.n_params
    scorer = PRM(tmp_path / mode, batch_size=3)
    scores = scorer.score([s.prompt for s in _solutions()], [s.steps for s in _solutions()])
    assert [len(s) for s in scores] == [len(s.steps) for s in _solutions()]


def test_a_prm_trained_on_planted_errors_scores_them_below_the_clean_steps(base_model_dir: Path, tmp_path: Path):
    """Held-out problems with one planted wrong digit: the trained PRM must score the wrong step (and
    every step after it) below the same step of the clean solution, not only land in [0, 1]."""
    train = [s for p in arith.make_split(TaskConfig(n_test=60, seed=11), "test") for s in _planted(p)]
    train_prm(PRMConfig(mode="full", epochs=4, patience=4, batch_size=8, learning_rate=1e-3), base_model_dir, train,
              tmp_path / "p")
    scorer = PRM(tmp_path / "p", batch_size=16)
    held_out = [s for p in arith.make_split(TaskConfig(n_test=12, seed=12), "test") for s in _planted(p)]
    clean, bad = held_out[0::2], held_out[1::2]
    clean_scores = scorer.score([s.prompt for s in clean], [s.steps for s in clean])
    bad_scores = scorer.score([s.prompt for s in bad], [s.steps for s in bad])
    # the corrupted step is the second one: compare it with the same position of the clean solution
    lower = [b[1] < c[1] for b, c in zip(bad_scores, clean_scores)]
    assert sum(lower) >= 0.75 * len(lower), (lower, bad_scores, clean_scores)
    assert sum(b[-1] for b in bad_scores) < sum(c[-1] for c in clean_scores)


def _planted(p) -> list[LabeledSolution]:
    """A clean solution and a copy whose second step's result is replaced by a fixed wrong one (`=0000`): an
    error the PRM can see at that step, so the test checks that labels, positions and training line up
    (telling a subtly wrong sum from a right one is the harder problem of the verifier issue)."""
    steps = split_steps(p.meta["reference_solution"])
    head, _, result = steps[1].rpartition("=")
    bad = steps[:1] + [f"{head}={'0000' if result != '0000' else '1111'}"] + steps[2:]
    return [LabeledSolution(p.problem_id, prompt_for(p), steps, [1.0] * len(steps)),
            LabeledSolution(p.problem_id, prompt_for(p), bad, [1.0] + [0.0] * (len(steps) - 1))]


def test_batching_does_not_change_scores(base_model_dir: Path, tmp_path: Path):
    train_prm(PRMConfig(mode="head", epochs=1, batch_size=8), base_model_dir, _solutions(), tmp_path / "p")
    sols = _solutions()
    one = PRM(tmp_path / "p", batch_size=1).score([s.prompt for s in sols], [s.steps for s in sols])
    many = PRM(tmp_path / "p", batch_size=64).score([s.prompt for s in sols], [s.steps for s in sols])
    assert [pytest.approx(a, abs=1e-5) for a in one] == many


def test_scoring_extensions_over_a_shared_prefix_equals_scoring_whole_paths(base_model_dir: Path, tmp_path: Path):
    train_prm(PRMConfig(mode="head", epochs=1, batch_size=8), base_model_dir, _solutions(), tmp_path / "p")
    scorer = PRM(tmp_path / "p", batch_size=2)  # several batches, prefixes of different lengths
    groups = []
    for s in _solutions():
        for cut in range(len(s.steps)):
            if len(s.prompt) + sum(len(x) + 2 for x in s.steps[: cut + 1]) < scorer.max_len - 4:  # no truncation
                groups.append((s.prompt, s.steps[:cut], [s.steps[cut], "00: 1234#1111=2345", "ans=0000"]))
    assert len({len(g[1]) for g in groups}) > 2  # prefixes of several lengths share batches
    ext = scorer.score_extensions(groups)
    whole = scorer.score_with_tokens([g[0] for g in groups for _ in g[2]],
                                     [list(g[1]) + [c] for g in groups for c in g[2]])
    flat = [x for row in ext for x in row]
    assert [len(row) for row in ext] == [3] * len(groups)
    assert [score for score, _ in flat] == pytest.approx([s[-1] for s in whole[0]], abs=1e-5)
    assert [tokens for _, tokens in flat] == [t[-1] for t in whole[1]]
    # A second call (search's next round) starts each group from its parent's cached prefix
    # KV; the numbers do not change, with the cache or without room for it.
    assert any((g[0], tuple(g[1][:-1])) in scorer._prefixes for g in groups if g[1])
    def flat_scores(rows):
        return [score for row in rows for score, _ in row]

    assert flat_scores(scorer.score_extensions(groups)) == pytest.approx(flat_scores(ext), abs=1e-5)
    scorer.prefix_cache_tokens, scorer._prefixes = 0, type(scorer._prefixes)()
    scorer.score_extensions(groups)
    assert not scorer._prefixes
    assert flat_scores(scorer.score_extensions(groups)) == pytest.approx(flat_scores(ext), abs=1e-5)


def _external_prm(path: Path) -> Path:
    """A tiny model of Qwen2.5-Math-PRM's shape: 2-class token classification read at `<extra_0>`."""
    tok = tiny.build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<extra_0>"]})
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, num_labels=2,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForTokenClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_external_token_classification_prm_through_the_same_seam(tmp_path: Path):
    path = _external_prm(tmp_path / "qwen-prm")
    scorer = PRM(path, batch_size=2, step_separator="<extra_0>")
    sols = _solutions()[:3]
    scores = scorer.score([s.prompt for s in sols], [s.steps for s in sols])
    assert [len(s) for s in scores] == [len(s.steps) for s in sols]
    # the same numbers by hand: softmax class 1 at each separator token
    enc = scorer.encode(sols[0].prompt, sols[0].steps)
    sep = scorer.tokenizer.convert_tokens_to_ids("<extra_0>")
    assert [enc.input_ids[p] for p in enc.positions] == [sep] * len(sols[0].steps)
    model = AutoModelForTokenClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0]
    expected = torch.softmax(logits[enc.positions], dim=-1)[:, 1].tolist()
    assert scores[0] == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="not a token"):
        PRM(path, step_separator="<missing>")
    # search's extension scoring reads the separators in the shared prefix too (grouped-query KV cache)
    s = sols[0]
    groups = [(s.prompt, s.steps[:cut], [s.steps[cut]]) for cut in range(len(s.steps))]
    for _ in range(2):  # the second call starts from the cached parents
        ext = scorer.score_extensions(groups)
        assert [row[0][0] for row in ext] == pytest.approx(scores[0], abs=1e-5)


def test_labeling_counts_rollouts_and_grades_outcomes(base_model_dir: Path):
    spec = SamplingSpec(n=2, temperature=1.0, max_tokens=96, seed=3)
    with open_generator(GeneratorConfig(backend="hf", batch_size=32), base_model_dir) as gen:
        cands, steps, labels = label_chunk(gen, PROBLEMS[:3], spec, rollouts=3, label_bank="lb", run_id="r",
                                           model_name="base")
    assert cands.num_rows == 6 and set(cands.column("method").to_pylist()) == {"label"}
    rows = labels.to_pylist()
    n_steps = dict(zip(cands.column("candidate_id").to_pylist(), cands.column("n_steps").to_pylist()))
    correct = dict(zip(cands.column("candidate_id").to_pylist(), cands.column("correct").to_pylist()))
    assert len(rows) == steps.num_rows == sum(n_steps.values())  # one label per step
    for r in rows:
        assert 0 <= r["correct"] <= r["rollouts"] and r["label"] == pytest.approx(r["correct"] / r["rollouts"])
        if r["step_index"] == n_steps[r["candidate_id"]] - 1:  # the last step is graded as it is
            assert r["kind"] == "outcome" and r["rollouts"] == 1 and r["correct"] == int(correct[r["candidate_id"]])
            assert r["generated_tokens"] == 0
        else:
            assert r["kind"] == "rollouts" and r["rollouts"] == 3 and r["generated_tokens"] > 0 and r["flops"] > 0


def test_the_surprise_prm_trains_a_head_over_the_frozen_generators_surprise(base_model_dir: Path, tmp_path: Path):
    """`prm.mode: surprise`: the generator's weights are saved untouched beside a trained head, the folder
    opens through the same scorer seam, search's extensions score what whole paths do, and a planted
    wrong result (a token the generator finds unlikely) scores below the clean step at the same place.
    (The smoke-trained generator is unsure of much else too, so later steps may recover here; on tiny's
    base the planted step and every one after it score about 0.01 against the clean ones' 0.98.)"""
    from ttscale.configs.schema import ScoreConfig
    from ttscale.models.confidence import ConfidenceScorer, SurpriseFold, causal_parameter_count
    from ttscale.models.scorers import ScorerSource, open_scorer
    from ttscale.models.surprise_prm import HEAD_FILE, is_surprise_prm

    train = [s for p in arith.make_split(TaskConfig(n_test=60, seed=11), "test") for s in _planted(p)]
    out = tmp_path / "surprise"
    result = train_prm(PRMConfig(mode="surprise", epochs=20, patience=20, batch_size=8, learning_rate=1e-2),
                       base_model_dir, train, out)
    assert result.epochs == 20 and result.val_loss[-1] < result.val_loss[0]  # the head learned something
    assert result.trainable_params < 1000 < result.n_params and result.val_predictions
    assert is_surprise_prm(out) and (out / HEAD_FILE).exists() and not is_surprise_prm(base_model_dir)
    saved, base = load_file(str(out / "model.safetensors")), load_file(str(base_model_dir / "model.safetensors"))
    assert all(torch.equal(saved[k], base[k]) for k in base)  # frozen: the generator's own weights
    source = ScorerSource("prm", out)
    assert source.parameters() == causal_parameter_count(base_model_dir)  # charged at the generator's size
    scorer = open_scorer(source, ScoreConfig(batch_size=4))
    assert isinstance(scorer, ConfidenceScorer) and isinstance(scorer.fold, SurpriseFold)

    held_out = [s for p in arith.make_split(TaskConfig(n_test=12, seed=12), "test") for s in _planted(p)]
    clean, bad = held_out[0::2], held_out[1::2]
    clean_scores = scorer.score([s.prompt for s in clean], [s.steps for s in clean])
    bad_scores = scorer.score([s.prompt for s in bad], [s.steps for s in bad])
    assert all(0.0 < x < 1.0 for row in clean_scores + bad_scores for x in row)
    lower = [b[1] < c[1] - 0.05 for b, c in zip(bad_scores, clean_scores)]
    assert sum(lower) >= 0.75 * len(lower), (bad_scores, clean_scores)
    groups = [(s.prompt, s.steps[:2], [s.steps[2], bad[0].steps[2]]) for s in clean[:3]]
    ext = scorer.score_extensions(groups)
    assert [row[0][0] for row in ext] == pytest.approx([c[2] for c in clean_scores[:3]], rel=1e-4)
