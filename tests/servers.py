"""Real servers for tests: started as a user starts them (their own CLI, their own process group),
awaited on their health URL, stopped with everything they spawned. Shared by the session's Prefect
server (conftest), the worker and MLflow UI of the browser tests, and the deployment tests' CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).with_name("prefect"))  # the CLI of the venv running the tests

# How often the session server's scheduler and the browser tests' worker touch the server. Both
# write to its SQLite database; at 2 s each the writes collided often enough that a form's
# create-run request failed with "database is locked" (a Prefect-on-SQLite limit, seen in a full
# suite on 2026-12-03), so both run at 5 s: still short enough for a schedule to fire in a test.
SCHEDULER_LOOP_S = 5
WORKER_POLL_S = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A long-running command in its own session (so `stop` reaches its children), output to `log`."""
    with log.open("w") as out:
        process = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    process.log = log  # type: ignore[attr-defined]
    return process


def tail(process: subprocess.Popen, chars: int = 3000) -> str:
    return process.log.read_text()[-chars:]  # type: ignore[attr-defined]


def wait_for(url: str, timeout_s: float, process: subprocess.Popen) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it dies or never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{tail(process)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s:\n{tail(process)}")


def stop(process: subprocess.Popen, grace_s: float = 5) -> None:
    """Stop a process started by `start`, children included (uvicorn, a worker's flow runs): SIGTERM,
    then SIGKILL after `grace_s`. (`mlflow ui` outlived a 30 s grace after the browser tests in every
    suite of 2026-12-03, adding half a minute; these servers hold nothing a test reads afterwards.)"""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def cli(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    """A CLI command run from the repository root that must succeed (its output in the failure)."""
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return done


def ensure_pool(name: str, env: dict[str, str]) -> None:
    """The process work pool `name` on the server at $PREFECT_API_URL, created as the README does."""
    if httpx.get(f"{env['PREFECT_API_URL']}/work_pools/{name}").status_code == 404:
        cli([PREFECT, "work-pool", "create", name, "--type", "process"], env)
