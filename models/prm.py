"""The process reward model: a causal LM with a scalar head read at each step's last token.

One format serves our PRM and external ones: a transformers token-classification model
(`AutoModelForTokenClassification`). Ours is the base model with `num_labels=1` (a
sigmoid gives the step's value); a Qwen2.5-Math-PRM-style model has `num_labels=2`
(softmax, class 1 = "good") and reads each step at a separator token appended after it
(`step_separator`, e.g. `<extra_0>`). Either way one forward pass scores every step
prefix of a solution, since a causal model's output at a step's last token has seen
exactly that prefix.

Training (`train_prm`) is binary cross-entropy on the Monte-Carlo soft labels at those
positions, in three modes: `head` (frozen base, only the scalar head learns), `lora`
(peft adapters, merged into the weights on save) and `full`.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm
from transformers import (AutoConfig, AutoModelForTokenClassification, AutoTokenizer, DynamicCache,
                          PreTrainedTokenizerBase)

from ttscale.configs.schema import PRMConfig, ScoreConfig
from ttscale.tasks import arith

PRM_CARD = "prm.json"  # how steps are presented to this PRM, written next to its weights


class StepScorer(Protocol):
    n_params: int

    def score(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        """One score in [0, 1] per step prefix: the estimated chance that this prefix ends right."""
        ...

    def score_with_tokens(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]
                          ) -> tuple[list[list[float]], list[list[int]]]:
        """The same scores, and for each how many tokens it read (for compute accounting)."""
        ...

    def score_extensions(self, groups: Sequence[tuple[str, Sequence[str], Sequence[str]]]
                         ) -> list[list[tuple[float, int]]]:
        """(prompt, shared steps, next steps) groups -> (score, tokens read) of each next step."""
        ...


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    positions: list[int]  # token index read for each step (the step's last token, or its separator)


def encode(tokenizer: PreTrainedTokenizerBase, prompt: str, steps: Sequence[str],
           separator: str | None = None, delimiter: str = arith.STEP_DELIMITER) -> Encoded:
    """Tokenize prompt + steps as the generator wrote them and find each step's read position.

    Positions come from the tokenizer's character offsets, so they are right for any
    tokenizer, not only the embedded model's one-token-per-character one.
    """
    text, ends = prompt, []
    for i, step in enumerate(steps):
        text += step + (separator or "")
        ends.append(len(text) - 1)
        if i < len(steps) - 1:
            text += delimiter
    enc = tokenizer(text, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    positions: list[int] = []
    cursor = 0
    for end in ends:  # the token whose span covers the step's last character
        while cursor < len(offsets) and not (offsets[cursor][0] <= end < offsets[cursor][1]):
            cursor += 1
        if cursor == len(offsets):
            raise ValueError(f"step ending at character {end} has no token (tokenizer dropped it?)")
        positions.append(cursor)
    return Encoded(list(enc["input_ids"]), positions)


def collate(batch: Sequence[Encoded], pad_id: int, labels: Sequence[Sequence[float]] | None = None,
            max_len: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded ids and a (B, T) map of which positions carry a step (and its label).

    Sequences longer than `max_len` are cut; their steps past the cut read the last kept
    token (the model cannot see further), which `truncated` counts.
    """
    longest = max(len(e.input_ids) for e in batch)
    width = min(longest, max_len) if max_len else longest
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for b, e in enumerate(batch):
        n = min(len(e.input_ids), width)
        ids[b, :n] = torch.tensor(e.input_ids[:n])
        mask[b, :n] = 1
    out = {"input_ids": ids, "attention_mask": mask,
           "rows": torch.tensor([b for b, e in enumerate(batch) for _ in e.positions], dtype=torch.long),
           "cols": torch.tensor([min(p, width - 1) for e in batch for p in e.positions], dtype=torch.long)}
    if labels is not None:
        out["labels"] = torch.tensor([x for row in labels for x in row], dtype=torch.float32)
    return out


