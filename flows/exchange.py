"""Flow `exchange`: is test-time compute on the small model worth more than a ~14x larger model?

The story: sample the larger embedded model (`train-large`, same data) once per test
problem, greedily, and grade it; bin the problems by pass@1 over half of each problem's
bank samples and score the small model on the other half (so a bin cannot flatter what
it is scored with); for each R = D_inference / D_pretrain, give the small model exactly
the number of samples that spends the same total FLOPs (tasks/exchange.py), once for the
generator alone and once charging the PRM's labeling, training and scoring; take the
cross-validated better of best-of-N weighted and majority per bin; store every problem's
outcome (`exchange_outcomes`) and the per-(R, bin) table with the winner by the paired
interval, and publish a plot. The findings report compares them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from prefect import flow, get_run_logger
from tqdm.auto import tqdm

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.flows.difficulty import difficulty_ids
from ttscale.tasks.selection import candidates_by_problem
from ttscale.models.scorers import resolve_prm
from ttscale.flows.stage import stage_run, user_errors
from ttscale.models.generator import SamplingSpec, open_generator
from ttscale.tasks.allocation import cross_validate
from ttscale.tasks.comparison import paired
from ttscale.tasks.difficulty import quantile_bins
from ttscale.tasks.exchange import matched_samples, members, per_problem_accuracy, split_bank, summary_row
from ttscale.tasks.reports.exchange import exchange_markdown, plot_exchange
from ttscale.tasks.problems import load_problems
from ttscale.tasks.sampling import bank_id, pending, problems_table, sample_chunk, stable_hash
from ttscale.tasks.tracking import log_metrics, publish_report
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint, read_record
from ttscale.warehouse.store import Warehouse

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


def verifier_cost(wh: Warehouse, wd: Workdir, config: PipelineConfig) -> tuple[float, float]:
    """(PRM parameters, the FLOPs its labels and training cost): what charging the verifier adds."""
    source = resolve_prm(config.scoring.prm, wd, config.generator, config.scoring.prm_format)
    record = source.record()
    labels = wh.query("SELECT coalesce(sum(flops), 0) AS flops FROM labeling_cost WHERE label_bank_id = ?",
                      [record.get("label_bank_id", "")]).to_pylist()[0]["flops"]
    params = float(record.get("n_params") or source.parameters())
    return params, float(labels) + float(record.get("train_flops", 0.0))


@flow(name=STAGE, log_prints=True)
@user_errors
def exchange(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Write the FLOPs-matched exchange table; returns its run id."""
    config = preset.resolve(config)
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
            # Bins from the first half of each problem's samples, accuracy from the other half: a bin read
            # from the very samples it is scored on would flatter test-time compute on the easy bins.
            halves = {p: split_bank(pc, cfg.bin_samples or len(pc.codes) // 2)
                      for p, (_, pc) in candidates_by_problem(wh, bank, scorer_id).items() if p in greedy}
            bins = quantile_bins({p: v for p, (v, _) in halves.items()}, config.difficulty.bins,
                                 config.difficulty.seed)
            available = min(len(pc.codes) for _, pc in halves.values())
            tokens = wh.query("SELECT avg(prompt_tokens + generated_tokens) FILTER (WHERE bank_id = ?) AS small, "
                              "avg(prompt_tokens + generated_tokens) FILTER (WHERE bank_id = ?) AS large "
                              "FROM candidates", [bank, greedy_bank]).to_pylist()[0]
            token_ratio = tokens["large"] / tokens["small"]
            verifier = verifier_cost(wh, wd, config)
            outcome_rows, rows = [], []
            for charged in (False, True):
                for ratio in cfg.ratios:
                    matched = matched_samples(small_params, large_params, ratio, token_ratio,
                                              *(verifier if charged else (0.0, 0.0)), small_tokens)
                    small = {rule: {p: per_problem_accuracy(pc, matched, rule, cfg.resamples, rng)
                                    for p, (_, pc) in halves.items()} for rule in ("weighted", "majority")}
                    # the better of the two per bin, chosen on one fold and scored on the other (as `allocate`)
                    cv = cross_validate({(rule, 1): v for rule, v in small.items()}, bins, "weighted",
                                        config.allocation.splits, config.allocation.seed)
                    small["optimal"] = {p: float(np.mean(cv.held_out[(1, p)])) for p in halves}
                    outcome_rows += [dict(run_id=run_id, ratio=ratio, verifier_charged=charged, problem_id=p,
                                          bin=bins[p], samples=matched, small=small["optimal"][p], large=greedy[p])
                                     for p in sorted(halves)]
                    if charged:
                        continue
                    for b, problems in members(sorted(halves), bins).items():
                        c = paired({p: [small["optimal"][p]] for p in problems}, {p: [greedy[p]] for p in problems},
                                   finding=6, claim="", a_name="small", b_name="large", seed=cfg.seed)
                        rows.append({**summary_row(ratio, b, matched, available, small, greedy, problems,
                                                   c.verdict), "run_id": run_id})
            with wh.transaction():
                wh.con.execute("DELETE FROM flops_exchange WHERE run_id = ?", [run_id])
                wh.con.execute("DELETE FROM exchange_outcomes WHERE run_id = ?", [run_id])
                wh.insert("flops_exchange", pa.Table.from_pylist(rows))
                wh.insert("exchange_outcomes", pa.Table.from_pylist(outcome_rows))
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
