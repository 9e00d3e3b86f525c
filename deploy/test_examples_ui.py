"""Every example DAG triggered from the real Airflow 3.3 UI with its default params, as a new user would
(DAGs paused at creation, the sandbox started as the docs show it), driven in headless Chromium.

What ran and in how long goes to the results; screenshots of each DAG's grid and of one task log each
go to deploy-output/ui-examples/. The watcher example must react to the user's own order only: with
the sandbox's synthetic stream on trade type 1, one order placed is one run of the watcher's DAG.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import OUTPUT, Sandboxes, record

from deploy.harness import ROOT, Deployment, SandboxProcess, http_json, q, wait_until

SHOTS = OUTPUT / "ui-examples"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
#: (dag_id, a task whose log is worth a look, the bound on the run: generous, never what decides)
MANUAL = [
    ("example_multimarkets_account_report", "report", 600),
    ("example_multimarkets_daily_reconciliation", "reconcile", 600),
    ("example_multimarkets_msg_token", "report", 900),
]
ON_FILL = "example_multimarkets_on_fill"
ORDER = "example_multimarkets_order_tracking"


@pytest.fixture(scope="module")
def ui(workdir: Path, sandboxes: Sandboxes) -> Iterator[tuple[Deployment, SandboxProcess, Any]]:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test-deploy` installs Debian's chromium package"
    from playwright.sync_api import sync_playwright

    # as docs/examples.md starts it: synthetic trades on trade type 1 only
    sandbox = sandboxes.start("examples-ui", "--trade-stream-rate", "5", "--trade-stream-types", "1")
    deployment = Deployment(
        workdir / "examples-ui",
        dags_folder=ROOT / "example_dags",
        parallelism=8,
        env_extra={
            "AIRFLOW_CONN_MULTIMARKETS_DEFAULT": sandbox.conn_json(),
            "MULTIMARKETS_REPORT_DIR": str(workdir / "examples-ui" / "reports"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # Airflow's default, as a user has it
        },
    )
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True)
    try:
        deployment.start()
        for dag_id, *_ in [*MANUAL, (ORDER,), (ON_FILL,)]:
            deployment.wait_for_dag(dag_id, timeout=300)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                yield deployment, sandbox, browser
            finally:
                browser.close()
    finally:
        deployment.stop()


def _runs(deployment: Deployment, dag_id: str) -> list[dict[str, Any]]:
    return list(deployment.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=1000&order_by=start_date")["dag_runs"])


def _trigger_from_ui(deployment: Deployment, browser: Any, dag_id: str) -> tuple[str, float]:
    """Open the DAG, press Trigger, accept the defaults; the new manual run's id and the click's time."""
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(f"{deployment.api}/dags/{dag_id}", wait_until="networkidle")
    before = {r["dag_run_id"] for r in _runs(deployment, dag_id)}
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    page.wait_for_timeout(800)  # the modal's animation, for the screenshot
    page.screenshot(path=str(SHOTS / f"{dag_id}-1-trigger-form.png"), full_page=True)
    submit = dialog.get_by_role("button", name="Trigger")
    assert submit.is_enabled(), f"{dag_id}: Trigger is disabled with the default params"
    clicked = time.monotonic()
    submit.click()

    def new_manual_run() -> str | None:
        fresh = [r for r in _runs(deployment, dag_id) if r["dag_run_id"] not in before and r["run_type"] == "manual"]
        return str(fresh[0]["dag_run_id"]) if fresh else None

    run_id = str(wait_until(f"manual run of {dag_id}", new_manual_run, 120, every=1))
    # "Unpause … on trigger" (checked for a paused DAG) is the UI's second request: keep the page until it lands
    wait_until(f"{dag_id} unpaused", lambda: not deployment.get(f"/api/v2/dags/{dag_id}")["is_paused"], 120, every=1)
    page.close()
    return run_id, clicked


def _look(deployment: Deployment, browser: Any, dag_id: str, run_id: str, task_id: str, tag: str) -> str:
    """Screenshots of the run's grid and of one task's log as the UI shows them; the log's text."""
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(f"{deployment.api}/dags/{dag_id}/runs/{q(run_id)}", wait_until="networkidle")
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / f"{dag_id}-2-{tag}-run.png"), full_page=True)
    page.goto(f"{deployment.api}/dags/{dag_id}/runs/{q(run_id)}/tasks/{task_id}", wait_until="networkidle")
    page.wait_for_timeout(2500)  # the log streams in
    page.screenshot(path=str(SHOTS / f"{dag_id}-3-{tag}-log-{task_id}.png"), full_page=True)
    text = str(page.inner_text("body"))
    page.close()
    return text


