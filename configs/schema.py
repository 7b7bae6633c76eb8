"""Typed, frozen job configs: one pydantic model per stage.

The same models are the Prefect flows' parameters, so the Prefect UI renders them
as forms and validates a run triggered there exactly as the CLI validates a YAML
preset. ``extra="forbid"`` everywhere turns a typo in a key into an error instead
of a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LevelSpec(Frozen):
    """One difficulty level of the embedded task: an operation, a chain length, a key size."""

    op: Literal["digitwise", "add"] = Field(
        default="digitwise", description="digitwise: add each digit mod 10 (easy); add: x + k mod 10000, with carries (hard)")
    min_steps: int = Field(ge=1, le=40)
    max_steps: int = Field(ge=1, le=40)
    min_key: int = Field(default=10, ge=0, le=9999, description="the key added digit-wise each step")
    max_key: int = Field(default=99, ge=0, le=9999)

    @model_validator(mode="after")
    def _ordered(self) -> "LevelSpec":
        if self.min_steps > self.max_steps or self.min_key > self.max_key:
            raise ValueError("min_* must not exceed max_*")
        return self


# What the config can know of the benchmarks without reading them (tasks.benchmarks asserts it agrees).
USER_FILE_KINDS = frozenset({"jsonl", "omni_math"})
NO_TRAIN_SPLIT_KINDS = frozenset({"jsonl", "omni_math", "humaneval"})
# Scorers named rather than given as a folder (models/scorers.py opens them); 'confidence:NAME' is the
# confidence scorer reading another model of the workdir (e.g. 'large') or a model folder.
SCORER_NAMES = frozenset({"trained", "confidence", "oracle", "random"})
LARGE_CONFIDENCE = "confidence:large"  # the FLOPs-matched stage's larger model as a verifier


def confidence_model(spec: str) -> str | None:
    """The model a 'confidence:NAME' scorer reads; None for every other spec."""
    kind, colon, name = spec.partition(":")
    return (name or None) if kind == "confidence" and colon else None


def _scorer_name(spec: str) -> str:
    if spec in SCORER_NAMES or confidence_model(spec):
        return spec
    raise ValueError(f"{spec!r} is not a scorer name ({', '.join(sorted(SCORER_NAMES))}, or confidence:MODEL "
                     "for another model's token probabilities, e.g. confidence:large)")


class TaskConfig(Frozen):
    """Where problems come from: the embedded arithmetic task, a packaged benchmark, or your file.
    `ttscale tasks` lists the kinds with their problem counts (tasks.benchmarks reads them)."""

    kind: Literal["arith", "math500", "math", "gsm8k", "aime2024", "aime2025", "humaneval", "omni_math", "jsonl"] = Field(
        default="arith", description="arith: the embedded task; math500, math, gsm8k, aime2024, aime2025, humaneval: "
        "from installed PyPI packages; omni_math, jsonl: your file at task.path")
    seed: int = 0
    n_test: int = Field(default=200, ge=1, description="held-out problems (the bank is sampled on these): generated "
                        "(arith) or the first ones of a packaged benchmark's test split")
    n_train: int = Field(default=300, ge=0, description="train-split problems kept in the warehouse (labels and the "
                         "reviser take the first ones, the ORM the next ones the reviser never saw); a packaged "
                         "benchmark's first ones")
    levels: list[LevelSpec] = Field(
        default_factory=lambda: [
            LevelSpec(op="digitwise", min_steps=2, max_steps=4, min_key=10, max_key=99),
            LevelSpec(op="digitwise", min_steps=5, max_steps=8, min_key=100, max_key=9999),
            LevelSpec(op="digitwise", min_steps=9, max_steps=14, min_key=1000, max_key=9999),
            LevelSpec(op="add", min_steps=2, max_steps=4, min_key=10, max_key=999),
            LevelSpec(op="add", min_steps=6, max_steps=10, min_key=1000, max_key=9999),
        ]
    )
    path: Path | None = Field(default=None, description="your JSONL file (kind jsonl or omni_math)")
    limit: int | None = Field(default=None, ge=1, description="use only the first N test problems of the file")
    max_problem_chars: int = Field(default=16_000, ge=1, description="a longer problem is refused when the file "
                                   "loads, before any model does")

    @model_validator(mode="after")
    def _path_for_user_files(self) -> "TaskConfig":
        if self.kind in USER_FILE_KINDS and self.path is None:
            raise ValueError(f"task.kind={self.kind} reads your file: set task.path")
        if self.kind not in USER_FILE_KINDS and self.path is not None:
            raise ValueError(f"task.path is only read by kinds {' and '.join(sorted(USER_FILE_KINDS))}; "
                             f"task.kind={self.kind} would ignore it")
        return self


class BaseModelConfig(Frozen):
    """The embedded LLaMA-architecture model trained from scratch (flow `train-base`)."""

    hidden_size: int = Field(default=128, ge=8)
    intermediate_size: int = Field(default=384, ge=8)
    n_layers: int = Field(default=5, ge=1)
    n_heads: int = Field(default=4, ge=1)
    max_seq_len: int = Field(default=768, ge=32, description="positions trained (rows are packed): at least the "
                             "reviser's revisions.reviser.max_seq_len")
    # Trained at 768 throughout, the embedded model answered half as often (pass@1 0.24 vs 0.48:
    # lower loss, from leaning on the examples packed before it, worse arithmetic); trained at 384
    # and then at 768 for the last updates it keeps what it learned at 384 and learns the distances.
    short_seq_len: int | None = Field(default=384, ge=32, description="rows of this length (more of them: the "
                                      "same tokens per update) for every update but the last long_updates; "
                                      "none: max_seq_len throughout")
    long_updates: int = Field(default=300, ge=0, description="the last updates, at max_seq_len")
    max_updates: int = Field(default=2300, ge=1, description="training budget in optimizer updates")
    train_seconds: float = Field(default=1800.0, gt=0, description="wall-clock safety cap on training: a model "
                                 "stopped by it differs from a full run, and the findings report says so")
    # Small batches: at a fixed wall-clock budget, 2 rows of 384 tokens per update gave
    # the same tokens/s as 8 rows and 4x the updates (loss 0.61 vs 0.93 after 90 s);
    # with them, lr 1e-3 left the copy-learning plateau sooner than 3e-3 (0.49 at 133 s).
    # One row of 768 (two of short_seq_len 384 before the last long_updates) per update.
    batch_rows: int = Field(default=1, ge=1, description="rows of max_seq_len per update")
    learning_rate: float = Field(default=1e-3, gt=0)
    warmup_updates: int = Field(default=100, ge=0)
    schedule: Literal["cosine", "wsd"] = Field(default="cosine", description="learning rate after warmup: cosine "
                                              "down to 5% of the peak, or wsd (warmup-stable-decay): the peak "
                                              "until the last decay_fraction of updates, then linear down to 5%")
    decay_fraction: float = Field(default=0.2, gt=0, le=1, description="wsd only: the share of updates spent decaying")
    # A seed that answered nothing (2026-12-06, seed 2: greedy 0.00) had learned every field of a
    # step but one, the first step's copy of the start value from the question (0.35 of its digits
    # right, teacher-forced; bench/base_seeds.py): one line in seven, and the only one that reads
    # the question, so its share of the loss is small.
    head_tokens: int = Field(default=0, ge=0, description="a solution's first tokens, weighted by head_weight in "
                             "the loss (where it reads the question)")
    head_weight: float = Field(default=1.0, gt=0, description="loss weight of those tokens; 1: transformers' "
                               "own loss, as before the weight existed")
    seed: int = 0
    threads: int = Field(default=2, ge=1)
    # A run's model is a draw (README, "The base model": at one setting, seeds gave sampled pass@1
    # from 0.005 to 0.74 on this task), so a run can check what it trained and train again.
    restarts: int = Field(default=0, ge=0, description="train again with seed+1, seed+2, ... (at most this many "
                          "times) while the trained model's sampled pass@1 on the check problems is below the "
                          "learned bar (0.5); every try's cost is logged, the last try is kept")
    check_problems: int = Field(default=40, ge=1, description="restarts only: level-1 train-split problems the "
                                "check samples (never test problems)")
    check_samples: int = Field(default=4, ge=1, description="restarts only: samples per check problem at T = 1")
    # In twelve 2,300-update runs (README, "The base model") the loss at update 1,600 told the draws
    # apart: 0.076-0.136 in those that sampled pass@1 >= 0.40, 0.237-0.494 in those below 0.16.
    gate_update: int | None = Field(default=None, ge=1, description="restarts only: a try that is not the last "
                                    "stops here when its loss (the logged EMA) is above gate_loss, and the next "
                                    "seed trains; none: every try trains in full and only the check decides")
    gate_loss: float = Field(default=0.2, gt=0, description="restarts only: the loss at gate_update above which a "
                             "try stops early")

    @model_validator(mode="after")
    def _short_rows_divide(self) -> "BaseModelConfig":
        short = self.short_seq_len
        if short is not None and (short > self.max_seq_len or (self.max_seq_len * self.batch_rows) % short):
            raise ValueError(f"base_model.short_seq_len={short} must be at most max_seq_len={self.max_seq_len} and "
                             f"divide the {self.max_seq_len * self.batch_rows} tokens of an update")
        if self.gate_update is not None and self.gate_update >= self.max_updates:
            raise ValueError(f"base_model.gate_update={self.gate_update} must come before max_updates="
                             f"{self.max_updates}")
        return self


class OpenAIServerConfig(Frozen):
    """An OpenAI-compatible server (`vllm serve`, SGLang, a hosted endpoint) for generator.backend=openai."""

    base_url: str = Field(description="the API root, e.g. http://gpu-box:8000/v1")
    model: str | None = Field(default=None, description="the served model's name; default: the server's only one")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="the environment variable holding the key "
                             "(the key itself never goes into a config, which is logged to MLflow)")
    timeout_s: float = Field(default=600, gt=0, description="per request")
    max_retries: int = Field(default=4, ge=0, description="on connection errors, timeouts, 429 and 5xx")
    concurrency: int = Field(default=16, ge=1, description="requests in flight (the server batches them)")
    send_seed: bool = Field(default=True, description="send a per-prompt seed (vLLM and SGLang honour it, so a "
                            "rerun draws the same samples); off for a server that rejects the field")


class GeneratorConfig(Frozen):
    """Which backend serves the model; the same interface on CPU and GPU."""

    backend: Literal["hf", "vllm", "openai"] = Field(
        default="hf", description="hf (transformers, in process), vllm (in a child process), openai (a server "
        "at generator.openai.base_url; generator.model is still the local folder of the served model)")
    openai: OpenAIServerConfig | None = None
    model: str = Field(default="base", description="'base' (the workdir's trained model), 'smollm2', or a local path")
    batch_size: int = Field(default=256, ge=1, description="sequences per forward batch (hf)")
    segment_tokens: int = Field(default=48, ge=1, description="hf: decode this many tokens, then drop finished rows")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    threads: int = Field(default=2, ge=1)
    vllm_kv_cache_gib: int = Field(default=1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    vllm_cpu_block_size: int = Field(
        default=32, ge=32, multiple_of=32, description="KV-cache block size on CPU (vLLM's CPU default is 128). "
        "Prefix caching reuses whole blocks, and search re-sends every beam's prefix each round: at 32, beam "
        "search spent 1.2x best-of-N's time per token here, at 128 1.5x (bench/search.py)")
    vllm_gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    chat_template: bool = Field(default=False, description="wrap prompts in the tokenizer's chat template")

    @model_validator(mode="after")
    def _server_for_openai(self) -> "GeneratorConfig":
        if self.backend == "openai" and self.openai is None:
            raise ValueError("generator.backend=openai needs generator.openai.base_url (e.g. http://127.0.0.1:8000/v1)")
        return self


class BankConfig(Frozen):
    """The sample bank: N candidates per problem, graded and stored."""

    n: int = Field(default=64, ge=1, description="candidates per problem (N_max)")
    temperature: float = Field(default=1.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(default=320, ge=1)
    seed: int = 0
    split: Literal["test", "train"] = "test"
    problems_per_chunk: int = Field(default=25, ge=1, description="problems generated and committed together")


class LabelConfig(Frozen):
    """Monte-Carlo step labels (Math-Shepherd style) on the train split, for training the PRM."""

    problems: int = Field(default=100, ge=1, description="train-split problems to label (the first N)")
    samples: int = Field(default=4, ge=1, description="K solutions sampled per problem (paper: 16)")
    rollouts: int = Field(default=4, ge=1, description="R rollouts from every step prefix (paper: 16)")
    temperature: float = Field(default=1.0, ge=0)
    max_tokens: int = Field(default=320, ge=1)
    seed: int = 0
    problems_per_chunk: int = Field(default=25, ge=1, description="problems labeled and committed together")


class PRMConfig(Frozen):
    """The process reward model: the base model with a scalar head at each step's last token."""

    mode: Literal["head", "lora", "full", "surprise"] = Field(
        default="full", description="head: train only the scalar head (frozen base); lora: peft adapters; full; "
        "surprise: a head over the frozen generator's summed token surprise and last hidden state "
        "(models/surprise_prm.py; the one that ranks candidates within a problem on the embedded task)")
    epochs: int = Field(default=8, ge=1, description="most epochs; early stopping may end sooner")
    patience: int = Field(default=2, ge=1, description="epochs without a better validation loss before stopping")
    learning_rate: float = Field(default=3e-4, gt=0)
    batch_size: int = Field(default=16, ge=1, description="solutions per update")
    val_fraction: float = Field(default=0.2, gt=0, lt=1, description="share of labeled problems held out")
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    backbone: Literal["generator", "large"] = Field(
        default="generator", description="the model the PRM is built on: the generator's (the paper's setup), or "
        "'large', the ~14x model `train-large` trains (config.large_model): a generator-verifier gap, its "
        "training and scoring FLOPs charged at its size")
    seed: int = 0
    threads: int = Field(default=2, ge=1)


