"""Pretrained PRMs that are language models: a step's score is P("+") against P("-") at one token.

Two published formats, behind the same `StepScorer` seam as our token-classification PRM
and loaded as plain causal LMs (no `trust_remote_code`):

- `math-shepherd` (e.g. peiyi9979/math-shepherd-mistral-7b-prm): the solution is written with
  a tag after every step (`ки`, on its own line break); the logits *at* each tag, restricted
  to the good and bad tokens (`+`, `-`) and softmaxed, give that step's score.
- `rlhflow` (e.g. RLHFlow/Llama3.1-8B-PRM-Deepseek-Data): a chat where the user says the
  problem with the first step, then each further step, and the assistant answers `+` after
  each; the logits *before* each assistant `+`, restricted the same way, score that step.

Both read every step of a solution in one forward pass (a causal model's output at a
position has seen exactly the prefix before it), so a solution costs 2 * P * tokens FLOPs
like any scorer. Search's extension calls score each child's whole path (no prefix cache).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ttscale.models.prm import Encoded, collate

LMFormat = Literal["math-shepherd", "rlhflow"]
GOOD, BAD = "+", "-"
SHEPHERD_TAG = "ки"


def _token_at(offsets: Sequence[tuple[int, int]], char: int, start: int = 0) -> int:
    """Index of the token whose span covers character `char` (offsets from a fast tokenizer)."""
    for i in range(start, len(offsets)):
        if offsets[i][0] <= char < offsets[i][1]:
            return i
    raise ValueError(f"no token covers character {char} (the tokenizer dropped it?)")


def shepherd_layout(tokenizer: PreTrainedTokenizerBase, prompt: str, steps: Sequence[str]) -> Encoded:
    """`question step1 ки\\nstep2 ки...`; read at each tag's (last) token."""
    text, tag_ends = prompt + " ", []
    for i, step in enumerate(steps):
        text += f"{step} {SHEPHERD_TAG}"
        tag_ends.append(len(text) - 1)
        if i < len(steps) - 1:
            text += "\n"
    enc = tokenizer(text, return_offsets_mapping=True)
    positions, cursor = [], 0
    for end in tag_ends:
        cursor = _token_at(enc["offset_mapping"], end, cursor)
        positions.append(cursor)
    return Encoded(list(enc["input_ids"]), positions)


def rlhflow_layout(tokenizer: PreTrainedTokenizerBase, prompt: str, steps: Sequence[str]) -> Encoded:
    """One user turn per step (the first with the problem), each answered `+`; read just before each `+`."""
    chat: list[dict[str, str]] = []
    marks: list[int] = []
    text = ""
    for i, step in enumerate(steps):
        chat += [{"role": "user", "content": f"{prompt} {step}" if i == 0 else step},
                 {"role": "assistant", "content": GOOD}]
        text = tokenizer.apply_chat_template(chat, tokenize=False)
        marks.append(text.rindex(GOOD))  # this turn's answer; the template only appends after it
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    positions, cursor = [], 0
    for mark in marks:
        cursor = _token_at(enc["offset_mapping"], mark, cursor)
        positions.append(cursor - 1)  # the logits that predict the answer token
    return Encoded(list(enc["input_ids"]), positions)


LAYOUTS: dict[str, Callable[[PreTrainedTokenizerBase, str, Sequence[str]], Encoded]] = {
    "math-shepherd": shepherd_layout, "rlhflow": rlhflow_layout}


def _single_token(tokenizer: PreTrainedTokenizerBase, text: str, model_dir: Path) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"{model_dir}: {text!r} is {len(ids)} tokens for this tokenizer, not one: not a PRM of "
                         "this format")
    return ids[0]


class LabelTokenPRM:
    """A causal-LM PRM read at label tokens (`scoring.prm_format`: math-shepherd or rlhflow)."""

    def __init__(self, model_dir: Path, fmt: LMFormat, batch_size: int = 8, threads: int = 2,
                 device: str | None = None) -> None:
        self.model_dir = model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"PRM not found: {model_dir}")
        self.layout = LAYOUTS[fmt]
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if fmt == "rlhflow" and not self.tokenizer.chat_template:
            raise ValueError(f"{model_dir}: an rlhflow PRM needs its tokenizer's chat template")
        if fmt == "math-shepherd":
            _single_token(self.tokenizer, SHEPHERD_TAG, model_dir)
        self.labels = [_single_token(self.tokenizer, GOOD, model_dir), _single_token(self.tokenizer, BAD, model_dir)]
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).to(self.device).eval()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.batch_size = batch_size
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 0)) or None

    @torch.inference_mode()
    def score_with_tokens(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]
                          ) -> tuple[list[list[float]], list[list[int]]]:
        encoded = [self.layout(self.tokenizer, p, s) if s else Encoded([], []) for p, s in zip(prompts, step_lists)]
        scores: list[list[float]] = [[] for _ in encoded]
        order = sorted((i for i, e in enumerate(encoded) if e.positions), key=lambda i: len(encoded[i].input_ids))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = collate([encoded[i] for i in idx], self.pad_id, max_len=self.max_len)
            logits = self.model(input_ids=batch["input_ids"].to(self.device),
                                attention_mask=batch["attention_mask"].to(self.device)).logits
            picked = logits[batch["rows"].to(self.device), batch["cols"].to(self.device)][:, self.labels].float()
            flat = torch.softmax(picked, dim=-1)[:, 0].cpu().tolist()
            k = 0
            for i in idx:
                n = len(encoded[i].positions)
                scores[i] = flat[k : k + n]
                k += n
        return scores, [[p + 1 for p in e.positions] for e in encoded]

    def score(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        return self.score_with_tokens(prompts, step_lists)[0]

    def score_extensions(self, groups: Sequence[tuple[str, Sequence[str], Sequence[str]]]
                         ) -> list[list[tuple[float, int]]]:
        paths = [(prompt, [*shared, step]) for prompt, shared, nexts in groups for step in nexts]
        scores, tokens = self.score_with_tokens([p for p, _ in paths], [s for _, s in paths])
        flat = iter(zip(scores, tokens))
        return [[(s[-1], t[-1]) for s, t in (next(flat) for _ in nexts)] for _, _, nexts in groups]

