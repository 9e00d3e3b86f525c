"""Event-driven DAG runs from pushes, in a real deployment: ``example_multimarkets_on_fill``.

The example's ``MultiMarketsPushEventTrigger`` runs in the triggerer (its own process group) as the
watcher of the ``multimarkets_fills`` asset. 20 orders are placed through the sandbox's signed API:

* 8 while the triggerer runs;
* the triggerer's whole process group is SIGKILLed; 4 orders are placed while none runs (the
  platform queues their pushes for the watcher's msg token); a new triggerer is started;
* 4 once the watcher is back (it resumes the same token and stream);
* the sandbox expires the msg token (the live connection is closed 4001): the watcher fetches a
  new one through the signed call and subscribes again; 4 more orders.

Asserted: every order has a DAG run whose ``triggering_asset_events`` held its own push, the
fill ledger holds each order once, and every asset event of one order carries the same identity
(the duplicates after the restart included). Measured: push-to-DAG-run latency, median and p95
(push timestamp to the run's ``queued_at``, and to the fill recorded by the task).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Sandboxes, record

from deploy.harness import ROOT, Deployment, http_json, log, wait_until

DAG = "example_multimarkets_on_fill"
ORDER = "tradeapi.app.OrderApiService.addMarketOrder"


@pytest.fixture(scope="module")
def events_setup(workdir: Path, sandboxes: Sandboxes) -> Iterator[tuple[Deployment, Any, Path]]:
    sandbox = sandboxes.start("events")
    home = workdir / "events"
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / f"{DAG}.py").symlink_to(ROOT / "example_dags" / f"{DAG}.py")
    reports = home / "reports"
    deployment = Deployment(
        home,
        executor="LocalExecutor",
        dags_folder=dags,
        env_extra={
            "AIRFLOW_CONN_MULTIMARKETS_DEFAULT": sandbox.conn_json(),
            "MULTIMARKETS_REPORT_DIR": str(reports),
            "MULTIMARKETS_PUSH_DIR": str(home / "pushes"),
            # a triggerer whose heartbeat is this old is dead: its triggers go to another one
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        },
    )
    os.environ["AIRFLOW_CONN_MM_DEPLOY_ORDERS"] = sandbox.conn_json()
    try:
        deployment.start()
        deployment.wait_for_dag(DAG)
        yield deployment, sandbox, reports / "fills" / "fills.jsonl"
    finally:
        os.environ.pop("AIRFLOW_CONN_MM_DEPLOY_ORDERS", None)
        deployment.stop()


def _streams(sandbox: Any) -> list[dict[str, Any]]:
    return list(http_json("GET", f"{sandbox.base}/_sandbox/delivered")["streams"])


def _subscribed(sandbox: Any, *, streams: int, connections: int) -> bool:
    """``streams`` tokens issued and the newest attached, subscribed to trade type 2, on its ``connections``-th connection."""
    found = _streams(sandbox)
    if len(found) < streams:
        return False
    newest = found[-1]
    return bool(newest["attached"] and "2" in newest["trade_types"] and newest["connections"] >= connections)


def _place(hook: Any, count: int, gap: float) -> list[tuple[str, float]]:
    from airflow_provider_multimarkets.sandbox.data import ORDER_PROCESS_EXAMPLE

    placed = []
    for _ in range(count):
        answer = hook.call(ORDER, dict(ORDER_PROCESS_EXAMPLE), idempotent=False)
        placed.append((str(answer["orderId"]), time.time()))
        time.sleep(gap)
    log(f"placed orders {[o for o, _ in placed]}")
    return placed


def _ledger(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 2)


def test_twenty_orders_twenty_fills_through_a_triggerer_kill_and_a_token_refusal(
    events_setup: tuple[Deployment, Any, Path],
) -> None:
    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

    deployment, sandbox, ledger = events_setup
    hook = MultiMarketsHook("mm_deploy_orders")
    wait_until("the watcher subscribed", lambda: _subscribed(sandbox, streams=1, connections=1), 180, every=0.5)

    phases: dict[str, list[tuple[str, float]]] = {}
    phases["live"] = _place(hook, 8, 2.0)
    wait_until("8 fills recorded", lambda: len(_ledger(ledger)) >= 8, 120, every=0.5)

    deployment.kill("triggerer", whole_group=True)
    killed = time.monotonic()
    phases["triggerer down"] = _place(hook, 4, 0.5)
    deployment.start_component("triggerer")
    wait_until("the watcher back on its stream", lambda: _subscribed(sandbox, streams=1, connections=2), 180, every=0.5)
    back_after = round(time.monotonic() - killed, 1)
    phases["after restart"] = _place(hook, 4, 2.0)
    wait_until("16 fills recorded", lambda: len(_ledger(ledger)) >= 16, 180, every=0.5)

    expired = http_json("POST", f"{sandbox.base}/_sandbox/tokens/expire")
    wait_until("a new msg token subscribed", lambda: _subscribed(sandbox, streams=2, connections=1), 120, every=0.5)
    phases["new token"] = _place(hook, 4, 2.0)
    placed = [order for orders in phases.values() for order, _ in orders]
    wait_until("20 fills recorded", lambda: len({r["order_id"] for r in _ledger(ledger)}) >= 20, 180, every=0.5)

    def runs_finished() -> list[dict[str, Any]] | None:
        runs = deployment.get(f"/api/v2/dags/{DAG}/dagRuns?limit=1000")["dag_runs"]
        return runs if runs and all(r["state"] in ("success", "failed") for r in runs) else None

    time.sleep(5)  # runs of duplicate events still being queued
    runs = wait_until("every run finished", runs_finished, 180, every=1)
    events = deployment.get("/api/v2/assets/events?limit=1000")["asset_events"]
    payloads = [(e.get("extra") or {}).get("payload") or {} for e in events]
    identities: dict[str, set[str]] = {}
    per_order: dict[str, int] = {}
    for payload in payloads:
        order_id = str(((payload.get("content") or {}).get("paramMap") or {}).get("orderId"))
        identities.setdefault(payload.get("identity", "?"), set()).add(order_id)
        per_order[order_id] = per_order.get(order_id, 0) + 1
    rows = _ledger(ledger)
    run_by_id = {r["dag_run_id"]: r for r in runs}

    def seconds(stamp: str) -> float:
        from datetime import datetime

        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

    latency_queued: dict[str, list[float]] = {}
    latency_recorded: dict[str, list[float]] = {}
    phase_of = {order: name for name, orders in phases.items() for order, _ in orders}
    for row in rows:
        run = run_by_id.get(row["run_id"])
        if run is None or not run.get("queued_at"):
            continue
        push = row["push_time_ms"] / 1000
        latency_queued.setdefault(phase_of.get(row["order_id"], "?"), []).append(seconds(run["queued_at"]) - push)
        if run.get("end_date"):
            latency_recorded.setdefault(phase_of.get(row["order_id"], "?"), []).append(seconds(run["end_date"]) - push)
    steady = [v for name in ("live", "after restart", "new token") for v in latency_queued.get(name, [])]
    steady_done = [v for name in ("live", "after restart", "new token") for v in latency_recorded.get(name, [])]
    token_calls = [c for c in sandbox.calls() if c["biz"] == "getMsgPushToken"]
    orders_by_run: dict[str, list[str]] = {}
    for line in rows:
        orders_by_run.setdefault(line["run_id"], []).append(line["order_id"])
    row = {
        "scenario": "push events (AssetWatcher)",
        "orders": len(placed),
        "fills_recorded": len(rows),
        "distinct_orders_recorded": len({r["order_id"] for r in rows}),
        "dag_runs": len(runs),
        "run_states": sorted({r["state"] for r in runs}),
        "runs_recording_exactly_one_order": sum(1 for o in orders_by_run.values() if len(o) == 1),
        "most_orders_recorded_by_one_run": max((len(o) for o in orders_by_run.values()), default=0),
        "asset_events": len(events),
        "events_replayed_after_restart": sum(1 for p in payloads if p.get("replayed")),
        "orders_with_more_than_one_event": sum(1 for n in per_order.values() if n > 1),
        "identities_naming_more_than_one_order": sum(1 for o in identities.values() if len(o) > 1),
        "triggerer_back_on_stream_after_s": back_after,
        "token_expired": expired,
        "msg_token_calls": len(token_calls),
        "latency_push_to_run_queued_s": {"median": _pct(steady, 0.5), "p95": _pct(steady, 0.95), "n": len(steady)},
        "latency_push_to_fill_recorded_s": {
            "median": _pct(steady_done, 0.5),
            "p95": _pct(steady_done, 0.95),
            "n": len(steady_done),
        },
        "latency_orders_placed_while_triggerer_down_s": {
            "median": _pct(latency_queued.get("triggerer down", [0.0]), 0.5),
            "max": round(max(latency_queued.get("triggerer down", [0.0])), 2),
        },
    }
    record(row)
    assert sorted(r["order_id"] for r in rows) == sorted(placed)  # each order once: nothing missed, no twice
    assert set(per_order) >= set(placed)  # every order's push made an asset event...
    assert all(r["run_id"] in run_by_id for r in rows)  # ...and a DAG run that read it
    assert {r["state"] for r in runs} == {"success"}
    assert row["identities_naming_more_than_one_order"] == 0
    for order_id, count in per_order.items():  # duplicates carry the same identity
        keys = {p["identity"] for p in payloads if str(p["content"]["paramMap"]["orderId"]) == order_id}
        assert len(keys) == 1, (order_id, count, keys)
    assert len(token_calls) == 2  # the first token, and one after the expiry (the restart kept its token)