class ScoreConfig(Frozen):
    """Which step scorer scores the bank, and how step scores become candidate scores."""

    prm: str = Field(default="trained", description="'trained' (this workdir's PRM), 'models:/NAME/VERSION' "
                     "(MLflow registry), a local path to a token-classification PRM, 'confidence' (the generator's "
                     "token probabilities), 'confidence:MODEL' (another model's, e.g. confidence:large), "
                     "'oracle', or 'random' (uniform scores "
                     "that know nothing: the null floor under which no finding may come out reproduced)")
    batch_size: int = Field(default=16, ge=1, description="solutions per scoring forward pass (16 was fastest "
                            "for the tiny PRM on 2 CPU cores: 42k tokens/s vs 35k at 256)")
    step_separator: str | None = Field(
        default=None, description="external PRMs: text appended after each step and read there (e.g. '<extra_0>')")
    prm_format: Literal["classifier", "math-shepherd", "rlhflow"] = Field(
        default="classifier", description="how an external PRM folder reads steps: classifier (token "
        "classification at each step's end or separator: ours, Qwen/Qwen2.5-Math-PRM-7B with step_separator "
        "'<extra_0>'), math-shepherd (a causal LM, P('+') vs P('-') at a 'ки' tag after each step: "
        "peiyi9979/math-shepherd-mistral-7b-prm), rlhflow (a causal LM, one chat turn per step answered '+': "
        "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data)")
    aggregation: Literal["last", "min", "prod", "mean"] = Field(
        default="last", description="step scores to one candidate score (the paper's best: last)")
    baselines: list[Annotated[str, AfterValidator(_scorer_name)]] = Field(
        default_factory=lambda: ["confidence", "oracle"],
        description="scorers that need no training, also run over the bank so every curve and within-problem "
        "AUC has them beside the main scorer: trained (this workdir's PRM, when the main scorer is another), "
        "confidence (the generator's own token probabilities, the baseline a PRM "
        "must beat), confidence:MODEL (another model's token probabilities of the same text: confidence:large "
        "is the FLOPs-matched stage's larger model), oracle (exact step checks, the embedded task's ceiling; "
        "skipped on other tasks), random")
    resamples: int = Field(default=400, ge=10, description="subsets drawn per budget for the curves")
    adaptive_leads: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [2, 3, 4], description="adaptive self-consistency on the bank (tasks/adaptive.py): "
        "for each lead, sample until the leading answer is that many votes ahead (at most bank.n), replayed in "
        "`resamples` random orders; reported beside majority at the same or a larger budget; empty: off")
    adaptive_weighted: bool = Field(default=True, description="also adaptive weighted voting: each vote counts "
                                    "its candidate's score (prm, under aggregation), the leader must be `lead` "
                                    "score units ahead; reported beside best-of-N weighted at a fixed N")
    problems_per_chunk: int = Field(default=50, ge=1)
    threads: int = Field(default=2, ge=1)
    prefix_cache_mb: int = Field(
        default=512, ge=0, description="memory for the KV of search's beam prefixes, kept from one round to the "
        "next so the PRM reads only each round's new step (0: re-read every prefix each round)")


