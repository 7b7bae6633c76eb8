"""Flow `difficulty`: oracle and predicted difficulty bins for the bank's problems.

The story: the oracle is each problem's pass@1 over the whole bank (it needs the
reference answers); the prediction is the mean final-step PRM score of the first
`difficulty.samples` candidates (it needs none). Both become quantile bins (bin 1
easiest) in the `difficulty` table with what estimating them cost; the report says how
often the two agree. Derived data: rewritten whole on each run, in one transaction.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.tasks.sampling import sampling_spec
from ttscale.models.scorers import resolve_prm, scorer_key
from ttscale.flows.stage import stage_run, user_errors
from ttscale.tasks.difficulty import agreement, difficulty_table
from ttscale.tasks.sampling import bank_id, stable_hash
from ttscale.tasks.tracking import log_metrics
from ttscale.workdir import DEFAULT_WORKDIR, Workdir, fingerprint
from ttscale.warehouse.store import Warehouse

STAGE = "difficulty"


def difficulty_ids(config: PipelineConfig, wd: Workdir) -> tuple[str, str]:
    """(bank id, scorer id) the difficulty of this config is estimated from."""
    bank = bank_id(fingerprint(wd.require_model(config.generator.model)), sampling_spec(config.bank))
    return bank, scorer_key(resolve_prm(config.scoring.prm, wd, config.generator, config.scoring.prm_format), config.scoring.step_separator)


@flow(name=STAGE, log_prints=True)
@user_errors
def difficulty(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> str:
    """Write oracle and predicted bins; returns the scorer id the predicted bins come from."""
    config = preset.resolve(config)
    logger = get_run_logger()
    wd = Workdir.at(workdir)
    cfg = config.difficulty
    bank, scorer_id = difficulty_ids(config, wd)
    prm_params = resolve_prm(config.scoring.prm, wd, config.generator, config.scoring.prm_format).parameters()
    run_id = stable_hash(STAGE, bank, scorer_id, cfg.model_dump())
    with Warehouse(wd.warehouse) as wh:
        if wh.is_finished(run_id):
            logger.info("difficulty bins for bank %s already written", bank)
            return scorer_id
        oracle = wh.query(
            "SELECT problem_id, avg(correct::INT) AS value, count(*) AS samples, "
            "sum(prompt_tokens + generated_tokens) AS tokens, sum(flops) AS flops "
            "FROM candidates WHERE bank_id = ? GROUP BY problem_id ORDER BY problem_id", [bank]).to_pylist()
        if not oracle:
            raise ValueError(f"bank {bank} is empty: run `ttscale sample-bank` first")
        predicted = wh.query(
            "SELECT c.problem_id, avg(s.last) AS value, count(*) AS samples, "
            "sum(c.prompt_tokens + c.generated_tokens + s.scored_tokens) AS tokens, "
            "sum(c.flops + 2.0 * ? * s.scored_tokens) AS flops "
            "FROM candidates c JOIN candidate_scores s USING (candidate_id) "
            "WHERE c.bank_id = ? AND s.scorer_id = ? AND c.sample_index < ? GROUP BY c.problem_id ORDER BY 1",
            [prm_params, bank, scorer_id, cfg.samples]).to_pylist()
        if not predicted:
            raise ValueError(f"no PRM scores of bank {bank} by scorer {scorer_id}: run `ttscale score-bank` first")
        with stage_run(wh, wd, STAGE, run_id, config, {"difficulty": cfg.model_dump()},
                       {"bank_id": bank, "scorer_id": scorer_id}) as ml_id:
            with wh.transaction():
                wh.con.execute("DELETE FROM difficulty WHERE bank_id = ? AND scorer_id IN ('-', ?)", [bank, scorer_id])
                wh.insert("difficulty", difficulty_table(oracle, "oracle", cfg.bins, bank, "-", run_id, cfg.seed))
                wh.insert("difficulty", difficulty_table(predicted, "predicted", cfg.bins, bank, scorer_id, run_id,
                                                         cfg.seed))
            agree = agreement({r["problem_id"]: r["value"] for r in oracle},
                              {r["problem_id"]: r["value"] for r in predicted}, cfg.bins, cfg.seed)
            cost = {kind: sum(r["flops"] for r in rows) / len(rows) for kind, rows in
                    (("oracle", oracle), ("predicted", predicted))}
            log_metrics(ml_id, [("difficulty_bins_exact_agreement", agree.exact, 0),
                                ("difficulty_bins_within_one", agree.within_one, 0),
                                ("difficulty_spearman", agree.spearman, 0),
                                ("difficulty_oracle_flops_per_problem", cost["oracle"], 0),
                                ("difficulty_predicted_flops_per_problem", cost["predicted"], 0)])
    logger.info("difficulty: predicted bins agree with oracle bins on %.0f%% of %d problems (%.0f%% within one bin, "
                "Spearman %.2f); estimating costs %.3g FLOPs per problem (%d samples + PRM) vs %.3g for the oracle",
                100 * agree.exact, agree.problems, 100 * agree.within_one, agree.spearman, cost["predicted"],
                cfg.samples, cost["oracle"])
    return scorer_id
