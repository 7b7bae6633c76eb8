"""The interfaces as a person meets them: the Prefect UI's Custom run form and the MLflow UI in a
real Chromium (Playwright), and a schedule that fires on a real server with a real worker.

Chromium is Debian's (`apt-get install -y chromium`, done by `.ci/install` as root), never a
downloaded one. Under CI=true a missing browser fails these tests; elsewhere they skip and say how
to get one. Every test saves screenshots under its tmp dir; with TTSCALE_SCREENSHOTS=DIR set they
are copied there too (the README's pictures come from `TTSCALE_SCREENSHOTS=docs/screenshots`).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import httpx
import pytest
from servers import (PREFECT, REPO, SCHEDULER_LOOP_S, WORKER_POLL_S, cli, ensure_pool, free_port, start, stop, tail,
                     wait_for)

SAMPLE_BANK = "sample-bank/sample-bank-cpu"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (the browser tests are required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed: pip install -e '.[dev]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _missing("no Chromium on PATH: as root, `apt-get update && apt-get install -y chromium` "
                 "(bash .ci/install does it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, tmp_path: Path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(90_000)  # a slow 2-core machine renders a big form slowly
    yield opened
    context.close()


def _screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("TTSCALE_SCREENSHOTS"):
        keep = Path(os.environ["TTSCALE_SCREENSHOTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, keep / path.name)
    return path


@pytest.fixture(scope="module")
def cli_env(prefect_server: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_server, "TTSCALE_REPO": str(REPO)}


@pytest.fixture(scope="module")
def cpu_worker(cli_env: dict[str, str], tmp_path_factory):
    """A worker on the `cpu` pool as the README starts one, polling every WORKER_POLL_S, one run at a time."""
    ensure_pool("cpu", cli_env)
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = start([PREFECT, "worker", "start", "--pool", "cpu", "--limit", "1"],
                   {**cli_env, "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_POLL_S)}, log)
    yield worker
    stop(worker)


@pytest.fixture(scope="module")
def deployed(cli_env: dict[str, str], trained_workdir: Path, tmp_path_factory) -> tuple[dict, Path]:
    """`ttscale deploy sample-bank-cpu` once for this module, onto a workdir holding the trained base
    model: (the deployment, its workdir). The form's run (N = 3) and the scheduled run (the preset's N)
    write banks of different N there, which the tests count apart; each test knows its own runs by
    the ones that were there before it."""
    ensure_pool("cpu", cli_env)  # deploying onto a pool that does not exist asks at the terminal
    workdir = tmp_path_factory.mktemp("deployed")
    shutil.copytree(trained_workdir / "models" / "base", workdir / "models" / "base")
    cli([sys.executable, "-m", "ttscale.cli", "deploy", "sample-bank-cpu", "--preset", "smoke",
         "--workdir", str(workdir)], cli_env)
    return httpx.get(f"{cli_env['PREFECT_API_URL']}/deployments/name/{SAMPLE_BANK}").json(), workdir


def _runs(api: str, deployment_id: str) -> list[dict]:
    filters = {"deployments": {"id": {"any_": [deployment_id]}}}
    return httpx.post(f"{api}/flow_runs/filter", json=filters).json()


def _new_runs(api: str, deployment_id: str, earlier: set[str]) -> list[dict]:
    return [run for run in _runs(api, deployment_id) if run["id"] not in earlier]


def _create_run(api: str, deployment_id: str, parameters: dict) -> dict:
    """A run of the deployment created through the API, as a client script would: the created run.

    The same SQLite lock that can make the form's request fail (see `_created`) answers this one
    with a 500 (the suite's CI run of 12-07 hit it: the body had no `id`); a client tries again,
    once. Any other refusal fails here with the server's status and body."""
    for _ in range(2):
        response = httpx.post(f"{api}/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})
        if response.status_code != 500:
            break
        time.sleep(1)
    assert response.status_code == 201, f"{response.status_code}: {response.text[:2000]}"
    return response.json()


def _created(page, api: str, deployment_id: str, earlier: set[str], tmp_path: Path, timeout_s: float = 60) -> list[dict]:
    """The runs a submitted form created; if none comes, what the form says instead (and a screenshot).

    The server on SQLite can answer the form's create-run request with a 500 when its database is
    locked by a concurrent write; the UI then shows "Oops. Something went wrong." and creates
    nothing. A person submits again, and so does this, once; a second failure fails the test."""
    deadline, resubmitted = time.monotonic() + timeout_s, False
    oops = page.get_by_text("Something went wrong", exact=False)
    while time.monotonic() < deadline:
        if runs := _new_runs(api, deployment_id, earlier):
            return runs
        if not resubmitted and oops.count():
            _screenshot(page, tmp_path, "prefect-form-server-error")
            # the toast sits over the form's corner: the click goes to the button itself
            page.get_by_role("button", name="Submit").dispatch_event("click")
            resubmitted = True
        time.sleep(1)
    _screenshot(page, tmp_path, "prefect-form-after-submit")
    messages = page.locator(".p-label__message--failed, .p-toast").all_text_contents()
    raise AssertionError(f"the submitted form created no run within {timeout_s:.0f} s (resubmitted: {resubmitted}); "
                         f"the page says {messages} (screenshot in {tmp_path})")


def _finished(api: str, run_id: str, worker, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{run_id}").json()
        if run["state"]["type"] in TERMINAL:
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} still {run['state']['type']} after {timeout_s:.0f} s; "
                         f"worker log:\n{tail(worker)}")


def _candidates(workdir: Path, budget: int) -> int:
    with duckdb.connect(str(workdir / "ttscale.duckdb"), read_only=True) as con:
        return con.execute("SELECT count(*) FROM candidates WHERE budget = ?", [budget]).fetchone()[0]


def _field(page, label: str):
    """The form's property whose label reads `label` (the innermost match: the preset's, not the config's)."""
    heading = page.locator(".schema-form-property__label", has_text=re.compile(rf"^{re.escape(label)}( \(Optional\))?$"))
    return page.locator(".schema-form-property", has=heading).last


def test_custom_run_form_refuses_a_bad_n_and_runs_an_edited_one(
        prefect_server: str, deployed, cpu_worker, browser, page, smoke_config, tmp_path):
    """A person on the deployment page: Run -> Custom run, the preset section first; N = -1 is
    refused at the field and starts nothing; N = 3 runs on the worker, lands in the warehouse as 3
    candidates per problem, and the run's Artifacts tab shows the bank's report."""
    deployment, workdir = deployed
    ui = prefect_server.removesuffix("/api")
    earlier = {run["id"] for run in _runs(prefect_server, deployment["id"])}  # other tests' runs of it

    page.goto(f"{ui}/deployments/deployment/{deployment['id']}")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    n_field = _field(page, "N")
    n_field.scroll_into_view_if_needed()
    _screenshot(page, tmp_path, "prefect-custom-run-form")

    n_field.get_by_role("button", name="int", exact=True).click()
    n_field.locator("input").fill("-1")
    page.get_by_role("button", name="Submit").click()
    refusal = n_field.locator(".p-label__message--failed")
    refusal.wait_for()
    assert "-1" in refusal.inner_text()  # named at the field that broke it
    _screenshot(page, tmp_path, "prefect-form-refuses-negative-n")
    time.sleep(2)
    assert _new_runs(prefect_server, deployment["id"], earlier) == [], "a refused form started a run"

    n_field.locator("input").fill("3")
    n_field.locator("input").press("Tab")  # as a person leaves the field: the form takes the value
    page.get_by_role("button", name="Submit").click()
    (created,) = _created(page, prefect_server, deployment["id"], earlier, tmp_path)
    assert created["parameters"]["preset"]["n"] == 3 and created["parameters"]["preset"]["name"] == "smoke"
    run = _finished(prefect_server, created["id"], cpu_worker)
    assert run["state"]["type"] == "COMPLETED", tail(cpu_worker)
    assert _candidates(workdir, 3) == 3 * smoke_config.task.n_test  # what the edited form asked for

    page.goto(f"{ui}/runs/flow-run/{created['id']}")
    page.get_by_text("Artifacts", exact=True).click()
    page.get_by_text("sample-bank-report").first.wait_for()
    _screenshot(page, tmp_path, "prefect-run-artifacts")


def test_an_interval_schedule_fires_and_a_worker_completes_the_run(
        prefect_server: str, cli_env, deployed, cpu_worker, smoke_config):
    """The server's scheduler (loop shortened to SCHEDULER_LOOP_S) turns a schedule into a run; the worker runs it."""
    deployment, workdir = deployed
    earlier = {run["id"] for run in _runs(prefect_server, deployment["id"])}
    anchor = (datetime.now(timezone.utc) + timedelta(seconds=15)).isoformat(timespec="seconds")
    cli([PREFECT, "deployment", "schedule", "create", SAMPLE_BANK, "--interval", "3600",
         "--anchor-date", anchor, "--timezone", "UTC", "-y"], cli_env)
    try:
        deadline = time.monotonic() + 120
        scheduled: list[dict] = []
        while not scheduled and time.monotonic() < deadline:
            scheduled = [r for r in _new_runs(prefect_server, deployment["id"], earlier) if r["auto_scheduled"]]
            time.sleep(2)
        assert scheduled, "the scheduler created no run for the new schedule within 120 s"
        first = min(scheduled, key=lambda r: r["expected_start_time"])
        run = _finished(prefect_server, first["id"], cpu_worker)
    finally:
        cli([PREFECT, "deployment", "schedule", "clear", SAMPLE_BANK, "-y"], cli_env)
        for left in _runs(prefect_server, deployment["id"]):
            if left["state"]["type"] == "SCHEDULED":
                httpx.delete(f"{prefect_server}/flow_runs/{left['id']}")
    assert run["state"]["type"] == "COMPLETED", tail(cpu_worker)
    assert _candidates(workdir, smoke_config.bank.n) == smoke_config.bank.n * smoke_config.task.n_test


def test_a_users_own_error_fails_the_deployment_run_in_one_line(prefect_server: str, deployed, cpu_worker,
                                                                tmp_path):
    """A Custom run naming a preset file that is not on the worker ends Failed with that one line as
    its state message, and as the run's first error log; no traceback runs through our code.
    (Prefect 3.7's engine still logs its own short traceback for every failed run.)"""
    deployment, _ = deployed
    missing = tmp_path / "no-such-preset.yaml"
    created = _create_run(prefect_server, deployment["id"], {"preset": {"file": str(missing)}})
    run = _finished(prefect_server, created["id"], cpu_worker)
    assert run["state"]["type"] == "FAILED"
    assert str(missing) in run["state"]["message"] and "no such file" in run["state"]["message"]
    deadline, errors, messages = time.monotonic() + 30, [], []
    while not errors and time.monotonic() < deadline:
        time.sleep(1)  # the run's process ships its last logs as it exits, after the state is set
        logs = httpx.post(f"{prefect_server}/logs/filter",
                          json={"logs": {"flow_run_id": {"any_": [created["id"]]}}, "sort": "TIMESTAMP_ASC"}).json()
        messages = [entry["message"] for entry in logs]
        errors = [entry["message"] for entry in logs if entry["level"] >= 40]
    assert errors and errors[0] == run["state"]["message"], "\n---\n".join(m[:300] for m in messages)
    ours = re.compile(rf'File "{re.escape(str(REPO))}/(?!\.venv/)')  # our code's frames, not site-packages
    through_us = [m for m in messages if "Traceback" in m and ours.search(m)]
    assert not through_us, through_us[0]


def test_the_nightly_rescore_schedule_registers_inactive_on_the_registry_prm(prefect_server: str, cli_env):
    """The shipped nightly re-score: a valid cron the server accepts, off until a user turns it on,
    scoring with whatever PRM version is latest in the registry (so a new version gets scored)."""
    from ttscale.configs.schema import PipelineConfig

    ensure_pool("gpu", cli_env)
    cli([sys.executable, "-m", "ttscale.cli", "deploy", "nightly-rescore-gpu", "--preset", "smoke"], cli_env)
    deployment = httpx.get(f"{prefect_server}/deployments/name/score-bank/nightly-rescore-gpu").json()
    (schedule,) = deployment["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] is False
    config = PipelineConfig.model_validate(deployment["parameters"]["config"])
    assert config.scoring.prm == "models:/ttscale-prm/latest"
    time.sleep(2 * SCHEDULER_LOOP_S)  # two scheduler loops: an inactive schedule makes no runs
    assert _runs(prefect_server, deployment["id"]) == []

    # the README's way to turn it on (and off again)
    name = "score-bank/nightly-rescore-gpu"
    cli([PREFECT, "deployment", "schedule", "resume", name, schedule["id"]], cli_env)
    try:
        turned_on = httpx.get(f"{prefect_server}/deployments/{deployment['id']}").json()["schedules"]
        assert [s["active"] for s in turned_on] == [True]
    finally:
        cli([PREFECT, "deployment", "schedule", "pause", name, schedule["id"]], cli_env)
        for left in _runs(prefect_server, deployment["id"]):
            httpx.delete(f"{prefect_server}/flow_runs/{left['id']}")


@pytest.fixture(scope="module")
def mlflow_ui(trained_workdir: Path, smoke_config, tmp_path_factory):
    """`mlflow ui` on loopback over a finished smoke workdir (the pipeline run here if no test has yet)."""
    from ttscale.flows.pipeline import pipeline

    pipeline(config=smoke_config, workdir=str(trained_workdir))
    port = free_port()
    log = tmp_path_factory.mktemp("mlflow-ui") / "mlflow.log"
    server = start([str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri",
                    f"sqlite:///{trained_workdir / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port)],
                   {**os.environ}, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", 180, server)
        yield url
    finally:
        stop(server)


def _dismiss_mlflow_panels(page) -> None:
    """MLflow 3 opens an assistant panel (and, on the registry, a what's-new dialog) over the page."""
    page.wait_for_timeout(1500)
    for close in (page.get_by_role("dialog").get_by_label("Close"),
                  page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')):
        if close.count() and close.first.is_visible():
            close.first.click()


def test_mlflow_ui_shows_registered_models_a_curve_over_n_and_the_plots(mlflow_ui: str, page, smoke_config,
                                                                        tmp_path):
    """A person in the MLflow UI: the registry lists the models the pipeline registered; the bank
    run's compute-vs-accuracy metric is drawn over step = N; the report's plot opens as an image."""
    from mlflow import MlflowClient

    page.goto(f"{mlflow_ui}/#/models")
    for name in ("ttscale-base", "ttscale-prm", "ttscale-reviser", "ttscale-orm"):
        page.get_by_role("link", name=name, exact=True).wait_for()
    _dismiss_mlflow_panels(page)
    _screenshot(page, tmp_path, "mlflow-registered-models")

    client = MlflowClient(mlflow_ui)
    (experiment,) = [e for e in client.search_experiments() if e.name == "ttscale"]
    (bank,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'sample-bank'")
    steps = [m.step for m in client.get_metric_history(bank.info.run_id, "curve/pass")]
    assert max(steps) == smoke_config.bank.n  # logged with step = N, the x axis of every curve

    page.goto(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs/{bank.info.run_id}/model-metrics")
    _dismiss_mlflow_panels(page)
    page.get_by_placeholder("Search metric charts").fill("curve/pass")
    chart = page.locator("div", has=page.get_by_text("sample-bank (curve/pass)", exact=True)).filter(
        has=page.get_by_text("Step", exact=True)).last
    chart.wait_for()
    ticks = [float(t.replace("\u2212", "-")) for t in chart.locator("g.xtick text").all_text_contents()]
    assert ticks and max(ticks) == smoke_config.bank.n, ticks  # drawn over N, not over wall time
    _screenshot(page, tmp_path, "mlflow-compute-vs-accuracy")

    page.goto(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs/{bank.info.run_id}/artifacts")
    page.get_by_text("report", exact=True).click()
    plot = page.get_by_text(re.compile(r"^sample-bank-.*\.png$"))
    plot.click()
    image = page.locator("img[src^='blob:']").first
    image.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    _screenshot(page, tmp_path, "mlflow-plot-artifact")
