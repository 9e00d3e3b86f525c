"""Exactly one order per task instance in a real deployment: the kill matrix of issue 25.

Both margin variants run side by side (isolated margin against one sandbox, full margin against
another, both in strict mode: only documented frames), deferrable and not: the task process (the
pid Airflow records for the running try) is SIGKILLed before the order call, after the gateway
processed it (before the answer), after the answer (before the fill; for a deferrable task the
triggerer is killed while it tracks), and after the fill; a successful task is cleared and re-run;
a Celery worker is SIGKILLed with the order task on it (the scheduler's heartbeat timeout lowered
to 20 s). Each case ends with exactly one order in its sandbox, and records what the task state
store held when the retry started, which try found the order and how (task state store, lookup,
idempotency-key), and the outcome. The deferrable example shows the task ``deferred`` (its worker
slot free) while the fill arrives, with the same XCom as the worker-tracked task; a screenshot
shows the task state store in the Airflow 3.3 UI.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.error
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import OUTPUT, Sandboxes, record

from airflow_provider_multimarkets.trading.order_identity import derive_third_party_order
from deploy.harness import Deployment, SandboxProcess, http_json, log, q, wait_until

ISOLATED = "tradeapi.app.OrderApiService.addMarketOrder"
FULL = "tradeapi.app.CfdMMOrderApiService.addMarketOrder"
VARIANTS = ("isolated", "full")
DAGS = {
    ("isolated", False): "mm_deploy_order",
    ("full", False): "mm_deploy_order_full",
    ("isolated", True): "mm_deploy_order_deferred",
    ("full", True): "mm_deploy_order_full_deferred",
}
BIZ = {"isolated": ISOLATED, "full": FULL}
#: the deployment's heartbeat timeout for task instances (Airflow's default is 300 s)
HEARTBEAT_TIMEOUT = 20


@dataclass
class Case:
    deployment: Deployment
    sandbox: SandboxProcess
    variant: str
    deferrable: bool
    run_id: str = ""
    store_at_retry: dict[str, Any] = field(default_factory=dict)
    killed: str = ""

    @property
    def dag_id(self) -> str:
        return DAGS[(self.variant, self.deferrable)]

    @property
    def third_party_order(self) -> str:
        return derive_third_party_order(self.dag_id, self.run_id, "order")

    def trigger(self, conf: dict[str, Any] | None = None) -> Case:
        """Trigger a run with a run id of our own, so that a request the SQLite metadata DB refused
        ("database is locked", HTTP 500) is sent again without ever making two runs."""
        run_id = f"manual__{self.variant}_{'deferred' if self.deferrable else 'worker'}_{time.time_ns()}"

        def post() -> str:
            body = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
            try:
                self.deployment.post(f"/api/v2/dags/{self.dag_id}/dagRuns", body)
            except urllib.error.HTTPError as exc:
                if exc.code != 409:  # 409: the earlier request did create it
                    raise
            return run_id

        self.run_id = _rest(post, f"trigger {self.dag_id}")
        log(f"triggered {self.dag_id}: {self.run_id}")
        return self

    def ti(self) -> dict[str, Any]:
        path = f"/api/v2/dags/{self.dag_id}/dagRuns/{q(self.run_id)}/taskInstances/order"
        return dict(_rest(lambda: self.deployment.get(path), "task instance"))

    def store(self) -> dict[str, Any]:
        return dict(_rest(lambda: self.deployment.task_state(self.dag_id, self.run_id, "order"), "task state store"))

    def clear(self) -> None:
        """Clear the task (once: a request the DB refused is sent again only if nothing was cleared)."""
        tries = self.ti()["try_number"]
        body = {"dag_run_id": self.run_id, "task_ids": ["order"], "dry_run": False, "only_failed": False}

        def post() -> None:
            if self.ti()["try_number"] == tries:
                self.deployment.post(f"/api/v2/dags/{self.dag_id}/clearTaskInstances", {**body, "reset_dag_runs": True})

        _rest(post, f"clear {self.dag_id}")

    def orders(self) -> list[dict[str, Any]]:
        orders = http_json("GET", f"{self.sandbox.base}/_sandbox/orders")["orders"]
        return [o for o in orders if o["thirdPartyOrder"] == self.third_party_order]


def _rest(call: Callable[[], Any], what: str, attempts: int = 8) -> Any:
    """A REST call, again when the SQLite metadata DB was locked by a writer (HTTP 500): bounded."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except urllib.error.HTTPError as exc:
            if exc.code not in (500, 503) or attempt == attempts:
                raise
            log(f"{what}: HTTP {exc.code} (metadata DB busy), again ({attempt}/{attempts})")
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _sandbox_knob(sandbox: SandboxProcess, **knobs: Any) -> None:
    http_json("POST", f"{sandbox.base}/_sandbox/config", knobs)


