"""Flow `train-prm`: fine-tune the base model into a PRM on the Monte-Carlo step labels.

The story: read the labeled solutions from the warehouse; train with binary
cross-entropy on the soft labels (a token classifier, or with `prm.mode: surprise` a head
over the frozen generator's surprise; early stopping on problems held out whole);
measure step AUC and calibration on those held-out problems; save safetensors and
register the PRM in MLflow as `ttscale-prm`. Re-running with the same labels and
settings returns the trained PRM at once.
"""

from __future__ import annotations


import mlflow
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.tasks.labeling import label_bank_id
from ttscale.flows.stage import fit, stage_run, user_errors
from ttscale.models.prm_train import LabeledSolution
from ttscale.tasks.problems import load_problems
from ttscale.tasks.sampling import prompt_for, stable_hash
from ttscale.tasks.tracking import log_metrics, register_model
from ttscale.tasks.reports.verifier import plot_calibration, quality
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint, staged_dir, trained_record, write_record
from ttscale.warehouse.store import Warehouse

STAGE = "train-prm"
REGISTERED_NAME = "ttscale-prm"


def labeled_solutions(wh: Warehouse, config: PipelineConfig, label_bank: str) -> list[LabeledSolution]:
    """Every labeled solution of the label bank, its steps and their soft labels, in step order."""
    rows = wh.query(
        """SELECT c.problem_id, list(s.text ORDER BY s.step_index) AS steps,
                  list(l.label ORDER BY l.step_index) AS labels
           FROM candidates c
           JOIN steps s USING (candidate_id)
           JOIN step_labels l ON l.candidate_id = s.candidate_id AND l.step_index = s.step_index
           WHERE c.bank_id = ? GROUP BY c.candidate_id, c.problem_id ORDER BY c.candidate_id""",
        [label_bank],
    ).to_pylist()
    by_id = {p.problem_id: p for p in load_problems(config.task)}
    return [LabeledSolution(r["problem_id"], prompt_for(by_id[r["problem_id"]]), r["steps"], r["labels"])
            for r in rows if r["problem_id"] in by_id]


@flow(name=STAGE, log_prints=True)
@user_errors
def train_prm(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Train (or find already trained) the PRM for this workdir's labels; returns its folder."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    # The labels are the generator's rollouts; the PRM is built on the generator or on the larger model.
    generator_fingerprint = fingerprint(wd.require_model(config.generator.model))
    base_dir = wd.require_model(config.generator.model if config.prm.backbone == "generator" else "large")
    label_bank = label_bank_id(generator_fingerprint, config.labels)
    out = wd.models / "prm"
    key = stable_hash(STAGE, label_bank, config.prm.model_dump(), fingerprint(base_dir))
    if trained_record(out, key) is not None:
        logger.info("PRM already trained on labels %s with these settings: %s", label_bank, out)
        return str(out)

    with Warehouse(wd.warehouse) as wh:
        solutions = labeled_solutions(wh, config, label_bank)
        if not solutions:
            raise ValueError(f"no step labels for label bank {label_bank}: run `ttscale label-steps` first")
        run_id = stable_hash(STAGE, key)
        with staged_dir(out) as tmp, stage_run(wh, wd, STAGE, run_id, config,
                                               {"prm": config.prm.model_dump(), "label_bank_id": label_bank,
                                                "solutions": len(solutions)}, {"label_bank_id": label_bank}) as ml_id:
            result = fit(config.prm, base_dir, solutions, tmp)
            q = quality(result.val_predictions, result.val_labels)
            log_metrics(ml_id, [(f"prm_{name}_loss", v, e + 1) for name, losses in
                                (("train", result.train_loss), ("val", result.val_loss)) for e, v in enumerate(losses)]
                        + [(k, v, 0) for k, v in q.metrics()]
                        + [("prm_epochs", result.epochs, 0), ("prm_best_epoch", result.best_epoch, 0),
                           ("prm_trainable_params", result.trainable_params, 0), ("prm_train_tokens", result.tokens, 0),
                           ("prm_train_flops", 6.0 * result.trainable_params * result.tokens, 0)])
            plot = plot_calibration(q, wd.reports / f"{STAGE}-calibration.png")
            mlflow.log_artifact(str(plot), "report")
            version = register_model(ml_id, tmp, "prm", REGISTERED_NAME)
            write_record(tmp, {"key": key, "mlflow_run_id": ml_id, "registered": REGISTERED_NAME,
                               "version": version, "label_bank_id": label_bank, "warehouse_run_id": run_id,
                               # what the verifier cost to train, for the FLOPs-matched exchange's charged side
                               "n_params": result.n_params, "train_tokens": result.tokens,
                               "train_flops": 6.0 * result.n_params * result.tokens})
            wh.insert("metrics", q.metrics_table(run_id))
    summary = (f"PRM ({config.prm.mode}) on {len(solutions)} labeled solutions: {result.epochs} epochs "
               f"(best {result.best_epoch}), held-out step AUC {q.auc:.3f}, ECE {q.ece:.3f}, Brier {q.brier:.3f}; "
               f"registered {REGISTERED_NAME} v{version}")
    create_markdown_artifact(f"## {STAGE}\n\n{summary}\n\n![calibration]({plot.as_uri()})\n", key="train-prm-report",
                             description="PRM quality on held-out problems")
    logger.info(summary)
    return str(out)

