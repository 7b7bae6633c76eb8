"""Pretrained PRMs in their published formats, on tiny models of their architectures built here:
the scores are the softmax over the good and bad tokens at exactly the positions the formats'
reference code reads (Math-Shepherd: where the input is the step tag; RLHFlow: before each
assistant '+')."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from ttscale.configs.schema import ScoreConfig
from ttscale.models.lm_prm import GOOD, SHEPHERD_TAG, LabelTokenPRM
from ttscale.models.scorers import ScorerSource, open_scorer
from ttscale.models.tiny import build_tokenizer

PROMPT = "What is 12+30?"
STEPS = ["First add the tens: 10 and 30 make 40", "Then the ones: 40 and 2 make 42", "The answer is 42"]
CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _save(model_cls, config_cls, tmp: Path, extra: list[str], chat: str | None = None) -> Path:
    tokenizer = build_tokenizer()
    tokenizer.add_tokens(extra, special_tokens=True)
    if chat:
        tokenizer.chat_template = chat
    cfg = config_cls(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                     pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model_cls(cfg).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return tmp


@pytest.fixture(scope="module")
def shepherd_dir(tmp_path_factory) -> Path:
    return _save(MistralForCausalLM, MistralConfig, tmp_path_factory.mktemp("shepherd"), [SHEPHERD_TAG])


@pytest.fixture(scope="module")
def rlhflow_dir(tmp_path_factory) -> Path:
    return _save(LlamaForCausalLM, LlamaConfig, tmp_path_factory.mktemp("rlhflow"),
                 ["<|user|>", "<|assistant|>", "<|end|>"], CHAT)


def _reference(model_dir: Path, ids: list[int], read_at: list[int]) -> list[float]:
    prm = LabelTokenPRM(model_dir, "math-shepherd" if (model_dir / "config.json").read_text().count("Mistral")
                        else "rlhflow")
    logits = prm.model(input_ids=torch.tensor([ids])).logits[0]
    return torch.softmax(logits[read_at][:, prm.labels], -1)[:, 0].tolist()


def test_math_shepherd_reads_at_each_tag(shepherd_dir: Path):
    prm = LabelTokenPRM(shepherd_dir, "math-shepherd")
    tokenizer = prm.tokenizer
    text = PROMPT + " " + "\n".join(f"{s} {SHEPHERD_TAG}" for s in STEPS)
    ids = tokenizer(text)["input_ids"]
    tag = tokenizer.convert_tokens_to_ids(SHEPHERD_TAG)
    at_tags = [i for i, t in enumerate(ids) if t == tag]
    assert len(at_tags) == len(STEPS)
    [scores] = prm.score([PROMPT], [STEPS])
    assert scores == pytest.approx(_reference(shepherd_dir, ids, at_tags), abs=1e-5)
    assert all(0 < s < 1 for s in scores)


def test_rlhflow_reads_before_each_assistant_plus(rlhflow_dir: Path):
    prm = LabelTokenPRM(rlhflow_dir, "rlhflow")
    tokenizer = prm.tokenizer
    chat = []
    for i, step in enumerate(STEPS):
        chat += [{"role": "user", "content": f"{PROMPT} {step}" if i == 0 else step},
                 {"role": "assistant", "content": GOOD}]
    ids = tokenizer.apply_chat_template(chat, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    answers = [i for i in range(1, len(ids)) if ids[i - 1] == assistant]  # each assistant turn's token
    assert [tokenizer.decode([ids[i]]) for i in answers] == [GOOD] * len(STEPS)
    [scores] = prm.score([PROMPT], [STEPS])
    assert scores == pytest.approx(_reference(rlhflow_dir, ids, [i - 1 for i in answers]), abs=1e-5)


def test_label_token_prms_behind_the_scorer_seam(shepherd_dir: Path, rlhflow_dir: Path):
    for path, fmt in ((shepherd_dir, "math-shepherd"), (rlhflow_dir, "rlhflow")):
        source = ScorerSource("prm", path, prm_format=fmt)
        assert source.identity() != ScorerSource("prm", path).identity()
        assert source.parameters() > 0
        scorer = open_scorer(source, ScoreConfig(batch_size=2))
        whole = scorer.score([PROMPT, PROMPT], [STEPS, STEPS[:1]])
        assert [len(s) for s in whole] == [3, 1] and whole[0][0] == pytest.approx(whole[1][0], abs=1e-5)
        [[(last, tokens)]] = scorer.score_extensions([(PROMPT, STEPS[:2], [STEPS[2]])])
        assert last == pytest.approx(whole[0][2], abs=1e-5) and tokens > 0


def test_a_model_without_the_format_s_tokens_is_refused(tmp_path: Path):
    plain = _save(LlamaForCausalLM, LlamaConfig, tmp_path / "plain", [])
    with pytest.raises(ValueError, match="not a PRM of this format"):
        LabelTokenPRM(plain, "math-shepherd")
    with pytest.raises(ValueError, match="chat template"):
        LabelTokenPRM(plain, "rlhflow")
