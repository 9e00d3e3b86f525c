"""One call budget per apiKey in a real deployment: 300 mapped calls at 16 parallel task processes
stay under the gateway's 100 calls/minute (LocalExecutor with the host store; the CeleryExecutor
case, two workers coordinated only by Redis, runs on PostgreSQL in ``deploy/test_ha.py``), and a ban
seen by one task stops every task until it ends."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from conftest import record

from airflow_provider_multimarkets.api.budget import SAFETY_MARGIN_SECONDS
from deploy.harness import Deployment, SandboxProcess, peak_in_window

DAG = "mm_deploy_fanout"
FIND = "customer.app.CustomerWebApiService.findCustomerInfo"
CALLS = 300
PARALLEL = 16  # the deployment's parallelism (deploy/conftest.py)
LIMIT, WINDOW = 100, 60.0 + SAFETY_MARGIN_SECONDS  # the budget's window: 60 s + the safety margin
#: what 300 calls at 100 per minute need at the least: 100 now, 100 a window later, 100 after that
FLOOR = (math.ceil(CALLS / LIMIT) - 1) * WINDOW


def _statuses(calls: list[dict[str, Any]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for call in calls:
        counts[call["status"]] = counts.get(call["status"], 0) + 1
    return counts


def _fanout(deployment: Deployment, conn_id: str, calls: int, timeout: float) -> tuple[str, float, str]:
    started = time.monotonic()
    run_id = deployment.trigger(DAG, {"calls": calls, "conn_id": conn_id})
    state = deployment.wait_run(DAG, run_id, timeout)
    return run_id, time.monotonic() - started, state


@pytest.fixture(scope="module")
def baseline(local_deployment: tuple[Deployment, dict[str, SandboxProcess]]) -> float:
    """The same DAG with limiting off (a sandbox with no gateway limit): what Airflow itself takes."""
    deployment, boxes = local_deployment
    deployment.wait_for_dag(DAG)
    run_id, took, state = _fanout(deployment, "mm_unlimited", CALLS, 900)
    calls = boxes["unlimited"].calls()
    assert state == "success" and deployment.states(DAG, run_id, "call") == {"success": CALLS}
    record(
        {
            "scenario": "LocalExecutor, 16 parallel, limiting off (sandbox without limit)",
            "wall_s": round(took, 1),
            "sandbox_statuses": _statuses(calls),
            "peak_calls_in_60s": peak_in_window([c["t"] for c in calls]),
        }
    )
    return took


def test_local_executor_300_calls_share_one_budget(
    local_deployment: tuple[Deployment, dict[str, SandboxProcess]], baseline: float
) -> None:
    deployment, boxes = local_deployment
    run_id, took, state = _fanout(deployment, "multimarkets_default", CALLS, 1200)
    calls = boxes["budget"].calls()
    statuses = _statuses(calls)
    peak = peak_in_window([c["t"] for c in calls])
    record(
        {
            "scenario": "LocalExecutor, 16 parallel, shared budget (host store)",
            "wall_s": round(took, 1),
            "floor_s": FLOOR,
            "baseline_s": round(baseline, 1),
            "bound_s": round(1.25 * FLOOR + baseline, 1),
            "sandbox_statuses": statuses,
            "tasks": deployment.states(DAG, run_id, "call"),
            "peak_calls_in_60s": peak,
        }
    )
    assert state == "success"
    assert deployment.states(DAG, run_id, "call") == {"success": CALLS}
    assert statuses == {200: CALLS}  # zero 429, zero 418
    assert peak <= LIMIT
    assert took <= 1.25 * FLOOR + baseline
    waited = [deployment.task_log(DAG, run_id, "call", i) for i in range(CALLS)]
    assert any("for the apiKey's shared call budget" in text for text in waited)
    assert all(text.count("for the apiKey's shared call budget") <= 1 for text in waited)  # once per task


def test_a_ban_mid_run_stops_every_task_until_it_ends(
    local_deployment: tuple[Deployment, dict[str, SandboxProcess]],
) -> None:
    deployment, boxes = local_deployment
    sandbox = boxes["ban"]
    deployment.wait_for_dag(DAG)
    started = time.time()
    run_id = deployment.trigger(DAG, {"calls": 60, "conn_id": "mm_ban_wait"})
    from deploy.harness import wait_until

    wait_until("15 calls before the ban", lambda: len(sandbox.calls(started)) >= 15, 300)
    ban_until = sandbox.ban(40)
    state = deployment.wait_run(DAG, run_id, 600)
    calls = sandbox.calls(started)
    banned = [c for c in calls if c["status"] == 418]
    assert banned, "no task met the ban"
    first_418 = min(c["t"] for c in banned)
    during = [c for c in calls if first_418 < c["t"] < ban_until]
    late = [c for c in during if c["t"] > first_418 + 1.0]
    record(
        {
            "scenario": "LocalExecutor, 418 forced mid-run for 40 s, rate_limit_max_wait 120 (tasks wait)",
            "sandbox_statuses": _statuses(calls),
            "calls_into_the_ban_after_the_first_418": len(during),
            "of_them_later_than_1s": len(late),
            "first_call_after_ban_end_s": round(min(c["t"] for c in calls if c["t"] >= ban_until) - ban_until, 2),
            "tasks": deployment.states(DAG, run_id, "call"),
        }
    )
    assert state == "success" and deployment.states(DAG, run_id, "call") == {"success": 60}
    assert _statuses(calls).get(200) == 60
    assert late == []  # once one task saw the 418, no process sent into the ban
    # Only calls already past their budget check when the 418 landed: at most one per running task.
    assert len(during) <= PARALLEL


def test_a_ban_longer_than_the_max_wait_fails_tasks_with_its_end_time(
    local_deployment: tuple[Deployment, dict[str, SandboxProcess]],
) -> None:
    deployment, boxes = local_deployment
    sandbox = boxes["ban"]
    from deploy.harness import wait_until

    wait_until("the previous ban over", lambda: sandbox.health() is not None, 5)
    time.sleep(max(0.0, 1.0))
    started = time.time()
    ban_until = sandbox.ban(90)
    run_id = deployment.trigger(DAG, {"calls": 20, "conn_id": "mm_ban_fail"})
    state = deployment.wait_run(DAG, run_id, 600)
    calls = sandbox.calls(started)
    states = deployment.states(DAG, run_id, "call")
    logs = [deployment.task_log(DAG, run_id, "call", i) for i in range(20)]
    messages = [line for text in logs for line in text.splitlines() if "HTTP 418) until about" in line]
    during = [c for c in calls if c["t"] < ban_until]
    first_418 = min((c["t"] for c in during), default=started)
    # Tasks start within milliseconds of each other: those whose call left before the first 418 came
    # back could not know of the ban. Every call later than that is a call into a known ban.
    late = [c for c in during if c["t"] > first_418 + 1.0]
    record(
        {
            "scenario": "LocalExecutor, 418 forced for 90 s, rate_limit_max_wait 5 (tasks fail at once)",
            "sandbox_statuses": _statuses(calls),
            "tasks": states,
            "calls_during_ban": len(during),
            "last_call_after_the_first_418_s": round(max((c["t"] for c in during), default=first_418) - first_418, 3),
            "calls_into_the_known_ban": len(late),
            "example_message": messages[0][:400] if messages else None,
        }
    )
    assert state == "failed" and states == {"failed": 20}
    assert late == []  # once one task saw the 418, no process sent into the ban
    assert len(during) < 20  # the others failed from the shared store without a call
    assert len(messages) >= 19 and "No call was sent" in "".join(logs)


# The CeleryExecutor case (two workers, one Redis budget) runs on PostgreSQL in deploy/test_ha.py.
