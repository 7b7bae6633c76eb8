"""Sequential revisions: training trajectories, the revision prompt, and chains of attempts.

A revision model sees a problem and up to `window` earlier attempts, then writes a new
attempt. It learns this from trajectories built on the train split (PAPER.md,
"Revisions"): for a correct solution, the incorrect solutions nearest to it by
character edit distance go in front, the nearest last, so the model learns to move
from an almost-right attempt to a right one. At inference a chain feeds each attempt
back in; the sweep cuts every (budget N, chain length L) out of one "staircase" of
chains (`staircase`), so a single generation pass serves the whole grid.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Protocol

import pyarrow as pa
from rapidfuzz.distance import Levenshtein

from ttscale.models.generator import Generator, SamplingSpec
from ttscale.tasks.grading import grade, split_steps
from ttscale.tasks.problems import Problem
from ttscale.tasks.sampling import prompt_for, response_prefix, stable_hash
from ttscale.warehouse.store import Warehouse
from ttscale.models.reviser import ContextRoom
from pathlib import Path
from ttscale.configs.schema import PipelineConfig
from ttscale.workdir import Workdir, fingerprint, reviser_dir
from tqdm.auto import tqdm

# After each earlier attempt: a line no solution contains, so an attempt's end is unambiguous.
ATTEMPT_SEPARATOR = "\n\nretry:\n\n"


def revision_prompt(problem: Problem, previous: Sequence[str]) -> str:
    """Each earlier attempt under its own copy of the problem, oldest first, then the problem once more.

    Restating the problem before every attempt keeps what an attempt starts from the
    same as in a fresh prompt. (With the problem stated only once, at the top, the
    embedded model, which starts a solution by copying the line just above it, began
    every revision from the wrong line: 0 of 600 revisions correct, 42% at turn 0.)
    """
    return "".join(prompt_for(problem) + attempt + ATTEMPT_SEPARATOR for attempt in previous) + prompt_for(problem)


def window(attempts: Sequence[str], size: int) -> list[str]:
    """The last `size` attempts of a chain: all an attempt gets to see."""
    return list(attempts[-size:]) if size > 0 else []


Fits = Callable[[str], bool]  # does this revision prompt leave room for what must follow it?


def fitted(problem: Problem, previous: Sequence[str], fits: Fits) -> list[str]:
    """`previous` less its oldest attempts until the revision prompt fits.

    A model must never be trained or served beyond the positions it learned: the embedded
    reviser's accuracy fell from 0.46 at turn 1 (prompts of ~260 tokens) to 0.27 at turn 3
    (~650) when its base had seen only 384. The paper keeps the last four attempts; this
    keeps the last (up to four) that fit, most recent first to stay.
    """
    kept = list(previous)
    while kept and not fits(revision_prompt(problem, kept)):
        kept.pop(0)
    return kept


def _always(_: str) -> bool:
    return True


# --- training trajectories -----------------------------------------------------------


@dataclass(frozen=True)
class Trajectory:
    problem_id: str
    target: str  # a correct solution
    context: tuple[str, ...]  # incorrect solutions, least similar first, most similar last
    distances: tuple[int, ...]  # character edit distance of each to the target


def trajectories(problem_id: str, texts: Sequence[str], correct: Sequence[bool], max_context: int,
                 per_problem: int, rng: random.Random) -> list[Trajectory]:
    """Up to `per_problem` trajectories for one problem's sampled solutions.

    Each takes one correct sample as the target (on a task with one right derivation
    the targets are often the same text; their contexts differ) and a context size k
    drawn from 0..max_context, bounded by how many incorrect samples exist. The context
    is k incorrect samples drawn from the 2k nearest to the target by edit distance
    (nearest-first, with some variety), ordered so the most similar comes last, right
    before the target. No correct sample ever appears in a context: the model must
    learn to revise wrong work, not to copy it.
    """
    right = [t for t, ok in zip(texts, correct) if ok]
    wrong = [t for t, ok in zip(texts, correct) if not ok]
    rng.shuffle(right)
    out: list[Trajectory] = []
    for target in right[:per_problem]:
        k = rng.randint(0, min(max_context, len(wrong)))
        by_distance = sorted((Levenshtein.distance(w, target), i) for i, w in enumerate(wrong))
        pool = by_distance[: 2 * k]
        chosen = sorted(rng.sample(pool, k), reverse=True)  # farthest first, most similar last
        out.append(Trajectory(problem_id, target, tuple(wrong[i] for _, i in chosen), tuple(d for d, _ in chosen)))
    return out


def slip_trajectories(problem_id: str, targets: Sequence[str], slip: Callable[[str, random.Random], str | None],
                      max_context: int, per_problem: int, rng: random.Random) -> list[Trajectory]:
    """Up to `per_problem` trajectories whose earlier attempts are slips of their target: k ~ 0..max_context
    copies of the target, each with one step miscomputed (`slip`, e.g. tasks.arith.slipped) and the rest
    derived from it, farthest from the target first. Unlike the sampled contexts, every attempt here differs
    from the target from one known step on, so what the model can learn is the edit the paper wants: keep
    the steps before the slip, redo the slip, continue."""
    out: list[Trajectory] = []
    pool = list(targets)
    rng.shuffle(pool)
    for target in pool[:per_problem]:
        slips = [s for _ in range(rng.randint(0, max_context)) if (s := slip(target, rng)) is not None]
        chosen = sorted(((Levenshtein.distance(s, target), s) for s in slips), reverse=True)
        out.append(Trajectory(problem_id, target, tuple(s for _, s in chosen), tuple(d for d, _ in chosen)))
    return out


TRAJECTORY_SCHEMA = pa.schema([
    ("trajectory_id", pa.string()), ("data_id", pa.string()), ("problem_id", pa.string()),
    ("context", pa.list_(pa.string())), ("distances", pa.list_(pa.int32())), ("target", pa.string()),
])


def trajectories_table(items: Sequence[Trajectory], data_id: str) -> pa.Table:
    rows = [dict(trajectory_id=stable_hash(data_id, t.problem_id, t.target, t.context), data_id=data_id,
                 problem_id=t.problem_id, context=list(t.context), distances=list(t.distances), target=t.target)
            for t in items]
    return pa.Table.from_pylist(rows, schema=TRAJECTORY_SCHEMA)


# --- chains ----------------------------------------------------------------------------


def staircase(budget: int) -> list[int]:
    """Chain lengths that contain every (N, L) with N, L powers of two, L <= N <= budget.

    (N, L) uses chains 0 .. N/L - 1 cut to their first L attempts, so chain i needs the
    largest power of two L with (i + 1) * L <= budget: 8 -> [8, 4, 2, 2, 1, 1, 1, 1],
    20 attempts instead of the 64 of eight full-length chains.
    """
    lengths = []
    for i in range(budget):
        length = 1
        while (i + 1) * length * 2 <= budget:
            length *= 2
        lengths.append(length)
    return lengths


@dataclass(frozen=True)
class Attempt:
    problem_id: str
    chain: int
    position: int
    text: str
    answer: str | None
    correct: bool
    prompt_tokens: int
    generated_tokens: int


ChainKey = tuple[str, int]  # (problem_id, chain)


Request = tuple[str, str, int]  # (prompt, response prefix it continues, tokens read to decide them)


class Editor(Protocol):
    """How a chain asks for its next attempt, given the problem and the chain's attempts so far."""

    def requests(self, items: Sequence[tuple[Problem, Sequence[str]]]) -> list[Request]: ...