def _fault(sandbox: SandboxProcess, **fault: Any) -> None:
    http_json("POST", f"{sandbox.base}/_sandbox/fault", fault)


def _received(sandbox: SandboxProcess, biz_type: str) -> int:
    return int(sandbox.health().get("received", {}).get(biz_type, 0))


def _deployment(workdir: Path, sandboxes: Sandboxes, name: str, **kwargs: Any) -> tuple[Deployment, dict[str, Any]]:
    # strict mode: the sandboxes send only the frames the docs and the vendor's H5 client show
    boxes = {v: sandboxes.start(f"{name}-{v}", "--strict") for v in VARIANTS}
    env = {
        "AIRFLOW_CONN_MULTIMARKETS_DEFAULT": boxes["isolated"].conn_json(),
        "AIRFLOW_CONN_MM_FULL": boxes["full"].conn_json(),
        # the tuning the README gives: a task whose worker died is retried after 20 s, not 300 s
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    }
    deployment = Deployment(workdir / name, env_extra=env, **kwargs)
    return deployment, boxes


@pytest.fixture(scope="module")
def orders(workdir: Path, sandboxes: Sandboxes) -> Iterator[tuple[Deployment, dict[str, SandboxProcess]]]:
    deployment, boxes = _deployment(workdir, sandboxes, "orders", executor="LocalExecutor")
    try:
        deployment.start()
        for dag_id in DAGS.values():
            deployment.wait_for_dag(dag_id)
        yield deployment, boxes
    finally:
        deployment.stop()


def _cases(setup: tuple[Deployment, dict[str, SandboxProcess]], deferrable: bool) -> list[Case]:
    deployment, boxes = setup
    return [Case(deployment, boxes[v], v, deferrable) for v in VARIANTS]


def _in_parallel(cases: list[Case], step: Callable[[Case], Any]) -> list[Any]:
    """Run ``step`` for every case at once (one thread each): the two variants share the wall time."""
    with ThreadPoolExecutor(len(cases)) as pool:
        return list(pool.map(step, cases))


def _kill_try_1_when(case: Case, ready: Callable[[], Any], what: str) -> None:
    """Wait until the task's first try is running and ``ready()`` holds, then SIGKILL its process and
    keep what the task state store holds for the retry."""

    def running_pid() -> int | None:
        ti = case.ti()
        return ti.get("pid") if ti.get("state") == "running" and ti.get("try_number") == 1 else None

    pid = wait_until(f"{case.dag_id} {what}: try 1 running", running_pid, 180, every=0.2)
    wait_until(f"{case.dag_id} {what}", ready, 180, every=0.1)
    os.kill(int(pid), signal.SIGKILL)
    log(f"SIGKILLed task process {pid} of {case.dag_id} {what}")
    wait_until(
        f"{case.dag_id}: try 1 ended", lambda: case.ti().get("state") != "running" or case.ti()["try_number"] > 1, 120
    )
    case.store_at_retry = case.store()


def _summary(store: dict[str, Any]) -> str:
    """What the task state store holds, shortly: the keys present and the order's id and status."""
    if not store:
        return "empty"
    parts = []
    if "multimarkets.order_call" in store:
        call = store["multimarkets.order_call"]
        parts.append(
            f"order_call (try {call.get('try_number')}, key {'sent' if call.get('idempotency_key_sent') else 'not sent'})"
        )
    if "multimarkets.order_id" in store:
        parts.append(f"order_id {store['multimarkets.order_id']}")
    if "multimarkets.final_status" in store:
        parts.append(f"final_status {store['multimarkets.final_status']}")
    return ", ".join(parts) or ", ".join(sorted(store))


