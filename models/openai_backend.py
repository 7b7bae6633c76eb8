"""OpenAI-compatible backend: any server that speaks `/v1/completions` (`vllm serve`, SGLang, a
hosted endpoint) behind the same `Generator` interface as the in-process backends.

Why text completions and not chat: the prompt the server sees must be the prompt the other
backends see, so the chat template (when `generator.chat_template` is on) is applied here, from
the local model folder's tokenizer, exactly as the vLLM backend applies it. The local folder
(`generator.model`) is the same model the server serves: the bank's fingerprint, the parameter
count for the FLOPs tables and the tokenizer come from it, so a bank sampled through a server
and one sampled in-process are the same bank.

One request per prompt (with `n` choices), `generator.openai.concurrency` at a time: the server
batches concurrent requests itself (continuous batching), and a per-prompt request keeps each
choice's token count exact. Tokens come from the response: each choice's sampled-token
log-probabilities when the server returns them (`logprobs=0`, one entry per generated token),
else the request's `usage` split evenly over its choices.

Stop strings: the other backends keep the stop string in the text (a step keeps its
delimiter). OpenAI's API strips it; vLLM and SGLang say which one matched (`stop_reason`), and
it is put back; with one stop string it is unambiguous. Failures: connection errors, timeouts,
429 and 5xx are retried with exponential backoff (`max_retries`); any other status is an error
with the server's message. The key is read from the environment variable the config names
(`api_key_env`), never from the config itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from ttscale.configs.schema import GeneratorConfig
from ttscale.models.generator import Completion, SamplingSpec, rendered

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIGenerator:
    def __init__(self, cfg: GeneratorConfig, model_dir: Path) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        import torch

        if cfg.openai is None:
            raise ValueError("generator.backend=openai needs generator.openai.base_url")
        self.cfg = cfg
        self.server = cfg.openai
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
        self.n_params: int = sum(p.numel() for p in model.parameters())
        headers = {}
        key = os.environ.get(self.server.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=self.server.base_url.rstrip("/"), headers=headers,
                                    timeout=httpx.Timeout(self.server.timeout_s, connect=min(30.0, self.server.timeout_s)))
        self.model_name = self.server.model or self._only_served_model()

    def _only_served_model(self) -> str:
        """The server's one model, when the config does not name it (`vllm serve` serves one)."""
        served = [m["id"] for m in self._request("GET", "/models")["data"]]
        if len(served) != 1:
            raise ValueError(f"{self.server.base_url} serves {served}: set generator.openai.model to one of them")
        return served[0]

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        delay = 1.0
        for attempt in range(self.server.max_retries + 1):
            last = attempt == self.server.max_retries
            try:
                response = self._client.request(method, path, json=body)
            except (httpx.TransportError, httpx.TimeoutException) as err:
                if last:
                    raise ConnectionError(f"{self.server.base_url}{path}: {type(err).__name__}: {err} "
                                          f"(after {attempt + 1} tries)") from err
            else:
                if response.status_code < 400:
                    return response.json()
                if response.status_code not in RETRY_STATUS or last:
                    hint = (f" (the key is read from ${self.server.api_key_env}, "
                            f"{'which is set' if os.environ.get(self.server.api_key_env) else 'which is not set'})"
                            if response.status_code in (401, 403) else "")
                    raise RuntimeError(f"{self.server.base_url}{path} answered {response.status_code}: "
                                       f"{response.text[:500]}{hint}")
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _one(self, index: int, text: str, spec: SamplingSpec) -> list[Completion]:
        body: dict[str, Any] = {
            "model": self.model_name, "prompt": text, "n": spec.n,
            "temperature": spec.temperature, "top_p": spec.top_p, "max_tokens": spec.max_tokens, "logprobs": 0,
        }
        if spec.stop:
            body["stop"] = list(spec.stop)
        if self.server.send_seed:
            body["seed"] = spec.seed * 1_000_003 + index  # as the vLLM backend seeds a prompt on GPU
        answer = self._request("POST", "/completions", body)
        choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
        usage = answer.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or len(self.tokenizer(body["prompt"])["input_ids"]))
        even_share = int(usage.get("completion_tokens") or 0) // max(len(choices), 1)
        out = []
        for choice in choices:
            text, finish = choice.get("text") or "", choice.get("finish_reason") or "stop"
            matched = choice.get("stop_reason")
            if finish == "stop" and spec.stop:
                if isinstance(matched, str) and not text.endswith(matched):
                    text += matched
                elif "stop_reason" not in choice and len(spec.stop) == 1 and not text.endswith(spec.stop[0]):
                    text += spec.stop[0]
            logprobs = choice.get("logprobs") or {}
            tokens = logprobs.get("tokens")
            generated = len(tokens) if tokens is not None else even_share
            out.append(Completion(text, prompt_tokens, generated, "length" if finish == "length" else "stop"))
        return out

    def generate(self, prompts: Sequence[str], spec: SamplingSpec,
                 prefixes: Sequence[str] | None = None) -> list[list[Completion]]:
        texts = rendered(self.tokenizer, prompts, prefixes, self.cfg.chat_template)
        with ThreadPoolExecutor(max_workers=self.server.concurrency) as pool:
            return list(pool.map(lambda it: self._one(it[0], it[1], spec), enumerate(texts)))

    def close(self) -> None:
        self._client.close()
