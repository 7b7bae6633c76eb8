"""The surprise PRM (`prm.mode: surprise`): a trained head over the generator's own surprise.

Why this exists: a PRM fine-tuned from the 1M generator as a token classifier stays at
chance within a problem on the embedded task, and not for want of labels. Trained on
*exact* step labels (a /tmp diagnostic on tiny's 800 labelled solutions, 12-04) it was at
0.51-0.54, as on Monte-Carlo labels, and on 10,924 sibling steps with rollout labels and a
pairwise loss between siblings at 0.48-0.56. Checking a step needs the model's prediction
of each token *and then* a comparison with the token written, one step of depth more than
generating it; a 5-layer generator spends all its layers on the prediction. The comparison
is what token log-probabilities are, so this PRM gets it as an input instead of having to
grow it: each step's surprise (minus its tokens' mean log-probability under the frozen
generator) is summed over the steps so far, and a step's score is

    sigmoid(b + w . h_end - a * surprise_so_far - c * worst_step_so_far),   a, c > 0

with h_end the generator's last hidden state at the step's last token. Trained on the
Monte-Carlo labels, `w . h_end` learns how hard the problem is (what the classifier PRM
learned and nothing else), `a` and `c` how much unsure tokens cost, so the scores are
calibrated values of the prefix, where the untrained `confidence` scorer's are not. The
ranking within a problem still comes from the generator's surprise: where its errors are
confident, this PRM is as blind as `confidence` is (README, "The verifier").

The saved folder is the generator's causal LM (its tokenizer, config, weights) plus
`surprise_head.safetensors` and a `prm.json` card saying `mode: surprise`; scoring is
`models/confidence.py`'s forward pass with this head folding the steps.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from ttscale.configs.schema import PRMConfig
from ttscale.models.prm import PRM_CARD

HEAD_FILE = "surprise_head.safetensors"
SURPRISE = "surprise"


class SurpriseHead(torch.nn.Module):
    """b + w . h_end - a * surprise_so_far - c * worst_step_so_far, with a, c = softplus(.) kept positive."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.value = torch.nn.Linear(hidden_size, 1)
        self.alpha = torch.nn.Parameter(torch.tensor([math.log(math.e - 1)] * 2))  # a = c = 1 at the start
        torch.nn.init.zeros_(self.value.weight)

    def logits(self, end_hidden: torch.Tensor, surprise_so_far: torch.Tensor, worst_so_far: torch.Tensor
               ) -> torch.Tensor:
        """(..., H) hidden states, (...) summed and (...) largest step surprise so far -> (...) logits."""
        a, c = torch.nn.functional.softplus(self.alpha)
        return self.value(end_hidden.float())[..., 0] - a * surprise_so_far - c * worst_so_far

    @classmethod
    def load(cls, model_dir: Path) -> "SurpriseHead":
        state = load_file(str(Path(model_dir) / HEAD_FILE))
        head = cls(state["value.weight"].shape[1])
        head.load_state_dict(state)
        return head.eval()


def is_surprise_prm(model_dir: Path) -> bool:
    """Whether a PRM folder is this kind (its card says so), so the scorer opens it the right way."""
    card = Path(model_dir) / PRM_CARD
    return card.exists() and json.loads(card.read_text()).get("mode") == SURPRISE