def _finish(case: Case, label: str, *, retried: bool = True, **extra: Any) -> dict[str, Any]:
    state = case.deployment.wait_run(case.dag_id, case.run_id, 400)
    ti = case.ti()
    orders = case.orders()
    store = case.store()
    row: dict[str, Any] = {
        "case": label,
        "variant": case.variant,
        "deferrable": case.deferrable,
        "state": state,
        "tries": ti["try_number"],
        "orders_in_sandbox": len(orders),
        "order_ids": [o["orderId"] for o in orders],
        "store_at_retry": _summary(case.store_at_retry) if retried else "-",
        "store_at_end": _summary(store),
        **extra,
    }
    if state == "success":
        path = f"/api/v2/dags/{case.dag_id}/dagRuns/{q(case.run_id)}/taskInstances/order/xcomEntries/return_value"
        entry = _rest(lambda: case.deployment.get(path), "XCom")
        value = entry.get("value") if isinstance(entry, dict) else None
        value = value if isinstance(value, dict) else {}
        row["xcom_order_id"] = (value.get("order") or {}).get("orderId")
        resumed = value.get("resumed") or {}
        row["found_by"] = (
            f"try {resumed.get('try_number')}: {resumed.get('how')}" if resumed else f"placed by try {ti['try_number']}"
        )
        row["final_status"] = (value.get("fill") or {}).get("final_status")
        row["xcom"] = value
    record({"scenario": "exactly-once", **{k: v for k, v in row.items() if k != "xcom"}})
    return row


def _one_order(row: dict[str, Any]) -> None:
    assert row["orders_in_sandbox"] == 1, row
    assert row["state"] == "success", row
    assert row["xcom_order_id"] == row["order_ids"][0], row


# ---- worker-tracked (deferrable=False) ---------------------------------------------------------------------


def test_no_fault_places_one_order(orders: Any) -> None:
    rows = _in_parallel(_cases(orders, False), lambda c: _finish(c.trigger(), "no fault", retried=False))
    for row in rows:
        _one_order(row)
        assert row["tries"] == 1 and row["final_status"] == "completed"
        assert "order_id" in row["store_at_end"] and "final_status 2" in row["store_at_end"]


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_a_killed_before_the_order_call(orders: Any, deferrable: bool) -> None:
    def run(case: Case) -> dict[str, Any]:
        before = _received(case.sandbox, "getMsgPushToken")
        _fault(case.sandbox, biz_type="getMsgPushToken", delay=8, after_processing=True, times=1)
        case.trigger()
        _kill_try_1_when(case, lambda: _received(case.sandbox, "getMsgPushToken") > before, "(a) before the order call")
        return _finish(case, "(a) SIGKILL before the order call")

    for row in _in_parallel(_cases(orders, deferrable), run):
        _one_order(row)
        assert row["tries"] == 2 and row["store_at_retry"] == "empty"  # no evidence: try 2 places, for both variants
        assert row["found_by"] == "placed by try 2"


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_b_killed_after_the_gateway_processed_the_order(orders: Any, deferrable: bool) -> None:
    def run(case: Case) -> dict[str, Any]:
        _fault(case.sandbox, biz_type=BIZ[case.variant], delay=8, after_processing=True, times=1)
        case.trigger()
        _kill_try_1_when(case, lambda: bool(case.orders()), "(b) after processing, before the answer")
        return _finish(case, "(b) SIGKILL after the gateway processed the order, before its answer")

    for row in _in_parallel(_cases(orders, deferrable), run):
        _one_order(row)
        assert row["store_at_retry"].startswith("order_call") and "order_id" not in row["store_at_retry"]
        # isolated margin: the lookup finds it; full margin: the same idempotency-key gets the same order
        how = "lookup" if row["variant"] == "isolated" else "idempotency_key"
        assert row["found_by"].endswith(how), row


