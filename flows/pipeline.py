"""Flow `pipeline`: the whole job, one sub-flow per stage, each also deployable alone.

Stages read their inputs from the workdir (models, warehouse), so re-running the
pipeline after a crash or with a changed later stage redoes only what is missing.
"""

from __future__ import annotations

from prefect import flow

from configs.schema import PipelineConfig
from flows.label_steps import label_steps
from flows.sample_bank import sample_bank
from flows.score_bank import score_bank
from flows.search import search
from flows.train_base import train_base
from flows.train_prm import train_prm
from ttscale.workdir import DEFAULT_WORKDIR


@flow(name="pipeline", log_prints=True)
def pipeline(config: PipelineConfig = PipelineConfig(), workdir: str = DEFAULT_WORKDIR) -> dict[str, str]:
    """Base model, sample bank, step labels, PRM, scored bank with verifier curves, search curves."""
    out: dict[str, str] = {}
    if config.generator.model == "base":
        # 1. The embedded base model, trained from scratch and registered in MLflow.
        out["base_model"] = train_base(config, workdir)
    # 2. The sample bank: N graded candidates per test problem, pass@k curves.
    out["bank_id"] = sample_bank(config, workdir)
    # An external PRM (scoring.prm = a path or models:/NAME/VERSION) needs neither 3 nor 4.
    if config.scoring.prm == "trained":
        # 3. Monte-Carlo step labels on the train split: the PRM's training data.
        out["label_bank_id"] = label_steps(config, workdir)
        # 4. The PRM: the base model with a scalar head, trained on the soft labels.
        out["prm"] = train_prm(config, workdir)
    # 5. Score every bank candidate; accuracy vs N per selection rule and aggregation.
    out["scorer_id"] = score_bank(config, workdir)
    # 6. Search against the PRM: best-of-N, beam, lookahead, DVTS; accuracy vs budget.
    search(config, workdir)
    return out
