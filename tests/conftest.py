"""Shared fixtures: ONE real temporary Prefect server per test session, and one smoke workdir
with a trained embedded model that the generator and flow tests reuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API server (temporary database) for every flow run in the session.

    Its URL goes into the environment too, so the CLI subprocesses that tests start (workers,
    killed runs) talk to this server instead of each starting an ephemeral one of their own
    (about 13 s each on 2 cores, and more than one server per session)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        before = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
        yield
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


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