def test_c_killed_after_the_answer_before_the_fill(orders: Any) -> None:
    def run(case: Case) -> dict[str, Any]:
        _sandbox_knob(case.sandbox, order_push_delay=10)
        try:
            case.trigger()
            _kill_try_1_when(case, lambda: "multimarkets.order_id" in case.store(), "(c) after the answer")
        finally:
            _sandbox_knob(case.sandbox, order_push_delay=0)
        return _finish(case, "(c) SIGKILL after the answer, before the fill push")

    for row in _in_parallel(_cases(orders, False), run):
        _one_order(row)
        assert "order_id" in row["store_at_retry"] and row["found_by"] == "try 2: store"


def test_c_deferred_triggerer_killed_while_it_tracks(orders: Any) -> None:
    """Deferrable: after the answer the task is deferred; the triggerer tracking it is SIGKILLed and a new
    one resumes the same stream (same token, same push log): the fill pushed meanwhile arrives."""
    deployment, _ = orders
    cases = _cases(orders, True)
    for case in cases:
        _sandbox_knob(case.sandbox, order_push_delay=12)
    try:
        for case in cases:
            case.trigger()
        for case in cases:
            wait_until(f"{case.dag_id} deferred", lambda c=case: c.ti().get("state") == "deferred", 180, every=0.2)
            case.store_at_retry = case.store()
        deployment.kill("triggerer")
        deployment.start_component("triggerer")
    finally:
        for case in cases:
            _sandbox_knob(case.sandbox, order_push_delay=0)
    for case in cases:
        row = _finish(case, "(c) deferred: triggerer SIGKILLed while it tracks", killed="triggerer (whole group)")
        _one_order(row)
        assert row["tries"] == 1 and "order_id" in row["store_at_retry"] and "final_status 2" in row["store_at_end"]
        assert row["xcom"]["fill"]["tracked"] is True  # the push, resumed on the same stream
        assert row["xcom"]["subscription"]["restarts"] >= 1


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_d_killed_after_the_fill(orders: Any, deferrable: bool) -> None:
    def run(case: Case) -> dict[str, Any]:
        case.trigger({"pause_after": 15})
        _kill_try_1_when(case, lambda: "multimarkets.final_status" in case.store(), "(d) after the fill")
        return _finish(case, "(d) SIGKILL after the fill")

    for row in _in_parallel(_cases(orders, deferrable), run):
        _one_order(row)
        assert "final_status 2" in row["store_at_retry"] and row["found_by"] == "try 2: store"
        assert row["final_status"] == "completed"


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_cleared_after_success_returns_the_order_at_once(orders: Any, deferrable: bool) -> None:
    def run(case: Case) -> dict[str, Any]:
        case.trigger()
        assert case.deployment.wait_run(case.dag_id, case.run_id, 300) == "success"
        case.store_at_retry = case.store()
        case.clear()
        wait_until("the cleared run restarted", lambda: case.ti()["try_number"] >= 2, 60, every=0.5)
        return _finish(case, "cleared and re-run after success")

    for row in _in_parallel(_cases(orders, deferrable), run):
        _one_order(row)
        assert row["tries"] == 2 and row["found_by"] == "try 2: store" and "final_status 2" in row["store_at_retry"]


def test_message_socket_dropped_during_placement(orders: Any) -> None:
    case = _cases(orders, False)[0]
    _sandbox_knob(case.sandbox, drop_on_order=1)
    row = _finish(case.trigger(), "message WebSocket dropped while the order call is in flight", retried=False)
    _one_order(row)
    assert row["tries"] == 1


