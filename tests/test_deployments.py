"""The production path a user follows: deploy from deployments/prefect.yaml to a real Prefect
server, trigger a run by the deployment's name with edited parameters, and let a real
`prefect worker start --run-once` on a process pool execute it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
from servers import PREFECT, REPO, cli, ensure_pool


def test_deploy_trigger_by_name_and_run_on_a_worker(prefect_server, trained_workdir: Path, smoke_config, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "TTSCALE_REPO": str(REPO),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    ensure_pool("cpu", env)
    cli([sys.executable, "-m", "ttscale.cli", "deploy", "sample-bank-cpu", "--preset", "smoke"], env)

    async def deployed_parameters() -> dict:
        async with get_client() as client:
            return (await client.read_deployment_by_name("sample-bank/sample-bank-cpu")).parameters

    import asyncio

    # the form opens on the short way: the preset, and nothing else filled in
    assert asyncio.run(deployed_parameters()) == {"preset": {"name": "smoke"}}

    workdir = tmp_path / "deployed"
    shutil.copytree(trained_workdir / "models" / "base", workdir / "models" / "base")
    # the server enforces the form's schema: a negative N starts nothing
    refused = subprocess.run([PREFECT, "deployment", "run", "sample-bank/sample-bank-cpu", "--params",
                              json.dumps({"preset": {"name": "smoke", "n": -1}, "workdir": str(workdir)})],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "Created flow run" not in refused.stdout
    params = {"preset": {"name": "smoke", "n": 3}, "workdir": str(workdir)}
    triggered = cli([PREFECT, "deployment", "run", "sample-bank/sample-bank-cpu", "--params", json.dumps(params)], env)
    assert "Created flow run" in triggered.stdout
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", triggered.stdout).group(1)

    cli([PREFECT, "worker", "start", "--pool", "cpu", "--run-once"], env, timeout=600)

    async def state() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(run_id)).state.type.value

    assert asyncio.run(state()) == "COMPLETED"
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        n = con.execute("SELECT count(*) FROM candidates WHERE budget = 3").fetchall()[0][0]
    assert n == 3 * smoke_config.task.n_test  # the edited field of the form reached the run


def test_every_deployment_points_at_a_flow_whose_parameters_render_as_forms():
    """Each entrypoint of deployments/prefect.yaml imports, is a Prefect flow, and takes the pydantic config,
    whose JSON schema (what the UI draws as a form) has every stage's section."""
    import importlib

    import yaml
    from prefect import Flow
    from prefect.utilities.callables import parameter_schema

    from ttscale.configs.schema import PipelineConfig

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    names = [d["name"] for d in spec["deployments"]]
    assert len(names) == len(set(names))
    for deployment in spec["deployments"]:
        path, name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module("ttscale." + path.removesuffix(".py").replace("/", ".")), name)
        assert isinstance(flow, Flow), deployment["name"]
        schema = parameter_schema(flow.fn).model_dump()
        fields = [f for f in schema["properties"] if f != "stage"]
        assert fields[:3] == ["preset", "config", "workdir"], deployment["name"]  # the short way first
        # the parameters it ships are a valid config (a renamed or removed key fails here, not on a worker)
        PipelineConfig.model_validate(deployment.get("parameters", {}).get("config", {}))
    config_schema = schema["definitions"]["PipelineConfig"]["properties"]
    assert {"revisions", "difficulty", "allocation", "exchange", "solve", "large_model"} <= set(config_schema)
