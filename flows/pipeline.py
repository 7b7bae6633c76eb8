"""Flow `pipeline`: the whole job, one sub-flow per stage, each also deployable alone.

Stages read their inputs from the workdir (models, warehouse), so re-running the
pipeline after a crash or with a changed later stage redoes only what is missing.
"""

from __future__ import annotations

from prefect import flow

from ttscale.configs.choice import PresetChoice
from ttscale.configs.schema import PipelineConfig
from ttscale.flows.allocate import allocate
from ttscale.flows.difficulty import difficulty
from ttscale.flows.exchange import exchange
from ttscale.flows.label_steps import label_steps
from ttscale.flows.report import report
from ttscale.flows.revise import revise
from ttscale.flows.revision_data import revision_data
from ttscale.flows.sample_bank import sample_bank
from ttscale.flows.score_bank import score_bank
from ttscale.flows.search import search
from ttscale.flows.stage import user_errors
from ttscale.flows.train_base import train_base, train_large
from ttscale.flows.train_orm import train_orm
from ttscale.flows.train_prm import train_prm
from ttscale.flows.train_reviser import train_reviser
from ttscale.models.generator import shared_engines
from ttscale.models.smollm import convert
from ttscale.preflight import preflight
from ttscale.workdir import DEFAULT_WORKDIR, Workdir


@flow(name="pipeline", log_prints=True)
@user_errors
def pipeline(preset: PresetChoice = PresetChoice(), config: PipelineConfig | None = None,
                 workdir: str = DEFAULT_WORKDIR) -> dict[str, str]:
    """Base model, bank, step labels, PRM, verifier curves, search, revisions, difficulty, allocation."""
    config = preset.resolve(config)
    # 0. The user's own errors (a bad problem file, a missing model) in seconds, before any model loads.
    for warning in preflight(config, workdir):
        print(f"warning: {warning}")
    out: dict[str, str] = {}
    # Stages that sample from the same model share one vLLM engine instead of each starting its own.
    with shared_engines():
        if config.generator.model == "base":
            # 1. The embedded base model, trained from scratch and registered in MLflow.
            out["base_model"] = train_base(config=config, workdir=workdir)
        elif config.generator.model == "smollm2":
            # 1. The shipped SmolLM2 GGUF, converted once into a folder both backends load.
            out["base_model"] = str(convert(Workdir.at(workdir).model_dir("smollm2")))
        # 2. The sample bank: N graded candidates per test problem, pass@k curves.
        out["bank_id"] = sample_bank(config=config, workdir=workdir)
        # An external PRM (scoring.prm = a path or models:/NAME/VERSION) or a scorer without training
        # (confidence, oracle, random) needs neither 3 nor 4, unless the trained PRM is a baseline beside it.
        if config.scores_with_large:  # a scorer reads the larger model (step 13's): train it before the PRM
            out["large_model"] = train_large(config=config, workdir=workdir)
        if "trained" in (config.scoring.prm, *config.scoring.baselines):
            # 3. Monte-Carlo step labels on the train split: the PRM's training data.
            out["label_bank_id"] = label_steps(config=config, workdir=workdir)
            # 4. The PRM: a scalar head on the base model (or on the larger one), trained on the soft labels.
            out["prm"] = train_prm(config=config, workdir=workdir)
        # 5. Score every bank candidate; accuracy vs N per selection rule and aggregation.
        out["scorer_id"] = score_bank(config=config, workdir=workdir)
        # 6. Search against the PRM: best-of-N, beam, lookahead, DVTS; accuracy vs budget.
        search(config=config, workdir=workdir)
        if config.generator.model == "base":
            if config.revisions.chains.uses_reviser:  # `restart` chains edit with the base model itself
                # 7. Revision data: train solutions, wrong ones before a right one (nearest by edit distance).
                out["revision_data_id"] = revision_data(config=config, workdir=workdir)
                # 8. The revision model, fine-tuned to write a correct attempt after wrong ones.
                out["reviser"] = train_reviser(config=config, workdir=workdir)
            # 9. The outcome verifier, trained on the chain model's own attempts.
            out["orm"] = train_orm(config=config, workdir=workdir)
            # 10. Revision chains on the test problems; accuracy over (budget N, chain length L).
            out["chain_set_id"] = revise(config=config, workdir=workdir)
        # 11. Difficulty: oracle bins (pass@1) and predicted bins (mean final-step PRM score).
        out["difficulty"] = difficulty(config=config, workdir=workdir)
        # 12. The compute-optimal policy per bin and budget, its gain over best-of-N, the global allocator.
        out["allocation"] = allocate(config=config, workdir=workdir)
        if config.large_model is not None and config.generator.model == "base":
            # 13. A larger embedded model on the same data, and the FLOPs-matched exchange against it.
            out["large_model"] = train_large(config=config, workdir=workdir)
            out["exchange"] = exchange(config=config, workdir=workdir)
        # 14. One report: each of the paper's six findings, reproduced, not reproduced or not measured.
        out["report"] = report(config=config, workdir=workdir)
    return out