def test_refused_subscription_never_doubles_the_order(orders: Any) -> None:
    """subscribe_asset refused: nothing is placed when the refusal comes before the order call; an order
    placed once the login was answered is followed by the lookup. Never two."""
    case = _cases(orders, False)[0]
    _sandbox_knob(case.sandbox, refuse_subscribe=True)
    try:
        case.trigger()
        state = case.deployment.wait_run(case.dag_id, case.run_id, 300)
    finally:
        _sandbox_knob(case.sandbox, refuse_subscribe=False)
    logs = "".join(case.deployment.task_log(case.dag_id, case.run_id, "order", try_number=n) for n in (1, 2, 3))
    row = _finish(case, "subscription refused (subscribe_asset error code)", retried=False)
    assert row["orders_in_sandbox"] <= 1
    if state == "failed":
        assert row["orders_in_sandbox"] == 0 and "NOT placed" in logs and "refused subscribe_asset" in logs
    else:
        _one_order(row)


# ---- the deferrable example: the worker slot is free while the fill arrives ----------------------------------


def test_deferred_while_the_fill_arrives_with_the_same_xcom(orders: Any) -> None:
    deployment, boxes = orders
    sandbox = boxes["isolated"]
    _sandbox_knob(sandbox, order_push_delay=8)
    samples: list[dict[str, Any]] = []
    try:
        case = Case(deployment, sandbox, "isolated", True).trigger()
        wait_until("the order placed", lambda: bool(case.orders()), 180, every=0.2)
        placed_at = time.time()

        def delivered() -> int:
            streams = http_json("GET", f"{sandbox.base}/_sandbox/delivered")["streams"]
            return sum(s["pushed"] for s in streams)

        pushed_before = delivered()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ti, pool = case.ti(), _rest(deployment.pool, "pool")
            samples.append(
                {
                    "t": round(time.time() - placed_at, 2),
                    "state": ti.get("state"),
                    "running_slots": pool.get("running_slots"),
                    "deferred_slots": pool.get("deferred_slots"),
                    "pushed": delivered() - pushed_before,
                }
            )
            if ti.get("state") in ("success", "failed"):
                break
            time.sleep(0.25)
    finally:
        _sandbox_knob(sandbox, order_push_delay=0)
    deferred_row = _finish(case, "deferrable example: fill 8 s after the answer", retried=False)
    _one_order(deferred_row)
    arrival = next(s for s in samples if s["pushed"] > 0)  # the fill written to the triggerer's connection
    before = [s for s in samples if s["t"] < arrival["t"]]
    assert before and before[-1]["state"] == "deferred" and before[-1]["running_slots"] == 0
    deferred_span = [s["t"] for s in samples if s["state"] == "deferred"]
    worker = _finish(Case(deployment, sandbox, "isolated", False).trigger(), "worker-tracked twin", retried=False)
    _one_order(worker)
    same_keys = _shape(deferred_row["xcom"]) == _shape(worker["xcom"])
    same_fill = {k: deferred_row["xcom"]["fill"][k] for k in ("final_status", "tracked", "push_biz_type")} == {
        k: worker["xcom"]["fill"][k] for k in ("final_status", "tracked", "push_biz_type")
    }
    record(
        {
            "scenario": "deferrable example",
            "deferred_from_s": deferred_span[0],
            "deferred_until_s": deferred_span[-1],
            "fill_delivered_at_s": arrival["t"],
            "state_just_before_the_fill": before[-1],
            "same_xcom_keys_and_types": same_keys,
            "same_fill_fields": same_fill,
        }
    )
    assert same_keys and same_fill


def _shape(xcom: dict[str, Any]) -> dict[str, Any]:
    """What two XComs of two orders have in common: their keys, and the keys and types of ``order`` and ``fill``."""
    return {
        "keys": sorted(xcom),
        "order": {k: type(v).__name__ for k, v in (xcom.get("order") or {}).items()},
        "fill": {k: type(v).__name__ for k, v in (xcom.get("fill") or {}).items()},
    }


# ---- the task state store in the Airflow 3.3 UI --------------------------------------------------------------