def step_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(..., num_labels) logits to P(good): sigmoid for one label, softmax class 1 for two."""
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits[..., 0])
    return torch.softmax(logits, dim=-1)[..., 1]


def step_loss(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on soft labels at the step positions only (the PRM's training objective)."""
    picked = logits[rows, cols, 0]
    return torch.nn.functional.binary_cross_entropy_with_logits(picked, labels)


def parameter_count(model_dir: Path) -> int:
    """A PRM's parameter count (for FLOPs accounting) from its config alone, without reading its weights."""
    with torch.device("meta"):
        model = AutoModelForTokenClassification.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


class PRM:
    """A token-classification PRM loaded from a folder; scores step prefixes in batches."""

    def __init__(self, model_dir: Path, batch_size: int = 64, step_separator: str | None = None,
                 threads: int = 2, device: str | None = None, prefix_cache_mb: int = 512) -> None:
        self.model_dir = model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"PRM not found: {model_dir}")
        card = json.loads((model_dir / PRM_CARD).read_text()) if (model_dir / PRM_CARD).exists() else {}
        self.separator = step_separator if step_separator is not None else card.get("step_separator")
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.separator and self.separator not in self.tokenizer.get_vocab():
            raise ValueError(f"step separator {self.separator!r} is not a token of {model_dir}")
        self.model = AutoModelForTokenClassification.from_pretrained(model_dir, use_safetensors=True).to(self.device).eval()
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 0)) or None
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # search's group prefixes as KV, kept from one score_extensions call (round) to the next
        self._prefixes: OrderedDict[tuple[str, tuple[str, ...]], list[tuple[torch.Tensor, torch.Tensor]]] = \
            OrderedDict()
        self._cached_tokens = 0
        cfg = self.model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        token_bytes = 2 * cfg.num_hidden_layers * kv_heads * head_dim * next(self.model.parameters()).element_size()
        self.prefix_cache_tokens = prefix_cache_mb * 2**20 // token_bytes

    @classmethod
    def for_scoring(cls, model_dir: Path, cfg: ScoreConfig) -> "PRM":
        """The PRM as the scoring section configures it."""
        return cls(model_dir, cfg.batch_size, cfg.step_separator, cfg.threads, prefix_cache_mb=cfg.prefix_cache_mb)

    def encode(self, prompt: str, steps: Sequence[str]) -> Encoded:
        return encode(self.tokenizer, prompt, steps, self.separator)

    @torch.inference_mode()
    def score_with_tokens(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]
                          ) -> tuple[list[list[float]], list[list[int]]]:
        """Scores per step prefix and, for each, how many tokens that score has read."""
        encoded = [self.encode(p, s) for p, s in zip(prompts, step_lists)]
        scores: list[list[float]] = [[] for _ in encoded]
        # Sort by length so a batch pads little; results go back in input order.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        for start in range(0, len(order), self.batch_size):
            idx = [i for i in order[start : start + self.batch_size] if encoded[i].positions]
            if not idx:
                continue
            batch = collate([encoded[i] for i in idx], self.pad_id, max_len=self.max_len)
            logits = self.model(input_ids=batch["input_ids"].to(self.device),
                                attention_mask=batch["attention_mask"].to(self.device)).logits.float()
            probs = step_probabilities(logits[batch["rows"].to(self.device), batch["cols"].to(self.device)])
            if torch.isnan(probs).any():
                raise ValueError(f"the PRM at {self.model_dir} scored {int(torch.isnan(probs).sum())} of {len(probs)} "
                                 "steps as NaN: its weights are broken (retrain it or pick another scoring.prm); "
                                 "nothing of this batch was stored")
            flat = probs.cpu().tolist()
            k = 0
            for i in idx:
                n = len(encoded[i].positions)
                scores[i] = flat[k : k + n]
                k += n
        tokens = [[p + 1 for p in e.positions] for e in encoded]
        return scores, tokens

    def score(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        return self.score_with_tokens(prompts, step_lists)[0]

    @torch.inference_mode()
    def score_extensions(self, groups: Sequence[tuple[str, Sequence[str], Sequence[str]]]
                         ) -> list[list[tuple[float, int]]]:
        """Score one new step on each of several paths that share a prefix, reading the prefix once.

        A group is (prompt, shared steps, candidate next steps). Search expands each kept
        beam by M children; scoring each child's whole path would read the shared prefix M
        times, and a search of R rounds would read every prefix again each round. Here
        each group's prefix becomes a KV cache, repeated per child, and only the
        children's new tokens run on top. The prefix itself comes from an earlier call's
        cache when its parent group is there (search calls once per round, so the parent
        is last round's group), and then only the chosen step and the delimiter run;
        `prefix_cache_mb` bounds what is kept between calls. Returns (score of the
        new step, tokens that score has read) per child.
        """
        out: list[list[tuple[float, int]]] = [[] for _ in groups]
        # Each parent prefix serves one round (its kept children are the next round's parents),
        # so it leaves the cache as soon as this call has taken it.
        parents = {}
        for prompt, shared, _ in groups:
            key = (prompt, tuple(shared[:-1]))
            if shared and key in self._prefixes:
                parents[key] = self._prefixes.pop(key)
        for start in range(0, len(groups), self.batch_size):
            batch = list(range(start, min(start + self.batch_size, len(groups))))
            cache, mask = self._prefix_cache(groups, batch, parents)
            owners, tails = [], []
            for row, g in enumerate(batch):
                for child in groups[g][2]:
                    owners.append(row)
                    tails.append(self.tokenizer(child + (self.separator or ""), add_special_tokens=False)["input_ids"]
                                 or [self.pad_id])
            if not owners:
                continue
            cache.batch_select_indices(torch.tensor(owners, device=self.device))
            tail_width = max(len(t) for t in tails)
            tail_ids = torch.full((len(tails), tail_width), self.pad_id, dtype=torch.long)
            tail_mask = torch.zeros((len(tails), tail_width), dtype=torch.long)
            for row, t in enumerate(tails):
                tail_ids[row, : len(t)] = torch.tensor(t)
                tail_mask[row, : len(t)] = 1
            prefix_len = mask.sum(-1)[owners]
            positions = prefix_len[:, None] + torch.arange(tail_width)[None, :]
            hidden = self.model.base_model(input_ids=tail_ids.to(self.device),
                                           attention_mask=torch.cat([mask[owners], tail_mask], dim=1).to(self.device),
                                           position_ids=positions.to(self.device), past_key_values=cache,
                                           use_cache=True).last_hidden_state
            last = torch.tensor([len(t) - 1 for t in tails], device=self.device)
            logits = self.model.score(hidden[torch.arange(len(tails), device=self.device), last]).float()
            probs = step_probabilities(logits).cpu().tolist()
            k = 0
            for row, g in enumerate(batch):
                for _ in groups[g][2]:
                    out[g].append((probs[k], int(prefix_len[k]) + len(tails[k])))
                    k += 1
        return out

    def _prefix_cache(self, groups: Sequence[tuple[str, Sequence[str], Sequence[str]]], batch: list[int],
                      parents: dict[tuple[str, tuple[str, ...]], list[tuple[torch.Tensor, torch.Tensor]]]
                      ) -> tuple[DynamicCache, torch.Tensor]:
        """One KV cache row per group holding its whole prefix, and the (B, T) mask of its valid columns.

        A group whose parent prefix is in `parents` starts from that KV and runs only its
        last shared step plus the delimiter; any other runs its whole prefix text. Each
        row is [pad][cached KV][pad][new tokens], so rows may have holes; the mask and
        explicit positions make that exact. The finished rows join the cache for later
        calls; the oldest entries leave when it would pass `prefix_cache_tokens`.
        """
        bases: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = []
        pending: list[list[int]] = []
        sep = self.separator or ""  # read after every step, as `encode` writes whole paths
        for g in batch:
            prompt, shared, _ = groups[g]
            parent = parents.get((prompt, tuple(shared[:-1]))) if shared else None
            bases.append(parent)
            if parent is None:
                text = prompt + "".join(st + sep + arith.STEP_DELIMITER for st in shared)
                pending.append(self.tokenizer(text)["input_ids"])
            else:
                pending.append(self.tokenizer(shared[-1] + sep + arith.STEP_DELIMITER,
                                              add_special_tokens=False)["input_ids"])
        base_len = torch.tensor([b[0][0].shape[-2] if b else 0 for b in bases])
        cache = DynamicCache(config=self.model.config)
        base_width = int(base_len.max())
        base_mask = torch.zeros((len(batch), base_width), dtype=torch.long)
        if base_width:
            for row, n in enumerate(base_len.tolist()):
                base_mask[row, base_width - n :] = 1
            first = next(b for b in bases if b)  # shapes per layer: (kv heads, tokens, head dim)
            for layer in range(len(first)):
                template = first[layer][0]
                keys = template.new_zeros((len(batch), template.shape[0], base_width, template.shape[-1]))
                values = torch.zeros_like(keys)
                for row, b in enumerate(bases):
                    if b:
                        keys[row, :, base_width - b[layer][0].shape[-2] :] = b[layer][0]
                        values[row, :, base_width - b[layer][1].shape[-2] :] = b[layer][1]
                cache.update(keys, values, layer)
        width = max(len(x) for x in pending)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, x in enumerate(pending):  # left padding: every prefix ends at the same column
            ids[row, width - len(x) :] = torch.tensor(x)
            new_mask[row, width - len(x) :] = 1
        mask = torch.cat([base_mask, new_mask], dim=1)
        positions = (base_len[:, None] + new_mask.cumsum(-1) - 1).clamp(min=0)
        self.model.base_model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                              position_ids=positions.to(self.device), past_key_values=cache, use_cache=True)
        for row, g in enumerate(batch):
            n = int(mask[row].sum())
            if n > self.prefix_cache_tokens:
                continue
            while self._prefixes and self._cached_tokens + n > self.prefix_cache_tokens:  # oldest first
                self._cached_tokens -= self._prefixes.popitem(last=False)[1][0][0].shape[-2]
            valid = mask[row].nonzero().squeeze(-1).to(self.device)
            prompt, shared, _ = groups[g]
            key = (prompt, tuple(shared))
            if key in self._prefixes:  # the same path twice (identical beams): keep one copy
                self._cached_tokens -= self._prefixes.pop(key)[0][0].shape[-2]
            self._prefixes[key] = [(layer.keys[row][:, valid].clone(), layer.values[row][:, valid].clone())
                                   for layer in cache.layers]
            self._cached_tokens += n
        return cache, mask


