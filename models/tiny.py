"""The embedded base model: a ~1M-parameter LLaMA trained from scratch on the embedded task.

Read in one sitting: a character-level tokenizer built locally with `tokenizers`
(no hub), a LlamaConfig, and a time-budgeted training loop over packed rows with the
loss on solution tokens only. The result is an ordinary transformers folder
(safetensors + tokenizer), so every backend loads it exactly like a hub model. `pass_at_1`
says whether a trained folder learned the task (a run's training is a draw: README, "The base model").
"""

from __future__ import annotations

import math
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ttscale.configs.schema import BaseModelConfig
from ttscale.tasks import arith
from ttscale.tasks.problems import Problem

SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]
ALPHABET = sorted(set(string.printable) - set("\x0b\x0c\r\t"))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character: arithmetic digits stay separate, and any text still encodes."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + ALPHABET)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    # <bos> on every encode, so transformers and vLLM condition the model exactly as in training.
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


def build_model(cfg: BaseModelConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.max_seq_len,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def packed_rows(
    examples: Iterator[tuple[str, str]],
    tokenizer: PreTrainedTokenizerFast,
    seq_len: int,
    batch_rows: int,
    head_tokens: int = 0,
    head_weight: float = 1.0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Concatenate <bos> prompt solution <eos> examples into full rows; labels only on solutions.

    The third tensor weighs each label: 1, or `head_weight` on a solution's first `head_tokens`
    tokens (where it must read the question), 0 off solutions.
    """
    ids: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    while True:
        while len(ids) < seq_len * batch_rows:
            prompt_text, solution_text = next(examples)
            p = tokenizer.encode(prompt_text, add_special_tokens=False)
            s = tokenizer.encode(solution_text, add_special_tokens=False) + [tokenizer.eos_token_id]
            ids += [tokenizer.bos_token_id] + p + s
            labels += [-100] * (1 + len(p)) + s
            weights += [0.0] * (1 + len(p)) + [head_weight if i < head_tokens else 1.0 for i in range(len(s))]
        take = seq_len * batch_rows
        x = torch.tensor(ids[:take]).view(batch_rows, seq_len)
        y = torch.tensor(labels[:take]).view(batch_rows, seq_len)
        w = torch.tensor(weights[:take]).view(batch_rows, seq_len)
        ids, labels, weights = ids[take:], labels[take:], weights[take:]
        yield x, y, w


def weighted_loss(model: LlamaForCausalLM, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, each label weighted, divided by the number of labels (so with
    all weights 1 it is transformers' own mean loss)."""
    logits = model(input_ids=x).logits[:, :-1].float()
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[:, 1:].flatten(), ignore_index=-100, reduction="none")
    return (ce * w[:, 1:].flatten()).sum() / (y[:, 1:] != -100).sum().clamp(min=1)


def lr_factor(cfg: BaseModelConfig, frac: float) -> float:
    """The share of the peak learning rate at `frac` of the updates, from 1 down to 0.05."""
    if cfg.schedule == "wsd":
        return 1.0 - 0.95 * max(0.0, frac - (1.0 - cfg.decay_fraction)) / cfg.decay_fraction
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))


@dataclass
class TrainResult:
    updates: int
    tokens: int
    seconds: float
    final_loss: float
    losses: list[tuple[int, float]]
    n_params: int
    stopped_by: str  # "updates" (the schedule ran out), "time cap" (the safety stop) or "gate" (stop_above)


