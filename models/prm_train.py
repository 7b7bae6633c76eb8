"""Training the PRM (and the ORM, which is a PRM with one step per attempt).

Binary cross-entropy on the Monte-Carlo soft labels at each step's last token (the
positions `models/prm.py` scores at), in three modes: `head` (frozen base, only the scalar
head learns), `lora` (peft adapters, merged into the weights on save) and `full`. A fourth,
`surprise`, trains no token classifier at all (models/surprise_prm.py says why).
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer, PreTrainedTokenizerBase

from ttscale.configs.schema import PRMConfig
from ttscale.models.prm import PRM_CARD, Encoded, collate, encode


def step_loss(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on soft labels at the step positions only (the PRM's training objective)."""
    picked = logits[rows, cols, 0]
    return torch.nn.functional.binary_cross_entropy_with_logits(picked, labels)



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


@dataclass
class BestEpoch:
    """Early stopping on held-out loss: keeps the best epoch's weights, says when patience has run out."""

    patience: int
    best: float = float("inf")
    state: dict | None = None
    stale: int = 0

    def stop_after(self, epoch: int, val_loss: float, module: torch.nn.Module, result: "PRMTrainResult") -> bool:
        if val_loss < self.best - 1e-5:
            self.best, self.state, self.stale, result.best_epoch = val_loss, copy.deepcopy(module.state_dict()), 0, epoch
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self, module: torch.nn.Module) -> None:
        if self.state is not None:
            module.load_state_dict(self.state)


def save_trained(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path, merge_lora: bool) -> None:
    """Save a fine-tuned model as an ordinary safetensors folder; LoRA adapters are merged in first,
    so every loader (and vLLM) reads it like any other model."""
    if merge_lora:
        model = model.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of example indices with similar lengths (sorted within windows of 50 batches)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for i in range(0, len(order), window):
        chunk = sorted(order[i : i + window], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


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
    if cfg.mode == "surprise":  # no fine-tune: a head over the frozen generator's surprise
        from ttscale.models.surprise_prm import train_surprise

        return train_surprise(cfg, base_dir, solutions, out_dir, on_epoch)
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

    # Each solution is tokenized once, not once per epoch.
    train_items = [(s, encode(tokenizer, s.prompt, s.steps)) for s in train_set]
    val_items = [(s, encode(tokenizer, s.prompt, s.steps)) for s in val_set]

    def batches(data: Sequence[tuple[LabeledSolution, Encoded]], shuffle: bool, rng: random.Random):
        # Solutions of similar length share a batch: on the embedded task random batches of 16
        # were 40% padding (2 to 14 steps), so grouping cut an epoch's compute by about a third.
        lengths = [len(enc.input_ids) for _, enc in data]
        if shuffle:
            groups = length_batches(lengths, cfg.batch_size, rng)
        else:
            order = sorted(range(len(data)), key=lengths.__getitem__)
            groups = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        for group in groups:
            chunk = [data[j] for j in group]
            yield collate([enc for _, enc in chunk], pad, [s.labels for s, _ in chunk], max_len=max_len)

    def evaluate(data: Sequence[tuple[LabeledSolution, Encoded]]) -> tuple[float, list[float], list[float]]:
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
    best = BestEpoch(cfg.patience)
    model.train()
    n_batches = math.ceil(len(train_set) / cfg.batch_size)
    for epoch in range(1, cfg.epochs + 1):
        running, seen = 0.0, 0
        for b in tqdm(batches(train_items, True, rng), total=n_batches, desc=f"prm epoch {epoch}", leave=False,
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
        val_loss = evaluate(val_items)[0] if val_items else train_loss
        result.train_loss.append(train_loss)
        result.val_loss.append(val_loss)
        result.epochs = epoch
        if on_epoch is not None:
            on_epoch(epoch, train_loss, val_loss)
        if best.stop_after(epoch, val_loss, model, result):
            break
    best.restore(model)
    if val_set:
        _, result.val_predictions, result.val_labels = evaluate(val_items)
    save_trained(model, tokenizer, out_dir, merge_lora=cfg.mode == "lora")
    (out_dir / PRM_CARD).write_text(json.dumps({"step_separator": None, "mode": cfg.mode, "num_labels": 1}))
    return result