def step_features(model: torch.nn.Module, tokenizer, prompt: str, steps: Sequence[str],
                  delimiter: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, H) hidden states at each step's last token and (S) each step's surprise, as the scorer reads them."""
    from ttscale.models.confidence import step_members, token_logprobs

    ids, members = step_members(tokenizer, prompt, steps, delimiter)
    x = torch.tensor([ids])
    with torch.no_grad():
        hidden = model.base_model(input_ids=x).last_hidden_state[0]
        cols = torch.tensor([k for m in members for k in m], dtype=torch.long)
        lp = token_logprobs(model.get_output_embeddings()(hidden[cols - 1]).float(), x[0, cols])
    out_h, out_s, k = [], [], 0
    for m in members:
        out_s.append(-float(lp[k : k + len(m)].mean()) if m else 0.0)
        out_h.append(hidden[m[-1]] if m else hidden[-1])
        k += len(m)
    return torch.stack(out_h), torch.tensor(out_s)


def train_surprise(cfg: PRMConfig, base_dir: Path, solutions: Sequence, out_dir: Path,
                   on_epoch: Callable[[int, float, float], None] | None = None):
    """Fit the head on soft step labels over the frozen generator; keep the epoch with the best held-out loss."""
    from ttscale.models.prm_train import BestEpoch, PRMTrainResult, split_by_problem
    from ttscale.tasks.arith import STEP_DELIMITER

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True).eval()
    train_set, val_set = split_by_problem(solutions, cfg.val_fraction, cfg.seed)
    if not train_set:
        raise ValueError("no labeled solutions to train the PRM on (run label-steps first)")
    # The generator is frozen, so its features are computed once, not once per epoch.
    featurize = lambda data: [(*step_features(model, tokenizer, s.prompt, s.steps, STEP_DELIMITER),  # noqa: E731
                               torch.tensor(s.labels, dtype=torch.float32)) for s in
                              tqdm(data, desc="surprise features", leave=False, disable=None, mininterval=1.0)]
    train_items, val_items = featurize(train_set), featurize(val_set)
    head = SurpriseHead(model.config.hidden_size)
    mean_label = float(torch.cat([y for _, _, y in train_items]).mean().clamp(1e-3, 1 - 1e-3))
    with torch.no_grad():  # start at the base rate plus the average surprise, so updates learn differences
        mean_surprise = float(torch.cat([s.cumsum(0) + s.cummax(0).values for _, s, _ in train_items]).mean())
        head.value.bias.fill_(math.log(mean_label / (1 - mean_label)) + mean_surprise)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.learning_rate)

    def loss_of(items: Sequence) -> tuple[torch.Tensor, int]:
        z = torch.cat([head.logits(h, s.cumsum(0), s.cummax(0).values) for h, s, _ in items])
        y = torch.cat([y for _, _, y in items])
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="sum"), len(y)

    result = PRMTrainResult(epochs=0, best_epoch=0, n_params=sum(p.numel() for p in model.parameters()),
                            trainable_params=sum(p.numel() for p in head.parameters()),
                            tokens=0)
    rng = random.Random(cfg.seed)
    best = BestEpoch(cfg.patience)
    for epoch in range(1, cfg.epochs + 1):
        order = list(range(len(train_items)))
        rng.shuffle(order)
        total, count = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            loss, n = loss_of([train_items[j] for j in order[i : i + cfg.batch_size]])
            opt.zero_grad(set_to_none=True)
            (loss / n).backward()
            opt.step()
            total, count = total + loss.item(), count + n
        with torch.no_grad():
            val_loss = (lambda ln: float(ln[0]) / max(1, ln[1]))(loss_of(val_items)) if val_items else total / count
        result.train_loss.append(total / count)
        result.val_loss.append(val_loss)
        result.epochs = epoch
        if on_epoch is not None:
            on_epoch(epoch, total / count, val_loss)
        if best.stop_after(epoch, val_loss, head, result):
            break
    best.restore(head)
    # The forward passes that made the features are the training compute (the head's own is negligible);
    # the record charges them at 6 P per token like a fine-tune's, which overstates a frozen pass 3x.
    result.tokens = sum(len(tokenizer(s.prompt + STEP_DELIMITER.join(s.steps))["input_ids"]) for s in train_set)
    with torch.no_grad():
        for h, s, y in val_items:
            result.val_predictions += torch.sigmoid(head.logits(h, s.cumsum(0), s.cummax(0).values)).tolist()
            result.val_labels += y.tolist()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out_dir / HEAD_FILE))
    (out_dir / PRM_CARD).write_text(json.dumps({"step_separator": None, "mode": SURPRISE, "num_labels": 1}))
    return result