@dataclass(frozen=True)
class ContextEditor:
    """The paper's revision: the revision model sees the last `window` attempts of its chain that leave
    it room to answer (`fits`), each under its own copy of the problem, and writes a new attempt."""

    window: int
    fits: Fits = _always

    def requests(self, items: Sequence[tuple[Problem, Sequence[str]]]) -> list[Request]:
        return [(revision_prompt(problem, fitted(problem, window(previous, self.window), self.fits)), "", 0)
                for problem, previous in items]


class StepConfidence(Protocol):
    def score_with_tokens(self, prompts: Sequence[str], step_lists: Sequence[Sequence[str]]
                          ) -> tuple[list[list[float]], list[list[int]]]: ...


def least_confident(prefix_scores: Sequence[float]) -> int:
    """The step where a lowest-so-far fold (models.confidence.LowestConfidence) reaches its final value:
    the least confident step of the solution."""
    return next(i for i, s in enumerate(prefix_scores) if s == prefix_scores[-1])


@dataclass(frozen=True)
class RestartEditor:
    """A revision that needs no training (`revisions.chains.edit: restart`): keep the previous attempt's
    steps before its least confident one, by the generator's own token probabilities, and let the
    generator write the rest again from there (a turn-0 attempt is a plain sample).

    Why: on the embedded task a sampling slip is a low-probability token, so the least confident step
    is usually the first wrong one, and everything before it is work worth keeping, which the fine-tuned
    reviser does not learn to copy (README, "Revisions"). The confidence pass reads the problem and the
    previous attempt: those tokens are charged as read (`Request`'s third element, in prompt_tokens)."""

    confidence: StepConfidence
    steps_of: Callable[[str], list[str]]

    def requests(self, items: Sequence[tuple[Problem, Sequence[str]]]) -> list[Request]:
        out: list[Request] = [(prompt_for(problem), "", 0) for problem, _ in items]  # turn 0: a plain sample
        scored = [(i, steps) for i, (_, previous) in enumerate(items) if previous
                  and (steps := self.steps_of(previous[-1]))]
        scores, tokens = self.confidence.score_with_tokens([out[i][0] for i, _ in scored], [s for _, s in scored])
        for (i, steps), row, read in zip(scored, scores, tokens):
            kept = steps[: least_confident(row)] if row else []
            out[i] = (out[i][0], response_prefix(kept), read[-1] if read else 0)
        return out


