"""Flow `sample-bank`: N graded candidates per problem into the warehouse, curves into MLflow.

The story: load the problems and store them; find which problems of this bank are
still incomplete; sample them chunk by chunk, each chunk committed in one transaction
(a killed run loses at most the chunk in flight, and never leaves half of one);
then compute pass@k, majority@k and the guessing baseline per level and publish them
to the warehouse, MLflow and the Prefect UI.
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
from ttscale.tasks.problems import Problem, load_problems
from ttscale.tasks.reports.bank import build_bank_report, plot_bank, unlearned_warning
from ttscale.tasks.sampling import bank_id, pending, problems_table, sample_chunk, sampling_spec, stable_hash
from ttscale.tasks.tracking import log_metrics, publish_report
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint
from ttscale.warehouse.store import Warehouse

STAGE = "sample-bank"


@task(cache_policy=NO_CACHE)
def sample_and_grade(generator: Generator, problems: Sequence[Problem], spec: SamplingSpec,
                     bank: str, run_id: str, model_name: str):  # -> (candidates, steps) Arrow tables
    return sample_chunk(generator, problems, spec, bank, run_id, model_name)


@flow(name=STAGE, log_prints=True)
@user_errors
def sample_bank(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Sample, grade and store the bank; returns its bank_id. Safe to re-run: finished problems are skipped."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    model_dir = wd.require_model(config.generator.model)
    problems = load_problems(config.task)
    split = [p for p in problems if p.split == config.bank.split]
    spec = sampling_spec(config.bank)
    bank = bank_id(fingerprint(model_dir), spec)
    run_id = stable_hash(STAGE, bank, config.generator.backend)

    if config.workers.to_shards:  # a worker: never opens the warehouse (one writer per file)
        return _sample_to_shards(config, wd, model_dir, split, spec, bank, run_id)

    with Warehouse(wd.warehouse) as wh:
        wh.insert("problems", problems_table(problems))
        todo = pending(wh, bank, split, spec.n)
        logger.info("bank %s: %d of %d problems to sample", bank, len(todo), len(split))
        if not todo and wh.is_finished(run_id):
            logger.info("nothing new to sample; the report is in the warehouse and MLflow")
            return bank
        with stage_run(wh, wd, STAGE, run_id, config, config.model_dump(mode="json"), {"bank_id": bank}) as ml_id:
            if todo:
                _sample_pending(wh, config, model_dir, todo, spec, bank, run_id)
            report = build_bank_report(wh, bank, config.report.majority_resamples, seed=config.bank.seed)
            wh.insert("metrics", report.metrics_table(run_id))
            log_metrics(ml_id, report.mlflow_metrics())
            plot = plot_bank(report, wd.reports / f"{STAGE}-{bank}.png")
            markdown = report.markdown(f"Sample bank {bank} ({config.name}, model {config.generator.model})")
            publish_report(wd.reports, f"{STAGE}-{bank}", markdown, plot, "sample-bank-report",
                           f"pass@k / majority@k / guessing for bank {bank}")
            if config.generator.model == "base" and (warning := unlearned_warning(
                    {lv: v for (m, lv, k), v in report.curves.items() if m == "pass" and k == 1}, "base")):
                logger.warning(warning)
    logger.info("bank %s complete: report at %s", bank, wd.reports)
    return bank


def _sample_pending(wh: Warehouse, config: PipelineConfig, model_dir: Path, todo: list[Problem],
                    spec: SamplingSpec, bank: str, run_id: str) -> None:
    size = config.bank.problems_per_chunk
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    with open_generator(config.generator, model_dir) as generator:
        for chunk in tqdm(chunks, desc="sample-bank", unit="chunk"):
            candidates, steps = sample_and_grade(generator, chunk, spec, bank, run_id, config.generator.model)
            with wh.transaction():
                wh.insert("candidates", candidates)
                wh.insert("steps", steps)


def _sample_to_shards(config: PipelineConfig, wd: Workdir, model_dir: Path, split: list[Problem],
                      spec: SamplingSpec, bank: str, run_id: str) -> str:
    """Sample this worker's share of the problems into Parquet chunk folders; skip chunks already written."""
    def produce(generator: Generator, chunk: list[Problem]) -> dict:
        candidates, steps = sample_and_grade(generator, chunk, spec, bank, run_id, config.generator.model)
        return {"candidates": candidates, "steps": steps}

    problems_to_shards(STAGE, bank, wd, config, model_dir, split, config.bank.problems_per_chunk, produce)
    return bank
