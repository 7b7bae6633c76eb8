"""Flow `train-orm`: the outcome verifier, trained on the revision model's own attempts.

The story: run revision chains on train problems with the revision model (one
generator call per round, each round one transaction, so a killed run resumes where
it stopped); label every attempt by whether its final answer is right; fine-tune the
base model with a scalar head read at the attempt's last token (the PRM's trainer with
one "step" per attempt); measure AUC and calibration on held-out problems; register
`ttscale-orm`. The ORM sees the problem and one attempt, never the revision context,
so it can rank attempts from any chain position.
"""

from __future__ import annotations


from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.tasks.problems import train_problems
from ttscale.flows.stage import stage_run, user_errors
from ttscale.flows.stage import fit
from ttscale.models.generator import open_generator
from ttscale.models.prm_train import LabeledSolution
from ttscale.tasks.sampling import prompt_for, stable_hash
from ttscale.tasks.tracking import log_metrics, register_model
from ttscale.tasks.reports.verifier import quality
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint, staged_dir, trained_record, write_record
from ttscale.warehouse.store import Warehouse
from ttscale.tasks.revisions import chain_editor, chain_model, chain_set_key, chain_spec, run_chains

# A Prefect task, so each call shows in the flow run's graph.
run_chains_task = task(run_chains, name="run-chains", cache_policy=NO_CACHE)

STAGE = "train-orm"
REGISTERED_NAME = "ttscale-orm"


@flow(name=STAGE, log_prints=True)
@user_errors
def train_orm(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Train (or find already trained) the ORM on the revision model's attempts; returns its folder."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    base_dir = wd.require_model(config.generator.model)
    model = chain_model(config, wd)  # the model whose attempts the ORM will verify
    cfg = config.revisions.orm
    spec = chain_spec(config)
    lengths = [cfg.length] * cfg.chains
    chain_set_id = chain_set_key("orm", model, lengths, config.revisions.chains.window, spec,
                                 config.generator.backend, config.revisions.chains.edit)
    # problems the reviser was never fine-tuned on: its attempts there look like its attempts at test time
    problems = train_problems(config, cfg.problems, skip=config.revisions.data.problems)
    out = wd.models / "orm"
    key = stable_hash(STAGE, chain_set_id, [p.problem_id for p in problems], cfg.training.model_dump(),
                      fingerprint(base_dir))
    if trained_record(out, key) is not None:
        logger.info("ORM already trained on chain set %s with these settings: %s", chain_set_id, out)
        return str(out)
    run_id = stable_hash(STAGE, key)
    with Warehouse(wd.warehouse) as wh, staged_dir(out) as tmp, stage_run(
            wh, wd, STAGE, run_id, config, {"revisions.orm": cfg.model_dump(), "chain_set_id": chain_set_id},
            {"chain_set_id": chain_set_id}) as ml_id:
        with open_generator(config.generator, model) as generator:
            run_chains_task(generator, chain_editor(config, model), problems, lengths, spec, chain_set_id, run_id,
                            wh, STAGE)
        by_id = {p.problem_id: p for p in problems}
        rows = wh.query("SELECT problem_id, text, correct FROM revision_attempts WHERE chain_set_id = ? "
                        "ORDER BY attempt_id", [chain_set_id]).to_pylist()
        solutions = [LabeledSolution(r["problem_id"], prompt_for(by_id[r["problem_id"]]), [r["text"]],
                                     [float(r["correct"])]) for r in rows if r["problem_id"] in by_id]
        result = fit(cfg.training, base_dir, solutions, tmp, name="orm")
        q = quality(result.val_predictions, result.val_labels)
        accuracy = sum(s.labels[0] for s in solutions) / max(1, len(solutions))
        log_metrics(ml_id, [(f"orm_{name}_loss", v, e + 1) for name, losses in
                            (("train", result.train_loss), ("val", result.val_loss)) for e, v in enumerate(losses)]
                    + [(k.replace("prm_step_", "orm_").replace("prm_", "orm_"), v, 0) for k, v in q.metrics()]
                    + [("orm_attempts", len(solutions), 0), ("orm_attempt_accuracy", accuracy, 0)])
        version = register_model(ml_id, tmp, "orm", REGISTERED_NAME)
        write_record(tmp, {"key": key, "mlflow_run_id": ml_id, "registered": REGISTERED_NAME, "version": version,
                           "chain_set_id": chain_set_id, "warehouse_run_id": run_id})
    summary = (f"ORM on {len(solutions)} attempts of the revision model ({accuracy:.1%} correct): {result.epochs} "
               f"epochs (best {result.best_epoch}), held-out AUC {q.auc:.3f}, ECE {q.ece:.3f}, Brier {q.brier:.3f}; "
               f"registered {REGISTERED_NAME} v{version}")
    create_markdown_artifact(f"## {STAGE}\n\n{summary}\n", key="train-orm-report", description="ORM quality")
    logger.info(summary)
    return str(out)
