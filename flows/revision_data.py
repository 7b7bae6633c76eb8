"""Flow `revision-data`: many solutions per train problem, turned into revision trajectories.

The story: sample `revisions.data.samples` solutions for each of the first train
problems with the base model (chunk by chunk, each chunk one transaction, so a killed
run resumes); then, per problem, pair correct solutions with the incorrect ones
nearest to them by edit distance (tasks/revisions.py) and store the trajectories.
Trajectories are a pure function of the stored solutions and the settings, so
rebuilding them after a crash inserts nothing twice.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from collections import defaultdict

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig, RevisionDataConfig
from ttscale.flows.stage import stage_run, user_errors
from ttscale.models.generator import SamplingSpec, open_generator
from ttscale.tasks.problems import load_problems, train_problems
from ttscale.tasks import arith
from ttscale.tasks.revisions import Trajectory, slip_trajectories, trajectories, trajectories_table
from ttscale.tasks.sampling import pending, problems_table, sample_chunk, stable_hash
from ttscale.tasks.tracking import log_metrics
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint
from ttscale.warehouse.store import Warehouse

STAGE = "revision-data"
METHOD = "revision"  # candidates.method of these solutions: not part of any test-split bank


def data_spec(cfg: RevisionDataConfig) -> SamplingSpec:
    return SamplingSpec(n=cfg.samples, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)


def data_ids(base_fingerprint: str, cfg: RevisionDataConfig) -> tuple[str, str]:
    """(solutions bank id, trajectory set id): the second also depends on how trajectories are built."""
    bank = stable_hash(STAGE, base_fingerprint, asdict(data_spec(cfg)))
    built = (cfg.max_context, cfg.trajectories_per_problem, cfg.reference_targets, cfg.seed)
    # the default context leaves the ids of earlier runs as they were
    return bank, stable_hash(bank, *built, *(() if cfg.context == "samples" else (cfg.context,)))


@task(cache_policy=NO_CACHE)
def build_trajectories(rows: list[dict], cfg: RevisionDataConfig, questions: dict[str, str]) -> list[Trajectory]:
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_problem[r["problem_id"]].append(r)
    out: list[Trajectory] = []
    for problem_id, group in sorted(by_problem.items()):
        rng = random.Random(stable_hash(cfg.seed, problem_id))  # per problem: independent of chunking
        if cfg.context == "slips":
            question = questions[problem_id]
            out += slip_trajectories(problem_id, [r["text"] for r in group if r["correct"]],
                                     lambda text, r: arith.slipped(question, text, r), cfg.max_context,
                                     cfg.trajectories_per_problem, rng)
        else:
            out += trajectories(problem_id, [r["text"] for r in group], [r["correct"] for r in group],
                                cfg.max_context, cfg.trajectories_per_problem, rng)
    return out


@flow(name=STAGE, log_prints=True)
@user_errors
def revision_data(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Sample train solutions and store revision trajectories; returns the trajectory set id."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    cfg = config.revisions.data
    model_dir = wd.require_model(config.generator.model)
    bank, data_id = data_ids(fingerprint(model_dir), cfg)
    problems = train_problems(config, cfg.problems)
    spec = data_spec(cfg)
    run_id = stable_hash(STAGE, data_id, config.generator.backend)
    with Warehouse(wd.warehouse) as wh:
        wh.insert("problems", problems_table(load_problems(config.task)))
        todo = pending(wh, bank, problems, spec.n, method=METHOD)
        logger.info("revision data %s: %d of %d train problems to sample", data_id, len(todo), len(problems))
        if not todo and wh.is_finished(run_id):
            logger.info("revision trajectories already built")
            return data_id
        with stage_run(wh, wd, STAGE, run_id, config, {"revisions.data": cfg.model_dump()},
                       {"revision_data_id": data_id}) as ml_id:
            size = cfg.problems_per_chunk
            chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
            if chunks:
                with open_generator(config.generator, model_dir) as generator:
                    for chunk in tqdm(chunks, desc=STAGE, unit="chunk"):
                        cands, steps = sample_chunk(generator, chunk, spec, bank, run_id, config.generator.model,
                                                    method=METHOD)
                        with wh.transaction():
                            wh.insert("candidates", cands)
                            wh.insert("steps", steps)
            rows = wh.query("SELECT problem_id, text, correct FROM candidates WHERE bank_id = ? AND method = ? "
                            "ORDER BY problem_id, sample_index", [bank, METHOD]).to_pylist()
            if cfg.reference_targets:
                rows += [{"problem_id": p.problem_id, "text": p.meta["reference_solution"], "correct": True}
                         for p in problems if p.meta.get("reference_solution")]
            built = build_trajectories(rows, cfg, {p.problem_id: p.question for p in problems})
            wh.insert("revision_trajectories", trajectories_table(built, data_id))
            stats = wh.query(
                "SELECT count(*) AS trajectories, count(DISTINCT problem_id) AS problems, "
                "avg(len(context)) AS mean_context, avg((len(context) = 0)::INT) AS share_without_context, "
                "avg(list_avg(distances)) FILTER (WHERE len(context) > 0) AS mean_edit_distance "
                "FROM revision_trajectories WHERE data_id = ?", [data_id]).to_pylist()[0]
            solved = wh.query("SELECT avg(correct::INT) AS pass_at_1 FROM candidates WHERE bank_id = ?",
                              [bank]).to_pylist()[0]
            log_metrics(ml_id, [(f"revision_data_{k}", float(v or 0), 0) for k, v in {**stats, **solved}.items()])
    logger.info("revision data %s: %d trajectories on %d problems (mean context %.2f, %.0f%% without context; "
                "solutions pass@1 %.3f)", data_id, stats["trajectories"], stats["problems"], stats["mean_context"] or 0,
                100 * (stats["share_without_context"] or 0), solved["pass_at_1"] or 0)
    return data_id
