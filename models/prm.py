"""The process reward model: a causal LM with a scalar head read at each step's last token.

One format serves our PRM and external ones: a transformers token-classification model
(`AutoModelForTokenClassification`). Ours is the base model with `num_labels=1` (a
sigmoid gives the step's value); a Qwen2.5-Math-PRM-style model has `num_labels=2`
(softmax, class 1 = "good") and reads each step at a separator token appended after it
(`step_separator`, e.g. `<extra_0>`). Either way one forward pass scores every step
prefix of a solution, since a causal model's output at a step's last token has seen
exactly that prefix.

This file is inference only (encoding, scoring, the prefix cache); training is
`models/prm_train.py`, the way nanoGPT keeps model.py apart from train.py.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from transformers import (AutoConfig, AutoModelForTokenClassification, AutoTokenizer, DynamicCache,
                          PreTrainedTokenizerBase)

from ttscale.configs.schema import ScoreConfig
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
