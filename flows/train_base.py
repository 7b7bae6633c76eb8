"""Flow `train-base`: train the embedded model from scratch and register it in MLflow.

Idempotent: the trained folder records a hash of the settings that shaped it, so a
re-run with the same task and model settings returns at once. Training writes to a
temporary folder that is renamed only when complete, so a killed run leaves no
half-written model behind.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from tqdm.auto import tqdm

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import BaseModelConfig, PipelineConfig, TaskConfig
from ttscale.flows.stage import user_errors
from ttscale.models import tiny
from ttscale.tasks import arith
from ttscale.tasks.reports.bank import LEARNED_BAR
from ttscale.tasks.sampling import stable_hash
from ttscale.tasks.tracking import log_config, log_metrics, register_model, set_tags
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, mlflow_run, staged_dir, trained_record, write_record

REGISTERED_NAME = "ttscale-base"


def training_key(task_cfg: TaskConfig, model_cfg: BaseModelConfig) -> str:
    return stable_hash("train-base", task_cfg.model_dump(mode="json"), model_cfg.model_dump(mode="json"))


@task(cache_policy=NO_CACHE)
def train_model(task_cfg: TaskConfig, model_cfg: BaseModelConfig, out_dir: Path, stage: str = "train-base",
                stop_above: tuple[int, float] | None = None) -> tiny.TrainResult:
    with tqdm(total=100, desc=stage, unit="%", mininterval=1.0,
              bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}") as bar:

        def progress(update: int, frac: float, loss: float) -> None:
            bar.set_postfix_str(f"update {update}, loss {loss:.3f}", refresh=False)
            bar.update(int(frac * 100) - bar.n)  # redraws at most once a second

        return tiny.train(model_cfg, arith.training_stream(task_cfg, model_cfg.seed), out_dir, progress, stop_above)


class TryLedger:
    """The tries of one training key that ended without a model to keep (gated, or checked and weak), in a
    JSON file beside the model folder, so a killed run resumes at the next seed instead of training those
    seeds again: with the same settings a seed trains the same model on the same machine. Removed once a
    model is kept."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        stored = json.loads(path.read_text()) if path.exists() else {}
        self.tries: list[dict] = stored.get("tries", []) if stored.get("key") == key else []

    def add(self, entry: dict) -> None:
        self.tries.append(entry)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": self.key, "tries": self.tries}))
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def log_try(run_id: str, attempt: int, measured: dict[str, float]) -> None:
    """One try's cost (and check) in MLflow, step = the try: from this run, or from the ledger of a killed one."""
    log_metrics(run_id, [(name, value, attempt) for name, value in measured.items()])


def train_until_learned(task_cfg: TaskConfig, model_cfg: BaseModelConfig, out_dir: Path, stage: str, run_id: str,
                        ledger: TryLedger) -> tuple[tiny.TrainResult, int]:
    """Train; with `restarts`, check the model and train again with the next seed while it has not learned.

    Whether a run's model learns the task is a draw (README, "The base model"), and a generator that
    answers nothing makes every later stage measure noise. The check samples level-1 train-split
    problems (never test ones) at T = 1, as the bank does; with `gate_update`, a try that is not the
    last stops there when its loss is still above `gate_loss` (a draw on the plateau, known at 70% of
    its cost) and is not checked. Each try is logged (MLflow `check_pass_at_1`, `try_train_seconds`,
    `try_updates` by try; a killed run's finished tries come from the ledger, logged again in the new
    run), so the compute a restart costs is on record. Returns the kept (last) try's result and the
    number of tries."""
    if not model_cfg.restarts:
        return train_model(task_cfg, model_cfg, out_dir, stage), 1
    logger = get_run_logger()
    check = [p for p in arith.make_split(task_cfg, "train") if p.level == 1][: model_cfg.check_problems]
    if len(check) < model_cfg.check_problems:
        raise ValueError(f"base_model.check_problems={model_cfg.check_problems} needs that many level-1 train "
                         f"problems; task.n_train={task_cfg.n_train} has {len(check)}")
    gate = (model_cfg.gate_update, model_cfg.gate_loss) if model_cfg.gate_update is not None else None
    for entry in ledger.tries:
        logger.info("seed %d was tried before this run was killed (%s): not trained again", entry["seed"],
                    entry["outcome"])
        log_try(run_id, entry["attempt"], entry["metrics"])
    for attempt in range(len(ledger.tries), model_cfg.restarts + 1):
        cfg = model_cfg.model_copy(update={"seed": model_cfg.seed + attempt})
        last = attempt == model_cfg.restarts
        result = train_model(task_cfg, cfg, out_dir, stage, None if last else gate)
        measured = {"try_train_seconds": result.seconds, "try_final_loss": result.final_loss,
                    "try_updates": result.updates}
        if result.stopped_by == "gate":
            log_try(run_id, attempt, measured)
            ledger.add({"attempt": attempt, "seed": cfg.seed, "outcome": "gated", "metrics": measured})
            logger.warning("seed %d is still on the plateau: loss %.3f at update %d, above the gate's %.3f; stopped "
                           "after %.0fs, training again with seed %d (restart %d of %d)", cfg.seed, result.final_loss,
                           result.updates, model_cfg.gate_loss, result.seconds, cfg.seed + 1, attempt + 1,
                           model_cfg.restarts)
            continue
        share = tiny.sampled_pass_at_1(out_dir, check, model_cfg.check_samples)[0]
        measured["check_pass_at_1"] = share
        log_try(run_id, attempt, measured)
        if share >= LEARNED_BAR:
            logger.info("seed %d learned the task: sampled pass@1 %.3f on %d level-1 train problems (bar %.1f)",
                        cfg.seed, share, len(check), LEARNED_BAR)
            return result, attempt + 1
        logger.warning("seed %d did not learn the task: sampled pass@1 %.3f on %d level-1 train problems, below %.1f; %s",
                       cfg.seed, share, len(check), LEARNED_BAR,
                       "no restarts left: keeping it (the bank and the findings report will say so)" if last
                       else f"training again with seed {cfg.seed + 1} (restart {attempt + 1} of {model_cfg.restarts})")
        if not last:
            ledger.add({"attempt": attempt, "seed": cfg.seed, "outcome": "weak", "metrics": measured})
    return result, model_cfg.restarts + 1