Todo = tuple[Problem, int, int, Request]  # (problem, chain, position, what to ask for)


def next_round(problems: Sequence[Problem], lengths: Sequence[int], done: Mapping[ChainKey, Sequence[str]],
               editor: Editor) -> list[Todo]:
    """The attempts to generate next: for each chain that is not yet full, its next position.

    `done` holds every chain's attempts so far (texts in position order), so a resumed run
    continues each chain where it stopped; `editor` says what each attempt is asked to continue.
    """
    open_chains = []
    for problem in problems:
        for chain, length in enumerate(lengths):
            previous = done.get((problem.problem_id, chain), ())
            if len(previous) < length:
                open_chains.append((problem, chain, previous))
    requests = editor.requests([(problem, previous) for problem, _, previous in open_chains])
    return [(problem, chain, len(previous), request) for (problem, chain, previous), request in zip(open_chains, requests)]


def generate_round(generator: Generator, todo: Sequence[Todo], spec: SamplingSpec) -> list[Attempt]:
    """One attempt for every chain in `todo`, all in one generator call, graded. An attempt's text is
    the response prefix it was given followed by what the generator wrote."""
    completions = generator.generate([prompt for *_, (prompt, _, _) in todo], spec,
                                     prefixes=[prefix for *_, (_, prefix, _) in todo])
    out = []
    for (problem, chain, position, (_, prefix, read)), (c, *_) in zip(todo, completions):
        text = prefix + c.text
        answer, correct = grade(problem, text)
        out.append(Attempt(problem.problem_id, chain, position, text, answer, correct, c.prompt_tokens + read,
                           c.generated_tokens))
    return out


ATTEMPT_SCHEMA = pa.schema([
    ("attempt_id", pa.string()), ("chain_set_id", pa.string()), ("run_id", pa.string()),
    ("problem_id", pa.string()), ("chain", pa.int32()), ("position", pa.int32()), ("text", pa.string()),
    ("final_answer", pa.string()), ("correct", pa.bool_()), ("prompt_tokens", pa.int32()),
    ("generated_tokens", pa.int32()), ("flops", pa.float64()), ("created_at", pa.timestamp("us")),
])


def attempt_id(chain_set_id: str, problem_id: str, chain: int, position: int) -> str:
    return stable_hash(chain_set_id, problem_id, chain, position)


def attempts_table(attempts: Sequence[Attempt], chain_set_id: str, run_id: str, n_params: int) -> pa.Table:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [dict(attempt_id=attempt_id(chain_set_id, a.problem_id, a.chain, a.position), chain_set_id=chain_set_id,
                 run_id=run_id, problem_id=a.problem_id, chain=a.chain, position=a.position, text=a.text,
                 final_answer=a.answer, correct=a.correct, prompt_tokens=a.prompt_tokens,
                 generated_tokens=a.generated_tokens, flops=2.0 * n_params * (a.prompt_tokens + a.generated_tokens),
                 created_at=now) for a in attempts]
    return pa.Table.from_pylist(rows, schema=ATTEMPT_SCHEMA)