class SearchConfig(Frozen):
    """PRM-guided search on the first test problems: which strategies, budgets and seeds."""

    problems: int = Field(default=40, ge=1, description="first N test problems (levels interleave)")
    strategies: list[Literal["majority", "best_of_n", "beam", "lookahead", "dvts"]] = Field(
        default_factory=lambda: ["majority", "best_of_n", "beam", "lookahead", "dvts"])
    budgets: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16], description="N: generations per round")
    widths: list[int] = Field(default_factory=lambda: [4], description="M for beam, lookahead and DVTS")
    lookahead_depths: list[int] = Field(default_factory=lambda: [1], description="k for lookahead")
    seeds: list[int] = Field(default_factory=lambda: [0, 1])
    temperature: float = Field(default=1.0, ge=0)
    step_tokens: int = Field(default=48, ge=1, description="most tokens in one step")
    max_rounds: int = Field(default=40, ge=1)
    max_tokens: int = Field(default=320, ge=1, description="most tokens in a whole solution (best-of-N)")

    @model_validator(mode="after")
    def _positive(self) -> "SearchConfig":
        if min(self.budgets + self.widths) < 1 or min(self.lookahead_depths) < 0:
            raise ValueError("budgets and widths must be >= 1, lookahead depths >= 0")
        return self


