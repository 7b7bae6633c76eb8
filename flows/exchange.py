"""Flow `exchange`: is test-time compute on the small model worth more than a ~14x larger model?

The story: sample the larger embedded model (`train-large`, same data) once per test
problem, greedily, and grade it; for each R = D_inference / D_pretrain, give the small
model the number of samples that spends the same total FLOPs (tasks/exchange.py) and
read its best-of-N weighted and majority accuracy from the bank, per oracle difficulty
bin; store the table, state the winner per (R, bin), and publish a plot.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from prefect import flow, get_run_logger
from tqdm.auto import tqdm

from configs.schema import PipelineConfig
from flows.difficulty import difficulty_ids
from flows.sample_bank import sampling_spec
from flows.score_bank import candidates_by_problem
from flows.stage import stage_run
from models.generator import SamplingSpec, open_generator
from tasks.allocation import cross_validate
from tasks.exchange import by_bin, exchange_rows, members, per_problem_accuracy
from tasks.exchange_report import exchange_markdown, plot_exchange
from tasks.metrics import powers_of_two
from tasks.problems import load_problems
from tasks.sampling import bank_id, pending, problems_table, sample_chunk, stable_hash
from tasks.tracking import log_metrics, publish_report
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint, read_record
from warehouse.store import Warehouse

STAGE = "exchange"
METHOD = "greedy"


def trained_size(record: dict | None, name: str, wd: Workdir) -> tuple[float, float]:
    """(parameters, pretraining tokens) a training flow recorded next to the model, or in its MLflow run
    (models trained before the record kept the token count)."""
    if record and "train_tokens" not in record and record.get("mlflow_run_id"):
        from mlflow.tracking import MlflowClient

        metrics = MlflowClient(tracking_uri=wd.mlflow_uri).get_run(record["mlflow_run_id"]).data.metrics
        record = {**record, "train_tokens": metrics.get("train_tokens")} if "train_tokens" in metrics else record
    if not record or record.get("train_tokens") is None:
        raise ValueError(f"the {name} model has no training record with its token count: retrain it with "
                         f"`ttscale train-{name}`")
    return float(record["n_params"]), float(record["train_tokens"])


@flow(name=STAGE, log_prints=True)
def exchange(config: PipelineConfig = PipelineConfig(), workdir: str = DEFAULT_WORKDIR) -> str:
    """Write the FLOPs-matched exchange table; returns its run id."""
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    cfg = config.exchange
    small_dir = wd.require_model("base")
    large_dir = wd.models / "large"
    if not large_dir.is_dir():
        raise FileNotFoundError(f"no larger model at {large_dir}: run `ttscale train-large` (preset flops-matched)")
    small_params, small_tokens = trained_size(read_record(small_dir), "base", wd)
    large_params, large_tokens = trained_size(read_record(large_dir), "large", wd)
    bank, scorer_id = difficulty_ids(config, wd)
    spec = SamplingSpec(n=1, temperature=0.0, max_tokens=config.bank.max_tokens, seed=0)
    greedy_bank = bank_id(fingerprint(large_dir), spec)
    all_problems = load_problems(config.task)
    problems = [p for p in all_problems if p.split == "test"]
    run_id = stable_hash(STAGE, bank, scorer_id, greedy_bank, cfg.model_dump())
    with Warehouse(wd.warehouse) as wh:
        if wh.is_finished(run_id):
            logger.info("FLOPs-matched exchange %s already written", run_id)
            return run_id
        bins = {r["problem_id"]: r["bin"] for r in wh.query(
            "SELECT problem_id, bin FROM difficulty WHERE bank_id = ? AND kind = 'oracle'", [bank]).to_pylist()}
        if not bins:
            raise ValueError(f"no oracle difficulty bins for bank {bank}: run `ttscale difficulty` first")
        wh.insert("problems", problems_table(all_problems))
        with stage_run(wh, wd, STAGE, run_id, config, {"exchange": cfg.model_dump(), "large_params": large_params},
                       {"bank_id": bank, "greedy_bank_id": greedy_bank}) as ml_id:
            todo = pending(wh, greedy_bank, problems, 1, method=METHOD)
            if todo:
                size = config.bank.problems_per_chunk
                with open_generator(config.generator, large_dir) as generator:
                    for i in tqdm(range(0, len(todo), size), desc="greedy (large model)", unit="chunk"):
                        cands, steps = sample_chunk(generator, todo[i : i + size], spec, greedy_bank, run_id, "large",
                                                    method=METHOD)
                        with wh.transaction():
                            wh.insert("candidates", cands)
                            wh.insert("steps", steps)
            greedy = {r["problem_id"]: float(r["correct"]) for r in wh.query(
                "SELECT problem_id, correct FROM candidates WHERE bank_id = ?", [greedy_bank]).to_pylist()}
            rng = np.random.default_rng(cfg.seed)
            candidates = candidates_by_problem(wh, bank, scorer_id)
            outcomes = {(rule, n): {p: per_problem_accuracy(pc, n, rule, cfg.resamples, rng)
                                    for p, (_, pc) in candidates.items()}
                        for rule in ("weighted", "majority") for n in powers_of_two(config.bank.n)}
            small = {key: by_bin(per_problem, bins) for key, per_problem in outcomes.items()}
            # The compute-optimal choice between the stored strategies per bin, chosen on one fold of the
            # problems and scored on the other (as `allocate` does), so the small model gets no hindsight.
            cv = cross_validate(outcomes, bins, "weighted", config.allocation.splits, config.allocation.seed)
            for n in powers_of_two(config.bank.n):
                small[("optimal", n)] = {0: cv.accuracy[n], **{b: v for (b, m), v in cv.per_bin.items() if m == n}}
            tokens = wh.query("SELECT avg(prompt_tokens + generated_tokens) FILTER (WHERE bank_id = ?) AS small, "
                              "avg(prompt_tokens + generated_tokens) FILTER (WHERE bank_id = ?) AS large "
                              "FROM candidates", [bank, greedy_bank]).to_pylist()[0]
            token_ratio = tokens["large"] / tokens["small"]
            rows = exchange_rows(cfg.ratios, small_params, large_params, config.bank.n, small, by_bin(greedy, bins),
                                 token_ratio, {b: len(v) for b, v in members(greedy, bins).items()})
            with wh.transaction():
                wh.con.execute("DELETE FROM flops_exchange WHERE run_id = ?", [run_id])
                wh.insert("flops_exchange", pa.Table.from_pylist([{**r, "run_id": run_id} for r in rows]))
            log_metrics(ml_id, [(f"exchange/R{r['ratio']}/{key}" + ("" if r["bin"] == 0 else f"/bin_{r['bin']}"),
                                 float(r[key]), 0) for r in rows for key in ("small_weighted", "large_greedy")]
                        + [("small_params", small_params, 0), ("large_params", large_params, 0),
                           ("small_pretrain_tokens", small_tokens, 0), ("large_pretrain_tokens", large_tokens, 0),
                           ("tokens_per_small_sample", tokens["small"], 0),
                           ("tokens_per_large_answer", tokens["large"], 0)])
            plot = plot_exchange(rows, wd.reports / f"{STAGE}-{run_id}.png")
            publish_report(wd.reports, f"{STAGE}-{run_id}",
                           exchange_markdown(rows, small_params, large_params, small_tokens, large_tokens,
                                             token_ratio, f"FLOPs-matched exchange ({config.name})"),
                           plot, "flops-exchange", "small model + test-time compute vs a larger model, greedy")
    logger.info("FLOPs-matched exchange %s: report at %s", run_id, wd.reports)
    return run_id
