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
    """A real Prefect API server (temporary database) for every flow run in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def smoke_config():
    from configs import load_config

    return load_config("smoke")


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, prefect_server, smoke_config) -> Path:
    """A workdir whose base model was trained by the real `train-base` flow (smoke preset)."""
    from flows.train_base import train_base

    workdir = tmp_path_factory.mktemp("trained")
    train_base(config=smoke_config, workdir=str(workdir))
    return workdir


@pytest.fixture(scope="session")
def base_model_dir(trained_workdir: Path) -> Path:
    return trained_workdir / "models" / "base"