class RevisionDataConfig(Frozen):
    """Revision training data: many solutions per train problem, wrong ones placed before right ones."""

    problems: int = Field(default=200, ge=1, description="train-split problems sampled (the first N)")
    samples: int = Field(default=16, ge=2, description="solutions sampled per problem (paper: 64)")
    temperature: float = Field(default=1.0, ge=0, description="paper: higher than for the bank")
    max_tokens: int = Field(default=320, ge=1)
    seed: int = 0
    max_context: int = Field(default=4, ge=0, le=8, description="most incorrect attempts before the target (paper: 4)")
    trajectories_per_problem: int = Field(default=4, ge=1, description="correct solutions used as targets, per problem")
    reference_targets: bool = Field(
        default=False, description="also use the task's reference solution as a target (for a model too weak to "
        "solve many train problems itself; the paper uses only the model's own correct samples)")
    context: Literal["samples", "slips"] = Field(
        default="samples", description="what a trajectory's earlier attempts are: `samples`, the problem's own "
        "incorrect samples nearest the target (the paper); `slips`, the target with one step miscomputed and the "
        "rest derived from it (tasks.arith.slipped; the embedded task only), the wrong attempt whose first wrong "
        "step the target corrects")
    problems_per_chunk: int = Field(default=50, ge=1)