def stored_chains(wh: Warehouse, chain_set_id: str) -> dict[ChainKey, list[str]]:
    """Every chain's attempts already in the warehouse, in position order (what a resumed run continues)."""
    rows = wh.query("SELECT problem_id, chain, list(text ORDER BY position) AS texts FROM revision_attempts "
                    "WHERE chain_set_id = ? GROUP BY ALL", [chain_set_id]).to_pylist()
    return {(r["problem_id"], r["chain"]): r["texts"] for r in rows}


def extend_chains(generator: Generator, problems: Sequence[Problem], lengths: Sequence[int], editor: Editor,
                  spec: SamplingSpec, done: dict[ChainKey, list[str]], commit: Callable[[list[Attempt]], None],
                  on_round: Callable[[int, int], None] | None = None) -> int:
    """Grow every chain to its length, one round (one generator call) per position; returns rounds run.

    `commit` stores a round before the next starts, so a killed run loses at most one round.
    Each round gets its own seed: the same seed for every round would repeat draws on
    backends that honour seeds.
    """
    rounds = 0
    while todo := next_round(problems, lengths, done, editor):
        round_spec = SamplingSpec(n=1, temperature=spec.temperature, top_p=spec.top_p, max_tokens=spec.max_tokens,
                                  stop=spec.stop, seed=spec.seed * 1_009 + todo[0][2])
        attempts = generate_round(generator, todo, round_spec)
        commit(attempts)
        for a in attempts:
            done.setdefault((a.problem_id, a.chain), []).append(a.text)
        rounds += 1
        if on_round is not None:
            on_round(rounds, len(attempts))
    return rounds


def chain_set_key(purpose: str, model: Path, lengths: Sequence[int], window: int, spec: SamplingSpec,
                  backend: str, edit: str = "revise") -> str:
    """A chain set is one model's chains of these lengths, window, sampling and edit, for one purpose."""
    how = () if edit == "revise" else (edit,)  # the paper's revisions keep the keys they always had
    return stable_hash("chains", purpose, fingerprint(model), list(lengths), window, asdict(spec), backend, *how)


def chain_spec(config: PipelineConfig) -> SamplingSpec:
    chains = config.revisions.chains
    return SamplingSpec(n=1, temperature=chains.temperature, max_tokens=chains.max_tokens, seed=chains.seed)


def chain_model(config: PipelineConfig, wd: Workdir) -> Path:
    """The model that writes chains: the revision model, or the base model when chains restart."""
    if config.revisions.chains.uses_reviser:
        return reviser_dir(wd)
    return wd.require_model(config.generator.model)


def chain_editor(config: PipelineConfig, model: Path) -> Editor:
    """The configured editor (`revisions.chains.edit`) over the chain model."""
    if config.revisions.chains.edit == "restart":
        from ttscale.models.confidence import ConfidenceScorer

        scorer = ConfidenceScorer(model, config.scoring.batch_size, config.scoring.threads,
                                  chat_template=config.generator.chat_template)
        return RestartEditor(scorer, split_steps)
    room = ContextRoom(model)
    return ContextEditor(config.revisions.chains.window,
                         lambda prompt: room.fits(prompt, config.revisions.chains.max_tokens))


def run_chains(generator: Generator, editor: Editor, problems: Sequence[Problem], lengths: Sequence[int],
               spec: SamplingSpec, chain_set_id: str, run_id: str, wh: Warehouse, stage: str) -> int:
    """Grow every chain of the set to its length, committing each round; returns rounds run.
    What each attempt sees of its chain is the editor's to say (`chain_editor`)."""
    done = stored_chains(wh, chain_set_id)
    total = len(problems) * sum(lengths) - sum(len(v) for v in done.values())
    with tqdm(total=total, desc=stage, unit="attempt", disable=None, mininterval=1.0) as bar:
        def commit(attempts):
            with wh.transaction():
                wh.insert("revision_attempts", attempts_table(attempts, chain_set_id, run_id, generator.n_params))
            bar.update(len(attempts))

        return extend_chains(generator, problems, lengths, editor, spec, done, commit)
