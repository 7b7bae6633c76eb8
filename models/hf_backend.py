"""transformers backend: batched `generate`, float32 on CPU, any dtype on GPU.

Stop strings are checked between decoding segments and cut afterwards: passing
`stop_strings` to `generate` was 13x slower here. A static KV cache was 2.8x faster
than the default dynamic one on CPU for the embedded model.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from ttscale.configs.schema import GeneratorConfig
from ttscale.models.generator import Completion, SamplingSpec, cut_at_stop, rendered

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
# transformers builds a model on the meta device and then fills it; two threads doing that at once (fan-out's
# shard workers on threads) raced under load: "Cannot copy out of meta tensor" (12-04). One load at a time.
_LOADING = threading.Lock()


class HFGenerator:
    def __init__(self, cfg: GeneratorConfig, model_dir: Path) -> None:
        torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = _DTYPES[cfg.dtype] if self.device == "cuda" else torch.float32
        with _LOADING:
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype,
                                                              use_safetensors=True).to(self.device).eval()
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.segment_tokens = cfg.segment_tokens

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], spec: SamplingSpec,
                 prefixes: Sequence[str] | None = None) -> list[list[Completion]]:
        texts = rendered(self.tokenizer, prompts, prefixes, self.cfg.chat_template)
        prompt_ids = [self.tokenizer.encode(t) for t in texts]
        # One row per (prompt, sample), a problem's samples side by side.
        jobs = [(i, j) for i in range(len(texts)) for j in range(spec.n)]
        out: list[list[Completion | None]] = [[None] * spec.n for _ in texts]
        bar = tqdm(total=len(jobs), desc="generate", unit="seq", leave=False, disable=len(jobs) < 512)
        for start in range(0, len(jobs), self.cfg.batch_size):
            batch = jobs[start : start + self.cfg.batch_size]
            done = self._generate_batch([prompt_ids[i] for i, _ in batch], spec, seed=spec.seed * 1_000_003 + start)
            for (i, j), completion in zip(batch, done):
                out[i][j] = completion
            bar.update(len(batch))
        bar.close()
        return [[c for c in row if c is not None] for row in out]

    def _generate_batch(self, prompts: list[list[int]], spec: SamplingSpec, seed: int) -> list[Completion]:
        """Decode in segments and drop finished rows between them.

        `generate` keeps every row of a batch until the longest one ends; with sampled
        lengths that spread widely, most of the work was padding. Between segments the
        finished rows (end of sequence, or a stop string seen) leave the batch and the rest
        are re-prefilled from their token ids, which for these model sizes costs far less
        than the padded decoding it saves (measured: see bench/sampling.py).
        """
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        generated: list[list[int]] = [[] for _ in prompts]
        finished = [False] * len(prompts)
        active = list(range(len(prompts)))
        sampled = spec.temperature > 0
        step = 0
        while active and step < spec.max_tokens:
            seg = min(self.segment_tokens, spec.max_tokens - step)
            rows = [prompts[r] + generated[r] for r in active]
            width = max(len(x) for x in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for k, x in enumerate(rows):
                ids[k, width - len(x) :] = torch.tensor(x)
                mask[k, width - len(x) :] = 1
            torch.manual_seed(seed + step)
            gen = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                do_sample=sampled,
                temperature=spec.temperature if sampled else None,
                top_p=spec.top_p if sampled else None,
                top_k=0 if sampled else None,
                max_new_tokens=seg,
                pad_token_id=pad,
                eos_token_id=eos,
                cache_implementation="static",
            )[:, width:].tolist()
            still = []
            for r, new in zip(active, gen):
                if eos in new:
                    generated[r] += new[: new.index(eos) + 1]
                    finished[r] = True
                    continue
                generated[r] += new
                if spec.stop and cut_at_stop(self.tokenizer.decode(generated[r]), spec.stop)[1]:
                    finished[r] = True
                    continue
                still.append(r)
            active = still
            step += seg
        return [self._completion(p, g, spec) for p, g in zip(prompts, generated)]

    def _completion(self, prompt: list[int], ids: list[int], spec: SamplingSpec) -> Completion:
        eos = self.tokenizer.eos_token_id
        ended = bool(ids) and ids[-1] == eos
        text = self.tokenizer.decode(ids[:-1] if ended else ids, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, spec.stop)
        n_gen = len(ids)
        if stopped:  # the tokens up to the stop string are what a stopping generator would have produced
            n_gen = min(n_gen, len(self.tokenizer.encode(text, add_special_tokens=False)))
        return Completion(text, len(prompt), n_gen, "stop" if ended or stopped else "length")

    def close(self) -> None:
        del self.model