class ReviserConfig(Frozen):
    """Fine-tuning the revision model from the base model; loss on the target attempt only."""

    mode: Literal["full", "lora"] = Field(default="full", description="full for the embedded model, lora for large ones")
    epochs: int = Field(default=2, ge=1)
    max_updates: int = Field(default=400, ge=1, description="stop after this many updates even mid-epoch")
    batch_size: int = Field(default=8, ge=1, description="trajectories per update")
    max_seq_len: int = Field(default=768, ge=64, description="tokens of context the reviser is trained and served "
                             "at; chains drop an attempt's oldest earlier attempts to fit it")
    learning_rate: float = Field(default=3e-4, gt=0)
    warmup_updates: int = Field(default=20, ge=0)
    edit_weight: float = Field(default=1.0, ge=1.0, description="loss weight of the target token where it first "
                               "differs from the attempt before it (1: every target token alike)")
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    seed: int = 0
    threads: int = Field(default=2, ge=1)


class ChainConfig(Frozen):
    """Revision chains on the test problems: for budget N, N/L chains of length L, L = 1 .. N."""

    problems: int = Field(default=100, ge=1, description="first N test problems (levels interleave)")
    budget: int = Field(default=8, ge=1, description="largest N (a power of two); every L and smaller N is cut from it")
    window: int = Field(default=4, ge=0, description="previous attempts of its chain an attempt sees (paper: 4)")
    edit: Literal["revise", "restart"] = Field(
        default="revise", description="how a chain's next attempt is made: `revise`, the fine-tuned revision model "
        "writes a new attempt after the window of earlier ones (the paper); `restart`, the base model keeps the "
        "previous attempt's steps before its least confident one (its own token probabilities) and writes the "
        "rest again: no training, no window")
    chain_sets: int = Field(default=1, ge=1, description="independent repeats of the whole sweep")
    temperature: float = Field(default=1.0, ge=0)
    max_tokens: int = Field(default=320, ge=1)
    seed: int = 0
    rule: Literal["majority_flat", "majority_hier", "orm_flat", "orm_hier", "prm_flat", "prm_hier"] = Field(
        default="orm_hier", description="the selection the report's findings use (all rules are stored): majority "
        "or a verifier's weighted vote, over all attempts (flat) or within each chain, then across (hier)")

    @property
    def uses_reviser(self) -> bool:
        """Whether chains are written by the fine-tuned revision model (and so need its data and training)."""
        return self.edit == "revise"

    @model_validator(mode="after")
    def _power_of_two(self) -> "ChainConfig":
        if self.budget & (self.budget - 1):
            raise ValueError(f"revisions.chains.budget must be a power of two (got {self.budget})")
        return self


