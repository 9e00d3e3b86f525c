"""Exactly one order per task instance in a real deployment: the task process is SIGKILLed at each
point of the order flow (``retries=2``), a successful task is cleared and re-run, the message socket
drops while the order is in flight, and the subscription is refused. Each case ends with exactly
one order in the sandbox for the task instance (none for the refused subscription), and an XCom or
a failure message that names it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Sandboxes, record

from airflow_provider_multimarkets.trading.order_identity import derive_third_party_order
from deploy.harness import Deployment, SandboxProcess, http_json, log, q, wait_until

DAG = "mm_deploy_order"
ORDER = "tradeapi.app.OrderApiService.addMarketOrder"


@pytest.fixture(scope="module")
def order_deployment(workdir: Path, sandboxes: Sandboxes) -> Iterator[tuple[Deployment, SandboxProcess]]:
    sandbox = sandboxes.start("orders")
    deployment = Deployment(
        workdir / "orders",
        executor="LocalExecutor",
        env_extra={"AIRFLOW_CONN_MULTIMARKETS_DEFAULT": sandbox.conn_json()},
    )
    try:
        deployment.start()
        deployment.wait_for_dag(DAG)
        yield deployment, sandbox
    finally:
        deployment.stop()


def _orders_of(sandbox: SandboxProcess, third_party_order: str) -> list[dict[str, Any]]:
    orders = http_json("GET", f"{sandbox.base}/_sandbox/orders")["orders"]
    return [o for o in orders if o["thirdPartyOrder"] == third_party_order]


def _config(sandbox: SandboxProcess, **knobs: Any) -> None:
    http_json("POST", f"{sandbox.base}/_sandbox/config", knobs)


def _fault(sandbox: SandboxProcess, **fault: Any) -> None:
    http_json("POST", f"{sandbox.base}/_sandbox/fault", fault)


def _received(sandbox: SandboxProcess, biz_type: str) -> int:
    return int(sandbox.health().get("received", {}).get(biz_type, 0))


def _kill_task_when(deployment: Deployment, run_id: str, ready: Callable[[], bool], what: str) -> int:
    """Wait until the task's first try is running and ``ready()`` holds, then SIGKILL its process."""

    def running_pid() -> int | None:
        ti = deployment.get(f"/api/v2/dags/{DAG}/dagRuns/{q(run_id)}/taskInstances/order")
        return ti.get("pid") if ti.get("state") == "running" and ti.get("try_number") == 1 else None

    pid = wait_until(f"{what}: try 1 running", running_pid, 120, every=0.2)
    wait_until(what, ready, 120, every=0.1)
    import os

    os.kill(int(pid), signal.SIGKILL)
    log(f"SIGKILLed task process {pid} {what}")
    return int(pid)


def _xcom(deployment: Deployment, run_id: str, key: str = "return_value") -> Any:
    entry = deployment.get(f"/api/v2/dags/{DAG}/dagRuns/{q(run_id)}/taskInstances/order/xcomEntries/{key}")
    return entry.get("value")


def _finish(deployment: Deployment, sandbox: SandboxProcess, run_id: str, case: str, **extra: Any) -> dict[str, Any]:
    state = deployment.wait_run(DAG, run_id, 300)
    tpo = derive_third_party_order(DAG, run_id, "order")
    orders = _orders_of(sandbox, tpo)
    ti = deployment.get(f"/api/v2/dags/{DAG}/dagRuns/{q(run_id)}/taskInstances/order")
    row = {
        "case": case,
        "state": state,
        "tries": ti["try_number"],
        "sandbox_orders_for_the_task_instance": len(orders),
        "order_ids": [o["orderId"] for o in orders],
        **extra,
    }
    if state == "success":
        value = _xcom(deployment, run_id)
        row["xcom_order_id"] = (value.get("order") or {}).get("orderId") if isinstance(value, dict) else value
        row["adopted"] = bool(isinstance(value, dict) and value.get("adopted"))
    record({"scenario": "exactly-once", **row})
    return row


def test_clean_run_places_one_order(order_deployment: tuple[Deployment, SandboxProcess]) -> None:
    deployment, sandbox = order_deployment
    row = _finish(deployment, sandbox, deployment.trigger(DAG), "no fault")
    assert row["state"] == "success" and row["sandbox_orders_for_the_task_instance"] == 1
    assert row["xcom_order_id"] == row["order_ids"][0] and row["tries"] == 1


def test_a_killed_before_the_order_request(order_deployment: tuple[Deployment, SandboxProcess]) -> None:
    deployment, sandbox = order_deployment
    before = _received(sandbox, "getMsgPushToken")
    _fault(sandbox, biz_type="getMsgPushToken", delay=8, after_processing=True, times=1)
    run_id = deployment.trigger(DAG)
    _kill_task_when(
        deployment, run_id, lambda: _received(sandbox, "getMsgPushToken") > before, "(a) before the order request"
    )
    row = _finish(deployment, sandbox, run_id, "(a) SIGKILL before the order request is sent")
    assert row["state"] == "success" and row["sandbox_orders_for_the_task_instance"] == 1
    assert row["tries"] == 2 and not row["adopted"]  # try 2 found nothing and placed the one order


