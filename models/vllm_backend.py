"""vLLM backend: an in-process `LLM` with prefix caching, living in a dedicated subprocess.

vLLM starts worker processes and owns global state (CUDA context, OpenMP bindings on
CPU). Keeping it in a spawned child lets it run under Prefect's worker threads and
pytest alike, and `close()` frees everything it held. The parent only sends prompts
and a `SamplingSpec` over a pipe and gets `Completion`s back.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ttscale.configs.schema import GeneratorConfig
from ttscale.models.generator import Completion, SamplingSpec, rendered

# The engine's seed on CPU, where it governs sampling: set at start and restored by `reseed`.
ENGINE_SEED = 0


def _serve(conn: Connection, cfg: dict[str, Any], model_dir: str) -> None:
    """Child process: build the engine once, then answer generate requests until told to stop."""
    try:
        # vLLM drops to one torch thread "for serving" unless OMP_NUM_THREADS says otherwise.
        os.environ.setdefault("OMP_NUM_THREADS", str(cfg["threads"]))
        import torch

        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg["vllm_kv_cache_gib"]))
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        # This child already isolates vLLM; running its engine and worker in-process too
        # saves two more process starts (each re-imports torch and vLLM).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM, SamplingParams

        kwargs: dict[str, Any] = dict(
            model=model_dir,
            enable_prefix_caching=True,
            enforce_eager=not on_gpu,
            seed=ENGINE_SEED,
            dtype=cfg["dtype"] if on_gpu else "float32",
            distributed_executor_backend="uni",
        )
        if on_gpu:
            kwargs["gpu_memory_utilization"] = cfg["vllm_gpu_memory_utilization"]
        else:
            kwargs["block_size"] = cfg["vllm_cpu_block_size"]
        llm = LLM(**kwargs)
        _reseed(ENGINE_SEED)  # the same state a reused engine is reset to (`reseed`)
        tokenizer = llm.get_tokenizer()
        n_params = _count_params(llm)
        conn.send(("ready", n_params))
    except BaseException as err:  # report start-up failures to the parent instead of hanging it
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    while True:
        message = conn.recv()
        if message[0] == "close":
            break
        if message[0] == "reseed":
            # What LLM(seed=ENGINE_SEED) does at start: the CPU sampler draws from these global generators.
            _reseed(ENGINE_SEED)
            conn.send(("ok", None))
            continue
        _, prompts, prefixes, spec_dict = message
        try:
            spec = SamplingSpec(**spec_dict)
            prompts = rendered(tokenizer, prompts, prefixes, cfg["chat_template"])
            params = [
                SamplingParams(
                    n=spec.n,
                    temperature=spec.temperature,
                    top_p=spec.top_p,
                    max_tokens=spec.max_tokens,
                    stop=list(spec.stop) or None,
                    include_stop_str_in_output=True,
                    # Per-request seeds need an offset-capable generator, which the CPU
                    # build lacks ("CPU Generator does not use offset"); there the
                    # engine's seed governs sampling.
                    seed=spec.seed * 1_000_003 + i if on_gpu else None,
                )
                for i in range(len(prompts))
            ]
            outputs = llm.generate(list(prompts), params, use_tqdm=len(prompts) > 64)
            result = [
                [
                    (o.text, len(out.prompt_token_ids or []), len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                    for o in sorted(out.outputs, key=lambda o: o.index)
                ]
                for out in outputs
            ]
            conn.send(("ok", result))
        except BaseException as err:
            conn.send(("error", f"{type(err).__name__}: {err}"))


def _reseed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _count_params(llm: Any) -> int:
    """Parameter count from the model config (the engine's weights live in another process)."""
    from transformers import AutoModelForCausalLM

    import torch

    config = llm.llm_engine.model_config.hf_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


class VLLMGenerator:
    def __init__(self, cfg: GeneratorConfig, model_dir: Path, start_timeout_s: float = 600) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, cfg.model_dump(), str(model_dir)), daemon=False)
        self._proc.start()
        if not self._conn.poll(start_timeout_s):
            self.close()
            raise TimeoutError(f"vLLM did not start within {start_timeout_s:.0f}s")
        status, payload = self._conn.recv()
        if status != "ready":
            self.close()
            raise RuntimeError(f"vLLM failed to start on {model_dir}: {payload}")
        self.n_params: int = payload

    def generate(self, prompts: Sequence[str], spec: SamplingSpec,
                 prefixes: Sequence[str] | None = None) -> list[list[Completion]]:
        self._conn.send(("generate", list(prompts), list(prefixes) if prefixes is not None else None, asdict(spec)))
        status, payload = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"vLLM generate failed: {payload}")
        return [[Completion(*c) for c in row] for row in payload]

    def reseed(self) -> None:
        """Back to the engine's start seed, so a reused engine samples as a fresh one does."""
        self._conn.send(("reseed",))
        status, payload = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"vLLM reseed failed: {payload}")

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(timeout=60)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
