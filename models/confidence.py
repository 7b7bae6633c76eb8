"""The generator's own confidence as a step scorer (`scoring.prm: confidence`), DeepConf-style.

Why it is worth a scorer of its own: on the embedded task a slip that sampling at
T = 1 makes is a low-probability token, so the model that wrote a step already knows,
token by token, how sure it was; no labels and no training. Each step gets the
geometric mean of its tokens' probabilities under the generator (exp of the mean token
log-probability, teacher-forced on exactly the text the bank or search holds), and a
prefix scores the lowest of its steps so far: one unsure step sinks a solution, as in
DeepConf's lowest-group confidence. So `last` and `min` aggregation agree.

Where errors are confident (systematic carry errors the generator makes every time) it
knows nothing, which is where a trained verifier has to earn its cost. The probabilities
are recomputed here with one forward pass rather than stored at generation, so the
scores are the same whichever backend sampled, and the compute tables charge that pass
(2 * P * tokens) like any scorer's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, DynamicCache

from ttscale.models.prm import Encoded, collate
from ttscale.tasks import arith


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) under each row of logits, without materializing a full log-softmax."""
    return logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, -1)


def step_members(tokenizer, prompt: str, steps: Sequence[str], delimiter: str = arith.STEP_DELIMITER
                 ) -> tuple[list[int], list[list[int]]]:
    """Token ids of prompt + steps as written, and for each step the token indices that fall inside it."""
    text, spans = prompt, []
    for i, step in enumerate(steps):
        spans.append((len(text), len(text) + len(step)))
        text += step + (delimiter if i < len(steps) - 1 else "")
    enc = tokenizer(text, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    members = [[k for k, (a, b) in enumerate(offsets) if k > 0 and b > a and start <= a < end]
               for start, end in spans]
    return list(enc["input_ids"]), members


class LowestConfidence:
    """The untrained fold: a step's confidence is exp(mean token log-probability), a prefix scores its lowest."""

    start = 1.0

    def step(self, state: float, mean_lp: float, end_hidden: torch.Tensor) -> tuple[float, float]:
        lowest = min(state, math.exp(mean_lp))
        return lowest, lowest


class SurpriseFold:
    """The trained fold (`prm.mode: surprise`, models/surprise_prm.py): surprise summed over the steps so
    far, and the head's calibrated score from it and the step's last hidden state."""

    start = (0.0, 0.0)  # (summed surprise, largest step surprise) so far

    def __init__(self, head: torch.nn.Module) -> None:
        self.head = head

    def step(self, state: tuple[float, float], mean_lp: float, end_hidden: torch.Tensor
             ) -> tuple[tuple[float, float], float]:
        state = (state[0] - mean_lp, max(state[1], -mean_lp))
        logit = self.head.logits(end_hidden.cpu(), torch.tensor(state[0]), torch.tensor(state[1]))
        return state, float(torch.sigmoid(logit))


def causal_parameter_count(model_dir: Path) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


class ConfidenceScorer:
    """Step scores from the generator's token log-probabilities; one batched forward pass per solution.

    How steps fold into prefix scores is `fold`: the lowest step confidence so far (the
    `confidence` scorer, no training), or a trained head over the summed surprise (the
    surprise PRM), the same forward passes either way."""

    def __init__(self, model_dir: Path, batch_size: int = 16, threads: int = 2, chat_template: bool = False,
                 device: str | None = None, fold: LowestConfidence | SurpriseFold | None = None) -> None:
        self.fold = fold or LowestConfidence()
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cpu":
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).to(self.device).eval()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.batch_size = batch_size
        self.chat_template = chat_template
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _prompt(self, prompt: str) -> str:
        if not self.chat_template:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def _encode(self, prompt: str, steps: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        return step_members(self.tokenizer, self._prompt(prompt), steps)

    def _fold_steps(self, hidden: torch.Tensor, ids: torch.Tensor, spans: Sequence[Sequence[Sequence[int]]]
                    ) -> list[tuple[list[float], object]]:
        """Per row, for each step (its token columns in `spans[row]`), the fold's prefix score, and the fold's
        state after the last step. Only the positions that predict a step token go through the LM head (a real
        vocabulary is large). A step without tokens keeps the score before it."""
        rows = torch.tensor([row for row, steps in enumerate(spans) for m in steps for _ in m], dtype=torch.long)
        cols = torch.tensor([k for steps in spans for m in steps for k in m], dtype=torch.long)
        token_lp: list[float] = []
        if len(cols):
            logits = self.model.get_output_embeddings()(hidden[rows.to(self.device), (cols - 1).to(self.device)])
            token_lp = token_logprobs(logits.float(), ids[rows, cols].to(self.device)).cpu().tolist()
        out, k = [], 0
        for r, steps in enumerate(spans):
            state, score, row = self.fold.start, 1.0, []
            for m in steps:
                if m:
                    state, score = self.fold.step(state, sum(token_lp[k : k + len(m)]) / len(m), hidden[r, m[-1]])
                k += len(m)
                row.append(score)
            out.append((row, state))
        return out

    @torch.inference_mode()
    def score_with_tokens(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]
                          ) -> tuple[list[list[float]], list[list[int]]]:
        encoded = [self._encode(p, s) for p, s in zip(prompts, step_lists)]
        scores: list[list[float]] = [[] for _ in encoded]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        for start in range(0, len(order), self.batch_size):
            idx = [i for i in order[start : start + self.batch_size] if encoded[i][1]]
            if not idx:
                continue
            batch = collate([Encoded(encoded[i][0], []) for i in idx], self.pad_id)
            hidden = self.model.base_model(input_ids=batch["input_ids"].to(self.device),
                                           attention_mask=batch["attention_mask"].to(self.device)).last_hidden_state
            for i, (row, _) in zip(idx, self._fold_steps(hidden, batch["input_ids"], [encoded[i][1] for i in idx])):
                scores[i] = row
        tokens = [[(m[-1] + 1) if m else 0 for m in e[1]] for e in encoded]
        return scores, tokens

    def score(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        return self.score_with_tokens(prompts, step_lists)[0]

    @torch.inference_mode()
    def score_extensions(self, groups: Sequence[tuple[str, Sequence[str], Sequence[str]]]
                         ) -> list[list[tuple[float, int]]]:
        """Each next step scored on its path, the shared prefix run once per group.

        Search expands each kept beam by M children; running each child's whole path would
        read the prefix M times. Here a batch of prefixes (left-padded, explicit positions)
        runs once, giving the shared steps' lowest confidence and a KV cache; the cache is
        repeated per child and only the children's tokens run on top. A child is tokenized
        on its own, exactly as the text continues for the embedded task's one-character
        tokens (a BPE tokenizer may merge across the boundary differently from `score`)."""
        out: list[list[tuple[float, int]]] = [[] for _ in groups]
        for start in range(0, len(groups), self.batch_size):
            batch = [g for g in range(start, min(start + self.batch_size, len(groups))) if groups[g][2]]
            if not batch:
                continue
            encoded = [self._encode(groups[g][0], [*groups[g][1], ""]) for g in batch]  # prefix + delimiter
            width = max(len(ids) for ids, _ in encoded)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (x, _) in enumerate(encoded):  # left padding: every prefix ends at the last column
                ids[row, width - len(x) :] = torch.tensor(x)
                mask[row, width - len(x) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = DynamicCache(config=self.model.config)
            hidden = self.model.base_model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                           position_ids=positions.to(self.device), past_key_values=cache,
                                           use_cache=True).last_hidden_state
            # the fold's state after the shared steps (the last member is the empty placeholder)
            spans = [[[k + width - len(x) for k in m] for m in members[:-1]] for x, members in encoded]
            states = [state for _, state in self._fold_steps(hidden, ids, spans)]
            owners, tails = [], []
            for row, g in enumerate(batch):
                for step in groups[g][2]:
                    owners.append(row)
                    tails.append(self.tokenizer(step, add_special_tokens=False)["input_ids"] or [self.pad_id])
            padded = collate([Encoded(t, []) for t in tails], self.pad_id)
            tail_ids, tail_mask = padded["input_ids"], padded["attention_mask"]
            tail_width = tail_ids.shape[1]
            index = torch.tensor(owners)
            cache.batch_select_indices(index.to(self.device))
            prefix_len = mask.sum(-1)[index]
            tail_hidden = self.model.base_model(
                input_ids=tail_ids.to(self.device),
                attention_mask=torch.cat([mask[index], tail_mask], dim=1).to(self.device),
                position_ids=(prefix_len[:, None] + torch.arange(tail_width)[None, :]).to(self.device),
                past_key_values=cache, use_cache=True).last_hidden_state
            # token j of a tail is predicted by the prefix's last position (j = 0) or by tail token j - 1
            before = torch.cat([hidden[index.to(self.device), -1:], tail_hidden[:, :-1]], dim=1)
            lp = token_logprobs(self.model.get_output_embeddings()(before).float(), tail_ids.to(self.device))
            lp = (lp * tail_mask.to(self.device)).sum(-1) / tail_mask.sum(-1).to(self.device)
            for k, (row, t) in enumerate(zip(owners, tails)):
                _, score = self.fold.step(states[row], float(lp[k]), tail_hidden[k, len(t) - 1])
                out[batch[row]].append((score, int(prefix_len[k]) + len(t)))
        return out