def train_embedded(config: PipelineConfig, wd: Workdir, name: str, model_cfg: BaseModelConfig, stage: str,
                   registered: str) -> Path:
    """Train one embedded model into models/<name> (skipped when an identical one is already there)."""
    logger = get_run_logger()
    if config.task.kind != "arith":
        raise ValueError(f"{stage} trains an embedded model on the embedded task (task.kind=arith)")
    out = wd.model_dir(name)
    key = training_key(config.task, model_cfg)
    if trained_record(out, key) is not None:
        logger.info("%s already trained with these settings: %s", name, out)
        return out

    ledger = TryLedger(out.with_name(out.name + ".tries.json"), key)
    with staged_dir(out) as tmp, mlflow_run(wd, stage, tags={"stage": stage, "preset": config.name}) as run_id:
        log_config(run_id, {"task": config.task.model_dump(mode="json"), "model": model_cfg.model_dump()})
        result, tries = train_until_learned(config.task, model_cfg, tmp, stage, run_id, ledger)
        log_metrics(
            run_id,
            [("train_loss", loss, step) for step, loss in result.losses]
            + [("n_params", result.n_params, 0), ("train_tokens", result.tokens, 0),
               ("train_seconds", result.seconds, 0), ("train_updates", result.updates, 0),
               ("train_tokens_per_s", result.tokens / max(result.seconds, 1e-9), 0),
               ("final_loss", result.final_loss, 0)],
        )
        set_tags(run_id, {"stopped_by": result.stopped_by})
        if result.stopped_by != "updates":
            logger.warning("training hit the %.0fs safety cap after %d of %d updates: this model differs from "
                           "a full run (raise train_seconds)", model_cfg.train_seconds, result.updates,
                           model_cfg.max_updates)
        version = register_model(run_id, tmp, name, registered)
        write_record(tmp, {"key": key, "mlflow_run_id": run_id, "registered": registered, "version": version,
                           "n_params": result.n_params, "train_tokens": result.tokens,
                           "stopped_by": result.stopped_by, "updates": result.updates,
                           "max_updates": model_cfg.max_updates, "train_seconds_cap": model_cfg.train_seconds,
                           "seed": model_cfg.seed + tries - 1, "tries": tries})
    ledger.clear()  # the model is in place: a later run with these settings skips training altogether
    logger.info(
        "trained %d params for %.0fs (%d updates, %.0f tokens/s), loss %.3f; registered %s v%d",
        result.n_params, result.seconds, result.updates, result.tokens / result.seconds, result.final_loss,
        registered, version,
    )
    return out


@flow(name="train-base", log_prints=True)
@user_errors
def train_base(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Train the embedded base model (skipped when an identical one is already trained)."""
    config = preset.resolve(config)
    return str(train_embedded(config, Workdir.at(workdir), "base", config.base_model, "train-base", REGISTERED_NAME))


@flow(name="train-large", log_prints=True)
@user_errors
def train_large(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Train the larger embedded model of the FLOPs-matched comparison (config.large_model) on the same data."""
    config = preset.resolve(config)
    if config.large_model is None:
        raise ValueError("train-large needs config.large_model (see the flops-matched preset)")
    return str(train_embedded(config, Workdir.at(workdir), "large", config.large_model, "train-large",
                              "ttscale-large"))