def test_b_killed_after_processing_before_the_answer(order_deployment: tuple[Deployment, SandboxProcess]) -> None:
    deployment, sandbox = order_deployment
    _fault(sandbox, biz_type=ORDER, delay=8, after_processing=True, times=1)
    run_id = deployment.trigger(DAG)
    tpo = derive_third_party_order(DAG, run_id, "order")
    _kill_task_when(
        deployment, run_id, lambda: bool(_orders_of(sandbox, tpo)), "(b) after processing, before the answer"
    )
    row = _finish(deployment, sandbox, run_id, "(b) SIGKILL after the gateway processed the order, before it answered")
    assert row["state"] == "success" and row["sandbox_orders_for_the_task_instance"] == 1
    assert row["adopted"] and row["xcom_order_id"] == row["order_ids"][0]


def test_c_killed_after_the_answer_before_the_fill(order_deployment: tuple[Deployment, SandboxProcess]) -> None:
    deployment, sandbox = order_deployment
    _config(sandbox, order_push_delay=10)
    try:
        started = time.time()
        run_id = deployment.trigger(DAG)

        def answered() -> bool:
            return any(c["biz"] == ORDER and c["status"] == 200 for c in sandbox.calls(started))

        _kill_task_when(deployment, run_id, answered, "(c) after the answer, before the fill push")
    finally:
        _config(sandbox, order_push_delay=0)
    row = _finish(deployment, sandbox, run_id, "(c) SIGKILL after the answer, before the fill push")
    assert row["state"] == "success" and row["sandbox_orders_for_the_task_instance"] == 1
    assert row["adopted"]


def test_d_killed_after_the_fill(order_deployment: tuple[Deployment, SandboxProcess]) -> None:
    deployment, sandbox = order_deployment
    run_id = deployment.trigger(DAG, {"pause_after": 15})
    tpo = derive_third_party_order(DAG, run_id, "order")
    filled_at: list[float] = []

    def filled() -> bool:
        if _orders_of(sandbox, tpo) and not filled_at:
            filled_at.append(time.monotonic())
        return bool(filled_at) and time.monotonic() - filled_at[0] > 3  # the push went out; the task lingers

    _kill_task_when(deployment, run_id, filled, "(d) after the fill")
    row = _finish(deployment, sandbox, run_id, "(d) SIGKILL after the fill")
    assert row["state"] == "success" and row["sandbox_orders_for_the_task_instance"] == 1
    assert row["adopted"]


def test_cleared_after_success_adopts_instead_of_placing(order_deployment: tuple[Deployment, SandboxProcess]) -> None:
    deployment, sandbox = order_deployment
    run_id = deployment.trigger(DAG)
    assert deployment.wait_run(DAG, run_id, 300) == "success"
    deployment.post(
        f"/api/v2/dags/{DAG}/clearTaskInstances",
        {"dag_run_id": run_id, "task_ids": ["order"], "dry_run": False, "only_failed": False, "reset_dag_runs": True},
    )
    wait_until("the cleared run restarted", lambda: deployment.run_state(DAG, run_id) != "success", 60, every=0.5)
    row = _finish(deployment, sandbox, run_id, "cleared and re-run after success")
    assert row["state"] == "success" and row["sandbox_orders_for_the_task_instance"] == 1
    assert row["adopted"] and row["tries"] == 2


def test_message_socket_dropped_during_placement(order_deployment: tuple[Deployment, SandboxProcess]) -> None:
    deployment, sandbox = order_deployment
    _config(sandbox, drop_on_order=1)
    run_id = deployment.trigger(DAG)
    row = _finish(deployment, sandbox, run_id, "message WebSocket dropped while the order call is in flight")
    assert row["state"] == "success" and row["sandbox_orders_for_the_task_instance"] == 1
    assert row["tries"] == 1 and row["xcom_order_id"] == row["order_ids"][0]


def test_refused_subscription_places_nothing(order_deployment: tuple[Deployment, SandboxProcess]) -> None:
    deployment, sandbox = order_deployment
    _config(sandbox, refuse_subscribe=True)
    try:
        run_id = deployment.trigger(DAG)
        state = deployment.wait_run(DAG, run_id, 300)
    finally:
        _config(sandbox, refuse_subscribe=False)
    logs = "".join(deployment.task_log(DAG, run_id, "order", try_number=n) for n in (1, 2, 3))
    row = _finish(
        deployment,
        sandbox,
        run_id,
        "subscription refused (subscribe_asset error code)",
        message_says_not_placed="NOT placed" in logs and "refused subscribe_asset" in logs,
    )
    assert state == "failed" and row["sandbox_orders_for_the_task_instance"] == 0
    assert row["message_says_not_placed"]
