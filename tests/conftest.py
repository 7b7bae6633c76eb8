"""Shared fixtures: ONE real Prefect server (UI and scheduler on) per test session, and one smoke
workdir with a trained embedded model that the generator and flow tests reuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from servers import PREFECT, SCHEDULER_LOOP_S, free_port, start, stop, wait_for

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Prefect configures logging on the first import of its flow machinery, and its console handler
# keeps the sys.stderr of that moment. Where that first import happens inside typer's CliRunner
# (test_cli's fan-out test), the handler keeps the runner's stream, closed afterwards, and every
# later in-process flow fails to log (`pytest tests/test_cli.py tests/test_sigkill.py` showed it).
# Configuring it here, under pytest's own session-long stream, makes the order not matter.
from prefect.logging.configuration import setup_logging  # noqa: E402

setup_logging()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory) -> str:
    """ONE real `prefect server start` for the whole session: a temporary database, the UI, and
    the background services a user's server runs (the scheduler's loop shortened to SCHEDULER_LOOP_S so a
    schedule fires within a test). Every flow in the session runs against it, and its URL goes
    into the environment, so the CLI subprocesses tests start (deploys, workers, killed runs)
    talk to it instead of each starting an ephemeral server of their own. Yields the API URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": str(SCHEDULER_LOOP_S),
    }
    server = start([PREFECT, "server", "start"], env, home / "server.log")
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_for(f"{api}/health", float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]), server)
        before = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = api
        # No flow-run heartbeats in this process: each flow run's exit waits up to a second for its
        # heartbeat thread's sleep to end (a no-op smoke pipeline, 14 flow runs: 15.1 s with them,
        # 2.9 s without, 12-03), and the suite runs hundreds of flow runs. Heartbeats only let the
        # server mark a crashed run; no test here depends on that. Subprocesses (killed runs, workers)
        # keep Prefect's default.
        with temporary_settings(updates={PREFECT_API_URL: api, "flows.heartbeat_frequency": None}):
            yield api
            _drain_prefect_clients()
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before
    finally:
        stop(server)


def _drain_prefect_clients() -> None:
    """Flush this process's buffered logs and events before the server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    try:
        APILogWorker.drain_all(timeout=10)
    except RuntimeError:
        pass
    EventsWorker.drain_all(timeout=10)


@pytest.fixture(scope="session")
def smoke_config():
    from ttscale.configs import load_config

    return load_config("smoke")


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, prefect_server, smoke_config) -> Path:
    """A workdir whose base model was trained by the real `train-base` flow (smoke preset)."""
    from ttscale.flows.train_base import train_base

    workdir = tmp_path_factory.mktemp("trained")
    train_base(config=smoke_config, workdir=str(workdir))
    return workdir


@pytest.fixture(scope="session")
def base_model_dir(trained_workdir: Path) -> Path:
    return trained_workdir / "models" / "base"
