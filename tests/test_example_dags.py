"""Every example DAG: imports cleanly and parse-light, and runs end to end against the sandbox in a
real Airflow (SQLite metadata DB) with task states, XComs, reports and a secret audit asserted."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, load_dag, set_connection, ti_states, xcom_value

from airflow_provider_multimarkets.sandbox import SandboxConfig

EXAMPLES = sorted(p.stem for p in (ROOT / "example_dags").glob("example_*.py"))
TOKEN_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}push")


def test_there_are_five_examples() -> None:
    assert EXAMPLES == [
        "example_multimarkets_account_report",
        "example_multimarkets_daily_reconciliation",
        "example_multimarkets_msg_token",
        "example_multimarkets_on_fill",
        "example_multimarkets_order_tracking",
    ]


def _event_driven() -> bool:
    """Event-driven scheduling (AssetWatcher) exists: Airflow 3.0+."""
    from airflow import __version__

    return not __version__.startswith("2.")


def test_dagbag_imports_all_examples_without_errors() -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2.x / 3.0
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    bag = DagBag(dag_folder=str(ROOT / "example_dags"))
    assert bag.import_errors == {}
    expected = set(EXAMPLES) if _event_driven() else set(EXAMPLES) - {"example_multimarkets_on_fill"}
    assert set(bag.dag_ids) == expected
    order_dag = bag.dags["example_multimarkets_order_tracking"]
    assert getattr(order_dag, "schedule", getattr(order_dag, "schedule_interval", None)) is None  # manual only
    assert "places-orders" in bag.dags["example_multimarkets_order_tracking"].tags


PARSE_PROBE = r"""
import socket, sys, os
os.environ.pop("AIRFLOW_CONN_MULTIMARKETS_DEFAULT", None)
def no_network(*a, **k):
    raise AssertionError("network access at parse time")
socket.socket.connect = no_network
socket.create_connection = no_network
import runpy
try:
    from airflow.sdk import DAG, BaseOperator
except ImportError:  # Airflow 2.x
    from airflow.models import DAG, BaseOperator
import datetime
with DAG("baseline", schedule=None, start_date=datetime.datetime(2026, 1, 1)):
    BaseOperator(task_id="t")  # what any DAG file costs; Airflow 2 loads requests by itself here
before = set(sys.modules)
runpy.run_path(sys.argv[1])
heavy = [m for m in ("requests", "websockets", "aiohttp", "airflow_provider_multimarkets.sandbox") if m in sys.modules and m not in before]
print("HEAVY", heavy)
"""


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_parse_is_light_and_offline(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(ROOT / "example_dags" / f"{name}.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW__CORE__SQL_ALCHEMY_CONN": "sqlite:////nonexistent/x.db"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout


@pytest.fixture
def demo_sandbox(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    sb = sandbox_factory(SandboxConfig(trade_stream_rate=40))
    set_connection(monkeypatch, sb.connection(retry_backoff=0.01))
    # Airflow's own default ([operators] default_deferrable = False): the examples defer anyway
    monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)
    sb.report_dir = tmp_path / "reports"
    return sb


def _airflow_before_3_1() -> bool:
    from airflow import __version__

    major, minor = (int(p) for p in __version__.split(".")[:2])
    return (major, minor) == (3, 0)


def _xcom_value(model: Any, row: Any) -> Any:
    try:
        return model.deserialize_value(row)
    except (AttributeError, TypeError):  # Airflow 2.x: already deserialized
        return row.value


def _audit(sb: Any, dag_run: Any, text: str, tokens: set[str]) -> None:
    """No secretKey, signature or token in the task logs, XComs (but the token's own) or rendered fields."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    try:
        from airflow.models.xcom import XComModel
    except ImportError:  # Airflow 2.x: rows are deserialized on load
        from airflow.models.xcom import XCom as XComModel  # type: ignore[assignment]

    with create_session() as session:
        xcoms = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        values = [_xcom_value(XComModel, x) for x in xcoms if x.task_id != "get_msg_token"]
        xcom_text = json.dumps(values, default=str)
        rtif = session.query(RenderedTaskInstanceFields).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id).all()
        rendered = json.dumps([r.rendered_fields for r in rtif], default=str)
    needles = [sb.private_key[:60], sb.private_key[200:260], *list(sb.state.seen_signatures), *tokens]
    assert sb.state.seen_signatures, "the audit needs signatures to look for"
    if _airflow_before_3_1():
        # Airflow 3.0.x traces every supervisor IPC message verbatim at DEBUG ("Sending request
        # msg=MaskSecret(value='<the secret>')", SetXCom, SetRenderedFields, DeferTask kwargs), Airflow's
        # own connection masking included; dag.test() runs at DEBUG. An upstream defect, gone in 3.1+:
        # those trace lines are Airflow's, not this provider's (README: run 3.0.x workers at INFO).
        ipc = ("Sending request", "Received message from task runner")
        text = "\n".join(line for line in text.splitlines() if not any(marker in line for marker in ipc))
    for where, haystack in (("task logs", text), ("XCom", xcom_text), ("rendered fields", rendered)):
        leaked = [n[:12] for n in needles if n and n in haystack]
        assert not leaked, f"secret material in {where}: {leaked}"
    assert not TOKEN_RE.search(text + xcom_text + rendered)


