"""The revision model: the base model fine-tuned to write a correct attempt after wrong ones.

Each example is (revision prompt, correct target); the loss is on the target tokens
only, so the model learns to revise, not to reproduce wrong attempts. Examples are
padded per batch (not packed like base training): an attempt is only useful next to
its own earlier attempts, so no example may be cut or share a row. Batches group
examples of similar length, which keeps padding small. `full` fine-tunes every weight
(the embedded model); `lora` trains peft adapters and merges them on save (large models).

Two things here concern whether the reviser reads what it is shown. `first_edit` marks the
target character where it first differs from the attempt just before it: the one place a wrong
attempt tells the model something (everything before it is a copy of work the model would
redo anyway), and `ReviserConfig.edit_weight` weighs that token more in the loss.
`target_nll` scores a target with and without its context, so train-reviser can measure on
held-out problems how much the context lowers the target's loss (its "context gain").

The model is saved with `max_position_embeddings` set to `max_seq_len`, the longest
sequence it was fine-tuned at; `ContextRoom` reads it back so that chains never serve it a
prompt longer than that (vLLM caps its context at the same value). A trajectory too long
for it loses its oldest wrong attempts (`tasks.revisions.fitted`) rather than the example.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ttscale.configs.schema import ReviserConfig
from ttscale.models.prm_train import length_batches, save_trained


@dataclass
class ReviserTrainResult:
    updates: int
    examples: int
    skipped_too_long: int
    tokens: int = 0
    target_tokens: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    n_params: int = 0
    trainable_params: int = 0


def context_length(model_dir: Path) -> int:
    """The positions a saved model was trained at (its config's max_position_embeddings)."""
    return int(json.loads((Path(model_dir) / "config.json").read_text())["max_position_embeddings"])


class ContextRoom:
    """Token counts against a context length (default: the model's trained one), with the model's
    own tokenizer: whether a prompt leaves room for what must follow it. (A chat template adds a
    few tokens; the models served with one have thousands of positions to spare.)"""

    def __init__(self, model_dir: Path, limit: int | None = None) -> None:
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.limit = limit if limit is not None else context_length(model_dir)
        self._special = 1 if self._tokenizer.bos_token_id is not None else 0

    def tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def fits(self, prompt: str, room: int) -> bool:
        """`prompt` (after <bos>) and `room` more tokens within the limit."""
        return self._special + self.tokens(prompt) + room <= self.limit


def encode_example(tokenizer: PreTrainedTokenizerBase, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """<bos> prompt target <eos>, with labels (-100 = no loss) on the target and <eos> only."""
    p = tokenizer.encode(prompt, add_special_tokens=False)
    t = tokenizer.encode(target, add_special_tokens=False) + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + p + t, [-100] * (len(bos) + len(p)) + t


def first_edit(target: str, context: Sequence[str]) -> int | None:
    """The character of `target` where it first differs from the last attempt of `context` (None: no context)."""
    if not context:
        return None
    last = context[-1]
    return next((i for i, (a, b) in enumerate(zip(target, last)) if a != b), min(len(target), len(last)))


def loss_weights(tokenizer: PreTrainedTokenizerBase, target: str, edit: int | None, weight: float) -> list[float]:
    """One weight per target token and <eos> (as `encode_example` lays them out): `weight` on the token
    holding character `edit`, 1 elsewhere."""
    n = len(tokenizer.encode(target, add_special_tokens=False)) + 1
    weights = [1.0] * n
    if edit is not None and weight != 1.0:
        weights[min(len(tokenizer.encode(target[:edit], add_special_tokens=False)), n - 1)] = weight
    return weights


def target_nll(model_dir: Path, pairs: Sequence[tuple[str, str]], threads: int = 2) -> list[float]:
    """Teacher-forced negative log-likelihood (nats, summed over the target and <eos>) of each
    (prompt, target): the reviser's loss on one example, without sampling."""
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
    out = []
    with torch.no_grad():
        for prompt, target in pairs:
            ids, labels = encode_example(tokenizer, prompt, target)
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            wanted = torch.tensor(labels[1:])
            keep = wanted != -100
            out.append(float(torch.nn.functional.cross_entropy(logits[keep], wanted[keep], reduction="sum")))
    return out


def _pad(rows: Sequence[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows])


def train_reviser(
    cfg: ReviserConfig,
    base_dir: Path,
    examples: Sequence[tuple[str, str, int | None]],
    out_dir: Path,
    on_update: Callable[[int, float], None] | None = None,
) -> ReviserTrainResult:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True)
    model.config.max_position_embeddings = cfg.max_seq_len
    encoded = [(*encode_example(tokenizer, p, t), loss_weights(tokenizer, t, edit, cfg.edit_weight))
               for p, t, edit in examples]
    kept = [e for e in encoded if len(e[0]) <= cfg.max_seq_len]
    result = ReviserTrainResult(updates=0, examples=len(kept), skipped_too_long=len(encoded) - len(kept),
                                n_params=sum(p.numel() for p in model.parameters()))
    if not kept:
        raise ValueError("no revision trajectories to train on (or all longer than reviser.max_seq_len)")
    if cfg.mode == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=0.0, target_modules="all-linear"))
    params = [p for p in model.parameters() if p.requires_grad]
    result.trainable_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rng = random.Random(cfg.seed)
    per_epoch = math.ceil(len(kept) / cfg.batch_size)
    total = min(cfg.max_updates, per_epoch * cfg.epochs)
    model.train()
    ema = float("nan")
    with tqdm(total=total, desc="train-reviser", unit="update", disable=None, mininterval=1.0) as bar:
        for _ in range(cfg.epochs):
            for batch in length_batches([len(e[0]) for e in kept], cfg.batch_size, rng):
                if result.updates >= total:
                    break
                warm = min(1.0, (result.updates + 1) / max(1, cfg.warmup_updates))
                frac = result.updates / total
                for group in opt.param_groups:
                    group["lr"] = cfg.learning_rate * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
                ids = _pad([kept[j][0] for j in batch], pad)
                labels = _pad([kept[j][1] for j in batch], -100)
                mask = _pad([[1] * len(kept[j][0]) for j in batch], 0)
                weights = _pad([[0.0] * (len(kept[j][1]) - len(kept[j][2])) + kept[j][2] for j in batch], 0.0)
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=-100,
                                                              reduction="none")
                w = weights[:, 1:]
                loss = (per_token * w).sum() / w.sum()  # edit_weight 1: the mean over target tokens
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                result.updates += 1
                result.tokens += int(mask.sum())
                result.target_tokens += int((labels != -100).sum())
                value = float(loss.detach())
                ema = value if math.isnan(ema) else 0.9 * ema + 0.1 * value
                if result.updates % 10 == 0:
                    result.losses.append((result.updates, ema))
                if on_update is not None:
                    on_update(result.updates, ema)
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.3f}")
    save_trained(model, tokenizer, out_dir, merge_lora=cfg.mode == "lora")
    return result