class ORMConfig(Frozen):
    """The outcome verifier: trained on the revision model's own chains on train problems."""

    problems: int = Field(default=100, ge=1, description="train-split problems the reviser runs chains on")
    chains: int = Field(default=2, ge=1)
    length: int = Field(default=4, ge=1)
    training: PRMConfig = PRMConfig(epochs=4)

    @model_validator(mode="after")
    def _built_on_the_reviser(self) -> "ORMConfig":
        if self.training.backbone != "generator":
            raise ValueError("revisions.orm.training.backbone: the ORM is always built on the revision model it "
                             f"verifies; only prm.backbone may be 'large' (got {self.training.backbone!r})")
        return self


class RevisionConfig(Frozen):
    """Sequential revisions (PAPER.md "Revisions"): data, the revision model, its verifier, the sweep."""

    data: RevisionDataConfig = RevisionDataConfig()
    reviser: ReviserConfig = ReviserConfig()
    orm: ORMConfig = ORMConfig()
    chains: ChainConfig = ChainConfig()

    @model_validator(mode="after")
    def _context_fits(self) -> "RevisionConfig":
        """An attempt sees as many of its chain's last `window` attempts as fit in reviser.max_seq_len
        (oldest dropped first); the length must at least hold a problem and one new attempt."""
        need = self.chains.max_tokens + 64
        if self.reviser.max_seq_len < need:
            raise ValueError(f"revisions.reviser.max_seq_len={self.reviser.max_seq_len} cannot hold a problem and "
                             f"one attempt of up to revisions.chains.max_tokens={self.chains.max_tokens} tokens "
                             f"(needs about {need}): raise it or lower the attempt length")
        return self


class DifficultyConfig(Frozen):
    """Difficulty bins over the bank's problems (PAPER.md "Difficulty")."""

    bins: int = Field(default=5, ge=2, description="quantile bins, bin 1 easiest")
    samples: int = Field(default=8, ge=1, description="bank candidates whose mean final-step PRM score predicts "
                         "difficulty (charged as estimation cost)")
    seed: int = 0


class AllocationConfig(Frozen):
    """The compute-optimal policy per (bin, budget), cross-validated, and the global allocator."""

    splits: int = Field(default=5, ge=1, description="random 2-fold splits averaged")
    search_baseline: str = Field(default="best-of-N", description="the search strategy efficiency is measured against")
    revision_baseline: str = Field(default="revisions L=1 orm_flat",
                                   description="parallel sampling with the revision model, ORM-weighted")
    seed: int = 0