@pytest.mark.parametrize(("dag_id", "task_id", "bound"), MANUAL, ids=[m[0] for m in MANUAL])
def test_example_triggered_from_the_ui_with_defaults(
    ui: tuple[Deployment, SandboxProcess, Any], dag_id: str, task_id: str, bound: float
) -> None:
    deployment, _sandbox, browser = ui
    run_id, clicked = _trigger_from_ui(deployment, browser, dag_id)
    state = deployment.wait_run(dag_id, run_id, timeout=bound)
    took = time.monotonic() - clicked
    runs = _runs(deployment, dag_id)
    shown = _look(deployment, browser, dag_id, run_id, task_id, "manual")
    record(
        {
            "scenario": "ui: example triggered with defaults",
            "dag": dag_id,
            "state": state,
            "click_to_done_s": round(took, 1),
            "tasks": deployment.states(dag_id, run_id),
            "runs_of_the_dag": [(r["run_type"], r["state"]) for r in runs],
        }
    )
    assert state == "success", deployment.task_log(dag_id, run_id, task_id)[-3000:]
    assert "Traceback" not in shown


def test_watcher_reacts_to_the_users_own_order(ui: tuple[Deployment, SandboxProcess, Any]) -> None:
    deployment, sandbox, browser = ui
    deployment.patch(f"/api/v2/dags/{ON_FILL}?update_mask=is_paused", {"is_paused": False})
    unpaused = time.monotonic()

    def watcher_subscribed() -> bool:  # the watcher's own stream, trade type 2 only, connected
        streams = http_json("GET", f"{sandbox.base}/_sandbox/delivered")["streams"]
        return any(s["trade_types"] == ["2"] and s["attached"] for s in streams)

    wait_until("the watcher's subscription", watcher_subscribed, 300, every=1)
    subscribed_after = time.monotonic() - unpaused
    run_id, clicked = _trigger_from_ui(deployment, browser, ORDER)
    state = deployment.wait_run(ORDER, run_id, timeout=600)
    order_took = time.monotonic() - clicked
    _look(deployment, browser, ORDER, run_id, "fill_report", "manual")
    assert state == "success", deployment.task_log(ORDER, run_id, "place_and_track_order")[-3000:]

    def fill_runs() -> list[dict[str, Any]] | None:
        done = [r for r in _runs(deployment, ON_FILL) if r["state"] in ("success", "failed")]
        return done or None

    (fill_run, *more) = wait_until("the fill's run of the watcher's DAG", fill_runs, 300, every=2)
    fill_took = time.monotonic() - clicked
    log_text = _look(deployment, browser, ON_FILL, fill_run["dag_run_id"], "record_fills", "asset")
    settle = time.monotonic() + 20  # a flood would show as more runs here; nothing is decided by this wait
    while time.monotonic() < settle:
        time.sleep(2)
    runs = _runs(deployment, ON_FILL)
    events = deployment.get("/api/v2/assets/events?limit=1000")["asset_events"]
    record(
        {
            "scenario": "ui: watcher example against the sandbox as the docs start it",
            "watcher_subscribed_after_unpause_s": round(subscribed_after, 1),
            "order_click_to_done_s": round(order_took, 1),
            "order_click_to_fill_run_done_s": round(fill_took, 1),
            "fill_runs": [(r["run_type"], r["state"]) for r in runs],
            "asset_events": len(events),
        }
    )
    assert fill_run["state"] == "success" and not more
    assert len(runs) == 1 and len(events) == 1
    assert "fill: order" in log_text  # the task logger's lines reach the UI's log view