# --- training --------------------------------------------------------------------------


@dataclass
class LabeledSolution:
    problem_id: str
    prompt: str
    steps: list[str]
    labels: list[float]  # one soft label per step


@dataclass
class PRMTrainResult:
    epochs: int
    best_epoch: int
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    n_params: int = 0
    trainable_params: int = 0
    tokens: int = 0
    val_predictions: list[float] = field(default_factory=list)
    val_labels: list[float] = field(default_factory=list)


def save_trained(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path, merge_lora: bool) -> None:
    """Save a fine-tuned model as an ordinary safetensors folder; LoRA adapters are merged in first,
    so every loader (and vLLM) reads it like any other model."""
    if merge_lora:
        model = model.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def split_by_problem(solutions: Sequence[LabeledSolution], val_fraction: float, seed: int
                     ) -> tuple[list[LabeledSolution], list[LabeledSolution]]:
    """Hold out whole problems, so validation measures generalisation to new problems."""
    problems = sorted({s.problem_id for s in solutions})
    random.Random(seed).shuffle(problems)
    n_val = max(1, round(len(problems) * val_fraction)) if len(problems) > 1 else 0
    val = set(problems[:n_val])
    return [s for s in solutions if s.problem_id not in val], [s for s in solutions if s.problem_id in val]