class ExchangeConfig(Frozen):
    """The FLOPs-matched comparison: the small model with test-time compute vs a larger model, greedy."""

    ratios: list[float] = Field(default_factory=lambda: [0.16, 0.79, 22.0],
                                description="R = D_inference / D_pretrain: expected inference load vs pretraining")
    resamples: int = Field(default=200, ge=1, description="N-subsets drawn per problem for best-of-N accuracy")
    bin_samples: int | None = Field(default=None, ge=1, description="bank samples per problem that set its "
                                    "difficulty bin; the rest are scored (default: half the bank)")
    seed: int = 0


class SolveConfig(Frozen):
    """Solving new problems with the served compute-optimal search policy (flow `solve`)."""

    first: int = Field(default=40, ge=0, description="skip this many test problems (the policy was fitted on the "
                       "first search.problems)")
    count: int = Field(default=20, ge=1, description="problems to solve")
    budget: int = Field(default=8, ge=1, description="generation budget per problem; the policy picks the strategy")
    bins: Literal["predicted", "oracle"] = Field(
        default="predicted", description="predicted: difficulty from the PRM on fresh samples, no reference needed")
    seed: int = 0


class ReportConfig(Frozen):
    majority_resamples: int = Field(default=200, ge=1)


class WorkerConfig(Frozen):
    """Where the generator-heavy stages (sample-bank, label-steps, search) put their rows.

    DuckDB allows one read-write process per file, so workers on other machines never
    open the warehouse: with `output: shards` each writes Parquet chunk folders under
    `<workdir>/shards/<stage>/` for its share of the problems, and one process runs
    `ttscale load-shards`. Re-running a stage in warehouse mode afterwards finds the work
    done and writes the reports.
    """

    output: Literal["warehouse", "shards"] = Field(
        default="warehouse", description="shards: this run is a worker on another machine; it writes Parquet chunk "
        "folders under <workdir>/shards for `ttscale load-shards` instead of opening the warehouse")
    shard_index: int = Field(default=0, ge=0, description="this worker takes the problems with index % count == this")
    shard_count: int = Field(default=1, ge=1, description="how many workers split the problems")
    task_runner: Literal["threads", "ray"] = Field(
        default="threads", description="where `ttscale fan-out` runs its shard workers: threads of this machine, "
        "or the nodes of a Ray cluster (needs the `ray` extra: prefect-ray)")
    ray_address: str | None = Field(
        default=None, description="Ray cluster to join (ray://head:10001, or auto); none: start a local Ray instance")
    gpus_per_shard: float = Field(default=0, ge=0, description="GPUs each shard worker asks Ray for (0: none)")
    result_storage: str | None = Field(
        default=None, description="where fan-out persists each shard's result so a re-run on any machine skips "
        "finished shards: a shared folder (/mnt/shared/prefect-results) or a Prefect storage block "
        "(s3-bucket/ttscale-results); none: not persisted")

    @model_validator(mode="after")
    def _shard_in_range(self) -> "WorkerConfig":
        if self.shard_index >= self.shard_count:
            raise ValueError("workers.shard_index must be below workers.shard_count")
        return self

    @property
    def to_shards(self) -> bool:
        return self.output == "shards"

    def owns(self, problem_index: int) -> bool:
        """Whether this worker's share includes the problem (every problem when not sharded)."""
        return problem_index % self.shard_count == self.shard_index