def test_the_task_state_store_in_the_ui(orders: Any) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test-deploy` installs Debian's chromium package"
    from playwright.sync_api import sync_playwright
    from test_ui import CHROMIUM_ARGS

    deployment, boxes = orders
    case = Case(deployment, boxes["full"], "full", False).trigger()
    assert deployment.wait_run(case.dag_id, case.run_id, 300) == "success"
    shots = OUTPUT / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    path = shots / "orders-task-state-store.png"
    url = f"{deployment.api}/dags/{case.dag_id}/runs/{q(case.run_id)}/tasks/order/task-state-store"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 2100})
            page.goto(url, wait_until="networkidle")
            page.get_by_text("multimarkets.order_id").first.wait_for(timeout=60_000)
            page.wait_for_timeout(800)
            page.screenshot(path=str(path), full_page=True)
            text = page.inner_text("body")
        finally:
            browser.close()
    store = case.store()
    listing = f"/api/v2/dags/{case.dag_id}/dagRuns/{q(case.run_id)}/taskInstances/order/state-store"
    expiring = [
        e["key"]
        for e in _rest(lambda: deployment.get(listing), "task state store")["task_state_store"]
        if e["expires_at"]
    ]
    record({"scenario": "ui: task state store", "screenshot": str(path), "keys": sorted(store), "expiring": expiring})
    assert expiring == []  # every key outlives the retries and clears (shown "Never" in the UI)
    for key in ("multimarkets.third_party_order", "multimarkets.idempotency_key", "multimarkets.order_id"):
        assert key in text
    assert str(store["multimarkets.order_id"]) in text


# ---- a Celery worker SIGKILLed with the order task on it -----------------------------------------------------------


@pytest.fixture(scope="module")
def celery(workdir: Path, sandboxes: Sandboxes) -> Iterator[tuple[Deployment, dict[str, SandboxProcess]]]:
    deployment, boxes = _deployment(
        workdir, sandboxes, "orders-celery", executor="CeleryExecutor", celery_workers=2, worker_concurrency=2
    )
    try:
        deployment.start()
        for dag_id in DAGS.values():
            deployment.wait_for_dag(dag_id)
        yield deployment, boxes
    finally:
        deployment.stop()


def test_celery_worker_killed_after_the_answer(celery: Any) -> None:
    deployment, _ = celery
    cases = _cases(celery, False)
    for case in cases:
        _sandbox_knob(case.sandbox, order_push_delay=10)
    try:
        for case in cases:
            case.trigger()
        hosts: dict[str, float] = {}
        for case in cases:
            wait_until(
                f"{case.dag_id}: orderId stored", lambda c=case: "multimarkets.order_id" in c.store(), 240, every=0.2
            )
            pid = int(case.ti()["pid"])
            worker = deployment.component_of(pid)
            assert worker and worker.startswith("worker-"), worker
            if worker not in hosts:
                # a dead host: the worker's process group (its pool and the task supervisors, so no
                # heartbeat any more) and the task process, which runs in a process group of its own
                deployment.kill(worker)
                hosts[worker] = time.time()
                deployment.start_component(worker)  # the host comes back; the retry waits for the timeout
            _kill_group_of(pid)
            case.store_at_retry = case.store()
            case.killed = worker
    finally:
        for case in cases:
            _sandbox_knob(case.sandbox, order_push_delay=0)
    for case in cases:
        wait_until(
            f"{case.dag_id}: try 2 started",
            lambda c=case: c.ti()["try_number"] >= 2 and c.ti()["state"] not in ("up_for_retry", "queued", "scheduled"),
            HEARTBEAT_TIMEOUT + 240,
        )
        started = case.ti().get("start_date")
        retry_after = _epoch(started) - hosts[case.killed] if started else None
        row = _finish(
            case,
            "Celery worker SIGKILLed after the answer",
            killed=f"{case.killed} (its whole process tree)",
            try_2_after_s=None if retry_after is None else round(retry_after, 1),
            heartbeat_timeout_s=HEARTBEAT_TIMEOUT,
        )
        _one_order(row)
        assert row["found_by"] == "try 2: store" and "order_id" in row["store_at_retry"]
        assert retry_after is not None and HEARTBEAT_TIMEOUT <= retry_after < HEARTBEAT_TIMEOUT + 120


def _kill_group_of(pid: int) -> None:
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except ProcessLookupError:
        pass  # it died with its supervisor


def _epoch(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