@pytest.mark.usefixtures("airflow_db")
def test_msg_token_example_end_to_end(
    demo_sandbox: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = load_dag("example_multimarkets_msg_token")
    # Airflow's default config does not defer; the example asks for it, as its docs promise
    assert dag.task_dict["subscribe"].deferrable is True
    monkeypatch.setattr(dag.task_dict["subscribe"], "window_seconds", 3.0)
    dag_run = dag.test(run_conf={"report_dir": str(demo_sandbox.report_dir)})
    assert ti_states(dag_run) == {"get_msg_token": "success", "subscribe": "success", "report": "success"}
    summary = xcom_value(dag_run, "subscribe")
    assert summary["stop_reason"] == "window" and summary["messages"] > 20
    report = xcom_value(dag_run, "report")
    assert report["messages"] == summary["messages"]
    pushes = [json.loads(line) for line in Path(summary["output_path"]).read_text().splitlines()]
    # the report holds exactly the trades the sandbox pushed
    sent = {(p["content"]["paramMap"]["symbolName"]) for p in pushes}
    assert {r["symbol"] for r in report["trades"]} == sent
    assert sum(r["trades"] for r in report["trades"]) == len(pushes) == summary["messages"]
    assert [p["seqId"] for p in pushes] == list(range(1, len(pushes) + 1))
    with open(report["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert sum(int(r["trades"]) for r in rows) == len(pushes)
    assert json.loads(Path(report["json"]).read_text())["by_msg_code"] == {"trade": len(pushes)}
    token = xcom_value(dag_run, "get_msg_token")
    out = capfd.readouterr()
    _audit(demo_sandbox, dag_run, out.out + out.err, {token})


@pytest.mark.usefixtures("airflow_db")
def test_account_report_example_end_to_end(demo_sandbox: Any, capfd: pytest.CaptureFixture[str]) -> None:
    dag_run = load_dag("example_multimarkets_account_report").test(
        run_conf={"report_dir": str(demo_sandbox.report_dir)}
    )
    assert ti_states(dag_run) == {"customer_info": "success", "symbol_list": "success", "report": "success"}
    result = xcom_value(dag_run, "report")
    # an account in every margin mode the spec documents (1, 2, 3, 5, 6); XAUUSD is outside trading hours
    assert result["accounts"] == 5 and result["symbols_in_trading_hours"] == 7
    with open(result["csv"]) as handle:
        rows = {r["account_id"]: r for r in csv.DictReader(handle)}
    assert rows["1034124"]["currency"] == "CNY" and rows["1034124"]["balance"] == "100000.00"
    assert rows["1034123"]["margin"] == "1200.50"
    with open(result["symbols_csv"]) as handle:
        assert "XAUUSD" not in handle.read()  # outside trading hours
    out = capfd.readouterr()
    _audit(demo_sandbox, dag_run, out.out + out.err, set())


@pytest.mark.usefixtures("airflow_db")
def test_order_tracking_example_end_to_end(demo_sandbox: Any, capfd: pytest.CaptureFixture[str]) -> None:
    dag_run = load_dag("example_multimarkets_order_tracking").test(
        run_conf={
            "symbol_code": "EURAUD",
            "direction": 2,
            "lots": "0.20",
            "reference_price": "1.67655",
            "report_dir": str(demo_sandbox.report_dir),
        }
    )
    assert ti_states(dag_run) == {
        "customer_info": "success",
        "symbol_info": "success",
        "build_order": "success",
        "place_and_track_order": "success",
        "fill_report": "success",
    }
    (order,) = demo_sandbox.state.orders  # exactly one order
    assert order["request"]["requestPrice"] == "167655" and order["request"]["direction"] == 2
    assert order["request"]["requestNum"] == "0.20" and order["request"]["tradeType"] == 2
    result = xcom_value(dag_run, "place_and_track_order")
    assert result["fill"]["order_id"] == order["response"]["orderId"]
    assert result["fill"]["final_status"] == "completed" and result["fill"]["deal_amount"] == "0.2"
    assert result["subscription"]["until"]["met"] is True
    fill = xcom_value(dag_run, "fill_report")
    assert fill["final_status"] == "completed"
    assert json.loads(Path(fill["json"]).read_text())["fill"]["deal_price"] == order["response"]["executePrice"]
    out = capfd.readouterr()
    _audit(demo_sandbox, dag_run, out.out + out.err, set(TOKEN_RE.findall("")))


@pytest.mark.skipif(not _event_driven(), reason="event-driven scheduling needs Airflow 3")
def test_on_fill_example_records_each_fill_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from airflow_provider_multimarkets.messaging.push_filter import event_payload

    dag = load_dag("example_multimarkets_on_fill")
    task = dag.get_task("record_fills")
    watchers = task.python_callable.__globals__["fills"].watchers
    assert [w.name for w in watchers] == ["multimarkets_fills_watcher"]
    classpath, kwargs = watchers[0].trigger.serialize()
    assert classpath.endswith("MultiMarketsPushEventTrigger") and kwargs["final_only"] is True
    monkeypatch.setitem(task.python_callable.__globals__, "FILLS_DIR", str(tmp_path / "fills"))

    def push(order_id: int) -> dict[str, Any]:
        return {
            "msgCode": "trade",
            "timestamp": 1_795_000_000_000 + order_id,
            "seqId": order_id,
            "content": {
                "accountId": 1034124,
                "bizType": "POSITION_OPEN",
                "paramMap": {
                    "orderId": str(order_id),
                    "orderStatus": "2",
                    "symbolName": "EURAUD",
                    "dealPrice": "1.67",
                    "dealAmount": "0.1",
                },
            },
        }

    def event(order_id: int, **flags: Any) -> Any:
        return SimpleNamespace(extra={"from_trigger": True, "payload": event_payload(push(order_id), **flags)})

    first = task.python_callable(run_id="r1", triggering_asset_events={"a": [event(1), event(2)]})
    again = task.python_callable(run_id="r2", triggering_asset_events={"a": [event(2, replayed=True), event(3)]})
    ledger = str(tmp_path / "fills" / "fills.jsonl")
    assert first == {"written": 2, "duplicates": 0, "orders": ["1", "2"], "ledger": ledger}
    assert again["written"] == 1 and again["duplicates"] == 1 and again["orders"] == ["3"]
    rows = [json.loads(line) for line in (tmp_path / "fills" / "fills.jsonl").read_text().splitlines()]
    assert [(r["order_id"], r["run_id"], r["symbol"], r["lots"], r["price"], r["status"]) for r in rows] == [
        ("1", "r1", "EURAUD", "0.1", "1.67", "2"),
        ("2", "r1", "EURAUD", "0.1", "1.67", "2"),
        ("3", "r2", "EURAUD", "0.1", "1.67", "2"),
    ]
