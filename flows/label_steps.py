"""Flow `label-steps`: Monte-Carlo step labels on the train split, for the PRM.

The story: take the first `labels.problems` train problems; find those not yet
labeled; for each chunk, sample K solutions and R rollouts from every step prefix
(two generator calls per chunk) and commit the solutions, their steps and their
labels in one transaction. Labeling compute (samples, tokens, FLOPs) is stored with
the labels, since it is part of what the PRM costs. With `workers.output: shards` a
worker on another machine labels its share of the problems into Parquet chunk folders
instead, for `load-shards`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.flows.stage import problems_to_shards, stage_run, user_errors
from ttscale.models.generator import Generator, SamplingSpec, open_generator
from ttscale.tasks.labeling import METHOD, label_bank_id, label_spec, label_chunk
from ttscale.tasks.problems import Problem, load_problems
from ttscale.tasks.sampling import pending, problems_table, stable_hash
from ttscale.tasks.tracking import log_metrics
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint
from ttscale.warehouse.store import Warehouse

STAGE = "label-steps"


def label_problems(config: PipelineConfig, problems: Sequence[Problem]) -> list[Problem]:
    train = [p for p in problems if p.split == "train"]
    if not train:
        raise ValueError("label-steps needs train-split problems: set task.n_train > 0")
    return train[: config.labels.problems]


@task(cache_policy=NO_CACHE)
def label_and_grade(generator: Generator, problems: Sequence[Problem], spec: SamplingSpec, rollouts: int,
                    bank: str, run_id: str, model_name: str):  # -> (candidates, steps, step_labels)
    return label_chunk(generator, problems, spec, rollouts, bank, run_id, model_name)


@flow(name=STAGE, log_prints=True)
@user_errors
def label_steps(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Label steps of sampled train solutions by rollouts; returns the label bank id. Safe to re-run."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    model_dir = wd.require_model(config.generator.model)
    all_problems = load_problems(config.task)
    problems = label_problems(config, all_problems)
    spec = label_spec(config.labels)
    bank = label_bank_id(fingerprint(model_dir), config.labels)
    run_id = stable_hash(STAGE, bank, config.generator.backend)
    if config.workers.to_shards:  # a worker: never opens the warehouse (one writer per file)
        return _label_to_shards(config, wd, model_dir, problems, spec, bank, run_id)
    with Warehouse(wd.warehouse) as wh:
        wh.insert("problems", problems_table(all_problems))
        todo = pending(wh, bank, problems, spec.n, method=METHOD)
        logger.info("labels %s: %d of %d train problems to label", bank, len(todo), len(problems))
        if not todo and wh.is_finished(run_id):
            logger.info("nothing new to label")
            return bank
        with stage_run(wh, wd, STAGE, run_id, config,
                       {"labels": config.labels.model_dump(), "generator": config.generator.model_dump()},
                       {"label_bank_id": bank}) as ml_id:
            size = config.labels.problems_per_chunk
            chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
            if chunks:
                with open_generator(config.generator, model_dir) as generator:
                    for chunk in tqdm(chunks, desc=STAGE, unit="chunk"):
                        cands, steps, labels = label_and_grade(generator, chunk, spec, config.labels.rollouts,
                                                               bank, run_id, config.generator.model)
                        with wh.transaction():
                            wh.insert("candidates", cands)
                            wh.insert("steps", steps)
                            wh.insert("step_labels", labels)
            cost = wh.query(
                "SELECT count(*) AS problems, sum(samples) AS samples, sum(rollouts) AS rollouts, "
                "sum(tokens) AS tokens, sum(flops) AS flops FROM labeling_cost WHERE label_bank_id = ?", [bank]
            ).to_pylist()[0]
            summary = wh.query(
                "SELECT count(*) AS steps, avg(label) AS mean_label, avg((label = 0)::INT) AS zero_share, "
                "avg((label = 1)::INT) AS one_share FROM step_labels l JOIN candidates c USING (candidate_id) "
                "WHERE c.bank_id = ?", [bank]).to_pylist()[0]
            per_problem = {f"labeling_{k}_per_problem": float(cost[k] or 0) / max(1, cost["problems"])
                           for k in ("samples", "rollouts", "tokens", "flops")}
            log_metrics(ml_id, [(k, float(v or 0), 0) for k, v in {**cost, **summary, **per_problem}.items()])
    logger.info("labels %s: %d steps (mean label %.3f); per problem %.0f rollouts, %.0f tokens, %.3g FLOPs",
                bank, summary["steps"], summary["mean_label"] or 0, per_problem["labeling_rollouts_per_problem"],
                per_problem["labeling_tokens_per_problem"], per_problem["labeling_flops_per_problem"])
    return bank


def _label_to_shards(config: PipelineConfig, wd: Workdir, model_dir: Path, problems: list[Problem],
                     spec: SamplingSpec, bank: str, run_id: str) -> str:
    """Label this worker's share of the problems into Parquet chunk folders; skip chunks already written."""
    def produce(generator: Generator, chunk: list[Problem]) -> dict:
        cands, steps, labels = label_and_grade(generator, chunk, spec, config.labels.rollouts, bank, run_id,
                                               config.generator.model)
        return {"candidates": cands, "steps": steps, "step_labels": labels}

    problems_to_shards(STAGE, bank, wd, config, model_dir, problems, config.labels.problems_per_chunk, produce)
    return bank