def train(
    cfg: BaseModelConfig,
    examples: Iterator[tuple[str, str]],
    out_dir: Path,
    on_progress: Callable[[int, float, float], None] | None = None,
    stop_above: tuple[int, float] | None = None,
) -> TrainResult:
    """Train for `max_updates`; `train_seconds` is only a safety stop; `stop_above` = (update, loss)
    stops a try whose smoothed loss at that update is still above that loss (train-base's gate).

    The cosine schedule follows the update count alone, so with its seed a run trains
    the same model on any machine that finishes in time. (An earlier schedule that
    followed whichever of time and updates was further spent made a fresh-clone run
    that fell 35 updates short a different, broken model.) A machine too slow for the
    cap stops early with the LR not fully decayed; `TrainResult.stopped_by` says so.
    Rows are `short_seq_len` long until the last `long_updates`, then `max_seq_len`:
    short rows teach the task, the long ones the distances a reviser's prompt spans.
    """
    torch.set_num_threads(cfg.threads)
    tokenizer = build_tokenizer()
    model = build_model(cfg, tokenizer)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01, betas=(0.9, 0.98))
    per_update = cfg.max_seq_len * cfg.batch_rows
    short = cfg.short_seq_len or cfg.max_seq_len
    head = (cfg.head_tokens, cfg.head_weight)
    short_rows = packed_rows(examples, tokenizer, short, per_update // short, *head)
    long_rows = packed_rows(examples, tokenizer, cfg.max_seq_len, cfg.batch_rows, *head)
    long_from = cfg.max_updates - cfg.long_updates if cfg.short_seq_len else 0
    start = time.monotonic()
    losses: list[tuple[int, float]] = []
    ema = float("nan")
    update = tokens = 0
    stopped_by = "updates"
    while True:
        frac = update / cfg.max_updates
        if frac >= 1.0:
            break
        if time.monotonic() - start >= cfg.train_seconds:
            stopped_by = "time cap"
            break
        warm = min(1.0, (update + 1) / max(1, cfg.warmup_updates))
        lr = cfg.learning_rate * warm * lr_factor(cfg, frac)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y, w = next(long_rows if update >= long_from else short_rows)
        # transformers' own loss when nothing is weighted: the models recorded before the weight existed
        loss = model(input_ids=x, labels=y).loss if cfg.head_weight == 1.0 else weighted_loss(model, x, y, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        update += 1
        tokens += x.numel()
        value = float(loss.detach())
        ema = value if math.isnan(ema) else 0.95 * ema + 0.05 * value
        if update % 10 == 0:
            losses.append((update, ema))
        if stop_above is not None and update == stop_above[0] and ema > stop_above[1]:
            stopped_by = "gate"
            break
        if on_progress is not None:
            on_progress(update, min(1.0, frac), ema)
    seconds = time.monotonic() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return TrainResult(update, tokens, seconds, ema, losses, n_params(model), stopped_by)


def pass_at_1(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, problems: list[Problem], samples: int = 1,
              **sampling: object) -> dict[int, float]:
    """The share of `samples` answers per problem that are right, by level (0: all), generated with
    `sampling` (none: greedy). `bench/base_seeds.py` prints both, and train-base's restart check
    samples: greedy can be right while sampling at T = 1, what the bank, the PRM's labels and every
    search strategy do, is mostly wrong."""
    torch.manual_seed(0)
    right: dict[int, list[int]] = {}
    with torch.no_grad():
        for i in range(0, len(problems), 25):
            batch = problems[i : i + 25]
            enc = tokenizer([arith.prompt(p.question) for p in batch], return_tensors="pt", padding=True)
            gen = model.generate(**enc, max_new_tokens=320, do_sample=bool(sampling), num_return_sequences=samples,
                                 pad_token_id=tokenizer.pad_token_id, **sampling)
            texts = tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for j, text in enumerate(texts):
                p = batch[j // samples]
                ok = int(arith.grade(text, p.answer)[1])
                for level in (0, p.level):
                    right.setdefault(level, []).append(ok)
    return {level: sum(v) / len(v) for level, v in right.items()}


def load_trained(out_dir: Path) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A trained folder, ready for `pass_at_1`: left padding, so generation continues each prompt
    from its own last token."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out_dir)
    tokenizer.padding_side = "left"
    return LlamaForCausalLM.from_pretrained(out_dir).eval(), tokenizer


def sampled_pass_at_1(out_dir: Path, problems: list[Problem], samples: int) -> dict[int, float]:
    """`pass_at_1` of the trained folder at `out_dir`, sampled at T = 1 as the bank samples."""
    return pass_at_1(*load_trained(out_dir), problems, samples, temperature=1.0, top_k=0)
