"""The generator seam: one interface, several backends, the same code path on CPU and GPU.

Stages never import a backend directly; they ask `open_generator(cfg, model_dir)` for a
`Generator` and use it as a context manager, so a backend that owns worker processes
(vLLM) is always shut down, even when a stage fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from configs.schema import GeneratorConfig


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str  # "stop" (end of sequence or a stop string) | "length"


class Generator(Protocol):
    n_params: int

    def generate(self, prompts: Sequence[str], spec: SamplingSpec) -> list[list[Completion]]:
        """spec.n completions for each prompt, in prompt order."""
        ...

    def close(self) -> None: ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Truncate after the earliest stop string (kept, so a step keeps its delimiter)."""
    cut = min((text.find(s) + len(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@contextlib.contextmanager
def open_generator(cfg: GeneratorConfig, model_dir: Path) -> Iterator[Generator]:
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    if cfg.backend == "hf":
        from models.hf_backend import HFGenerator

        gen: Generator = HFGenerator(cfg, Path(model_dir))
    else:
        if importlib.util.find_spec("vllm") is None:
            raise ImportError("generator.backend=vllm needs vLLM: pip install -e '.[cpu]' (CPU) or '.[gpu]' (GPU), "
                              "or set generator.backend: hf")
        from models.vllm_backend import VLLMGenerator

        gen = VLLMGenerator(cfg, Path(model_dir))
    try:
        yield gen
    finally:
        gen.close()