class PipelineConfig(Frozen):
    """Everything one `ttscale run` needs; a YAML preset is one of these."""

    name: str = "tiny"
    task: TaskConfig = TaskConfig()
    base_model: BaseModelConfig = BaseModelConfig()
    generator: GeneratorConfig = GeneratorConfig()
    bank: BankConfig = BankConfig()
    labels: LabelConfig = LabelConfig()
    prm: PRMConfig = PRMConfig()
    scoring: ScoreConfig = ScoreConfig()
    search: SearchConfig = SearchConfig()
    revisions: RevisionConfig = RevisionConfig()
    difficulty: DifficultyConfig = DifficultyConfig()
    allocation: AllocationConfig = AllocationConfig()
    large_model: BaseModelConfig | None = Field(
        default=None, description="a larger embedded model trained on the same data, for the FLOPs-matched "
        "comparison (preset flops-matched); none: the comparison is skipped")
    exchange: ExchangeConfig = ExchangeConfig()
    solve: SolveConfig = SolveConfig()
    report: ReportConfig = ReportConfig()
    workers: WorkerConfig = WorkerConfig()

    @model_validator(mode="after")
    def _reviser_within_what_its_base_learned(self) -> "PipelineConfig":
        """Fine-tuning a reviser for a few hundred updates does not teach positions its base model never
        saw: with the embedded base trained at 384 and the reviser served at 2,048, accuracy fell with every
        earlier attempt in the prompt. So the embedded base trains at the reviser's length."""
        base, reviser = self.base_model.max_seq_len, self.revisions.reviser.max_seq_len
        if self.generator.model == "base" and reviser > base:
            raise ValueError(f"revisions.reviser.max_seq_len={reviser} is beyond base_model.max_seq_len={base}, "
                             "the positions the embedded model is trained at: the reviser would be served at "
                             "positions it never learned. Raise base_model.max_seq_len (with fewer "
                             "base_model.batch_rows for the same tokens per update) or lower the reviser's")
        return self

    @property
    def scores_with_large(self) -> bool:
        """Whether a scorer reads the larger embedded model (which must then be trained before labels and scoring):
        its confidence, or the trained PRM built on it."""
        scorers = (self.scoring.prm, *self.scoring.baselines)
        return LARGE_CONFIDENCE in scorers or (self.prm.backbone == "large" and "trained" in scorers)

    @model_validator(mode="after")
    def _stages_fit_the_task(self) -> "PipelineConfig":
        """Combinations that would otherwise fail minutes into a run, after the server and a model started."""
        kind = self.task.kind
        if self.generator.model == "base" and kind != "arith":
            raise ValueError(f"generator.model=base is the embedded model, trained on the embedded task only; "
                             f"task.kind={kind} needs a pretrained model: generator.model=smollm2 or a local path")
        trained = "trained" in (self.scoring.prm, *self.scoring.baselines)
        if trained and (kind in NO_TRAIN_SPLIT_KINDS or self.task.n_train == 0):
            why = f"task.kind={kind} has no train split" if kind in NO_TRAIN_SPLIT_KINDS else "task.n_train=0"
            raise ValueError(f"scoring: a trained PRM (scoring.prm or scoring.baselines 'trained') labels train "
                             f"problems, and {why}; score with scoring.prm=confidence and drop 'trained' from "
                             "scoring.baselines")
        if self.scores_with_large and self.large_model is None:
            what = LARGE_CONFIDENCE if LARGE_CONFIDENCE in (self.scoring.prm, *self.scoring.baselines) else \
                "the trained PRM (prm.backbone: large)"
            raise ValueError(f"scoring: {what} reads the larger embedded model, which only a config with large_model "
                             "trains (preset flops-matched); set large_model, or score without it")
        if self.revisions.data.context == "slips" and kind != "arith":
            raise ValueError(f"revisions.data.context=slips miscomputes one step of the embedded task's derivations; "
                             f"task.kind={kind} has no exact steps to slip: use revisions.data.context=samples")
        if self.scoring.prm == "oracle" and kind != "arith":
            raise ValueError(f"scoring.prm=oracle checks the embedded task's steps exactly; task.kind={kind} has "
                             "no exact step checks (as a baseline it is skipped on other tasks)")
        return self

    @model_validator(mode="after")
    def _orm_sees_unseen_problems(self) -> "PipelineConfig":
        """The ORM is trained on the reviser's attempts at train problems the reviser was never fine-tuned
        on (the ones after revisions.data.problems), so its selection in the sweep is what its AUC says."""
        need = self.revisions.data.problems + self.revisions.orm.problems
        if self.task.kind == "arith" and self.task.n_train < need:
            raise ValueError(f"task.n_train={self.task.n_train} is too few: the reviser's data takes "
                             f"revisions.data.problems={self.revisions.data.problems} train problems and the ORM "
                             f"another revisions.orm.problems={self.revisions.orm.problems} it never saw "
                             f"(needs {need})")
        return self