def _prepare(model: torch.nn.Module, cfg: PRMConfig) -> torch.nn.Module:
    if cfg.mode == "head":
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith("score.")
        return model
    if cfg.mode == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        lora = LoraConfig(task_type=TaskType.TOKEN_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        return get_peft_model(model, lora)
    return model


def train_prm(
    cfg: PRMConfig,
    base_dir: Path,
    solutions: Sequence[LabeledSolution],
    out_dir: Path,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> PRMTrainResult:
    """Fine-tune base_dir into a PRM on soft step labels; keep the epoch with the best validation loss."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    config = AutoConfig.from_pretrained(base_dir, num_labels=1)
    config.classifier_dropout = 0.0  # the soft labels are noisy enough
    model = AutoModelForTokenClassification.from_pretrained(base_dir, config=config, use_safetensors=True)
    train_set, val_set = split_by_problem(solutions, cfg.val_fraction, cfg.seed)
    if not train_set:
        raise ValueError("no labeled solutions to train the PRM on (run label-steps first)")
    # Start the head at the base rate, so early updates shape the backbone, not the bias.
    mean_label = sum(sum(s.labels) for s in train_set) / max(1, sum(len(s.labels) for s in train_set))
    p = min(max(mean_label, 1e-3), 1 - 1e-3)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.02)
        model.score.bias.fill_(math.log(p / (1 - p)))
    model = _prepare(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    max_len = int(getattr(model.config, "max_position_embeddings", 0)) or None

    def batches(data: Sequence[LabeledSolution], shuffle: bool, rng: random.Random):
        order = list(range(len(data)))
        if shuffle:
            rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_size):
            chunk = [data[j] for j in order[i : i + cfg.batch_size]]
            enc = [encode(tokenizer, s.prompt, s.steps) for s in chunk]
            yield collate(enc, pad, [s.labels for s in chunk], max_len=max_len)

    def evaluate(data: Sequence[LabeledSolution]) -> tuple[float, list[float], list[float]]:
        model.eval()
        total, count, preds, gold = 0.0, 0, [], []
        with torch.inference_mode():
            for b in batches(data, False, random.Random(0)):
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                total += float(step_loss(logits, b["rows"], b["cols"], b["labels"])) * len(b["labels"])
                count += len(b["labels"])
                preds += torch.sigmoid(logits[b["rows"], b["cols"], 0]).tolist()
                gold += b["labels"].tolist()
        model.train()
        return total / max(1, count), preds, gold

    result = PRMTrainResult(epochs=0, best_epoch=0, n_params=sum(p.numel() for p in model.parameters()),
                            trainable_params=sum(p.numel() for p in params))
    rng = random.Random(cfg.seed)
    best_loss, best_state, stale = float("inf"), None, 0
    model.train()
    n_batches = math.ceil(len(train_set) / cfg.batch_size)
    for epoch in range(1, cfg.epochs + 1):
        running, seen = 0.0, 0
        for b in tqdm(batches(train_set, True, rng), total=n_batches, desc=f"prm epoch {epoch}", leave=False,
                      disable=None, mininterval=1.0):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            loss = step_loss(logits, b["rows"], b["cols"], b["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            running += loss.item() * len(b["labels"])
            seen += len(b["labels"])
            result.tokens += int(b["attention_mask"].sum())
        train_loss = running / max(1, seen)
        val_loss = evaluate(val_set)[0] if val_set else train_loss
        result.train_loss.append(train_loss)
        result.val_loss.append(val_loss)
        result.epochs = epoch
        if on_epoch is not None:
            on_epoch(epoch, train_loss, val_loss)
        if val_loss < best_loss - 1e-5:
            best_loss, best_state, stale, result.best_epoch = val_loss, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    if val_set:
        _, result.val_predictions, result.val_labels = evaluate(val_set)
    save_trained(model, tokenizer, out_dir, merge_lora=cfg.mode == "lora")
    (out_dir / PRM_CARD).write_text(json.dumps({"step_separator": None, "mode": cfg.mode, "num_labels": 1}))
    return result
