"""The message subscription (trigger + operator) against the sandbox over loopback."""

from __future__ import annotations

import importlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ORDER_BIZ_TYPE, ORDER_BODY, load_dag, run_subscription, set_connection, ti_states, xcom_value

from airflow_provider_multimarkets.exceptions import (
    MultiMarketsConfigError,
    MultiMarketsMsgAuthError,
)
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.messaging.frames import build_frame
from airflow_provider_multimarkets.operators.msg_subscribe import MultiMarketsMsgSubscribeOperator
from airflow_provider_multimarkets.sandbox import SandboxConfig
from airflow_provider_multimarkets.triggers.msg_subscribe import MultiMarketsMsgSubscribeTrigger

ORDER = ORDER_BIZ_TYPE


def run_trigger(**kwargs: Any) -> dict[str, Any]:
    return run_subscription(**kwargs)


@pytest.fixture
def streaming(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    sb = sandbox_factory(SandboxConfig(trade_stream_rate=100))
    set_connection(monkeypatch, sb.connection(retry_backoff=0.01))
    return sb


def test_frames_as_documented() -> None:
    frame = json.loads(
        build_frame("subscribe_asset", "tok", 5, lang="en-US", data={"tradeTypes": "2"}, now_ms=1698299047686)
    )
    assert frame == {
        "head": {"msgType": "subscribe_asset", "token": "tok", "sendTime": 1698299047686, "lang": "en-US"},
        "device": 1,
        "seqId": 5,
        "trace": "x-1698299047686-5",
        "data": {"tradeTypes": "2"},
    }
    assert "data" not in json.loads(build_frame("ping", "tok", 6))
    with pytest.raises(ValueError):
        build_frame("subscribe_position", "tok", 1)


def test_login_subscribe_ping_cancel_logout_framing(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    token = hook.get_msg_token()

    def push_after_three_pings() -> None:  # an event, not a window: the run ends on the push
        deadline = time.monotonic() + 60
        while sandbox.app.ws_stats["pings"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        hook.call(ORDER, ORDER_BODY, idempotent=False)

    thread = threading.Thread(target=push_after_three_pings)
    thread.start()
    event = run_trigger(token=token, trade_types="2", max_messages=1, ping_interval=0.1, window=60)
    thread.join()
    assert event["status"] == "success" and event["summary"]["stop_reason"] == "max_messages"
    frames = list(sandbox.app.client_frames)
    types = [f["head"]["msgType"] for f in frames]
    assert types[:2] == ["login", "subscribe_asset"]
    assert types.count("ping") >= 3
    assert types[-2:] == ["cancel_subscribe_asset", "logout"]
    assert all(f["head"]["token"] == token and f["device"] == 1 and f["head"]["lang"] == "en-US" for f in frames)
    assert [f["seqId"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[1]["data"] == {"tradeTypes": "2"} and frames[-2]["data"] == {"tradeTypes": "2"}
    assert all(f["trace"].startswith("x-") for f in frames)


def test_stop_on_max_messages(streaming: Any) -> None:
    token = MultiMarketsHook().get_msg_token()
    event = run_trigger(token=token, trade_types="1,2", max_messages=25)
    summary = event["summary"]
    assert summary["stop_reason"] == "max_messages" and summary["messages"] == 25
    assert len(summary["messages_inline"]) == 25
    assert summary["by_msg_code"] == {"trade": 25} and sum(summary["by_order_status"].values()) == 25
    assert summary["first_timestamp"] <= summary["last_timestamp"]


def test_stop_on_window(mm_conn: dict[str, Any]) -> None:
    token = MultiMarketsHook().get_msg_token()
    started = time.monotonic()
    event = run_trigger(token=token, deadline=time.time() + 0.8, ping_interval=0.2)
    assert event["summary"]["stop_reason"] == "window" and event["summary"]["messages"] == 0
    assert time.monotonic() - started < 10


def test_stop_until_order_final(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    token = hook.get_msg_token()
    placed: dict[str, Any] = {}

    def place() -> None:
        deadline = time.monotonic() + 60  # once the subscription is up (an event, not a fixed sleep)
        while not any("2" in s.trade_types for s in sandbox.state.streams.values()) and time.monotonic() < deadline:
            time.sleep(0.02)
        hook.call(ORDER, ORDER_BODY, idempotent=False)  # another order first: not the one tracked
        placed.update(hook.call(ORDER, ORDER_BODY, idempotent=False))

    thread = threading.Thread(target=place)
    thread.start()
    # the id the sandbox will give the second order
    next_id = str(sandbox.state._next_order + 2)
    event = run_trigger(token=token, until_order_id=next_id, ping_interval=0.5)
    thread.join()
    summary = event["summary"]
    assert str(placed["orderId"]) == next_id
    assert summary["stop_reason"] == "until" and summary["until"]["met"]
    final = summary["until"]["final_message"]["content"]["paramMap"]
    assert final["orderId"] == next_id and final["orderStatus"] == "2"
    assert summary["messages"] == 2


def test_drop_mid_stream_loses_and_duplicates_nothing(streaming: Any, tmp_path: Path) -> None:
    token = MultiMarketsHook().get_msg_token()
    streaming.state.faults.ws.drop_after = 40
    streaming.state.faults.ws.drop_times = 2
    out = tmp_path / "pushes.jsonl"
    event = run_trigger(token=token, trade_types="2", max_messages=150, output_path=str(out))
    summary = event["summary"]
    assert summary["reconnects"] == 2 and summary["duplicates_dropped"] >= 2
    seqs = [json.loads(line)["seqId"] for line in out.read_text().splitlines()]
    assert seqs == list(range(1, 151))  # the sandbox's sequence: contiguous, no gap, no repeat
    assert summary["messages"] == 150 and summary["output_path"] == str(out)
    from airflow_provider_multimarkets.trading.reports import summarize_pushes

    with out.open() as handle:
        report = summarize_pushes(handle)  # the report's counts are the summary's: one rule, one file
    for key in ("messages", "by_msg_code", "by_biz_type", "by_order_status", "first_timestamp", "last_timestamp"):
        assert report[key] == summary[key], key
    assert "messages_inline" not in summary
    assert streaming.app.ws_stats["drops"] == 2


def test_bad_token_is_a_clear_error(mm_conn: dict[str, Any]) -> None:
    event = run_trigger(token="00000000-0000-0000-0000-000000000000push")
    assert event["status"] == "error" and event["error_type"] == "MultiMarketsMsgAuthError"
    assert "fetch a new one with GetMsgTokenOperator" in event["message"]
    op = MultiMarketsMsgSubscribeOperator(task_id="s", token="x" * 40, max_messages=1, deferrable=False)
    with pytest.raises(MultiMarketsMsgAuthError, match="GetMsgTokenOperator"):
        op.execute({})  # type: ignore[arg-type]


def test_server_that_stops_answering_pings(streaming: Any) -> None:
    token = MultiMarketsHook().get_msg_token()
    faults = streaming.state.faults.ws

    def go_silent_then_recover() -> None:
        # events, not fixed sleeps: silent once pushes flow, back once the client reconnected (idle seen)
        deadline = time.monotonic() + 60
        while streaming.app.ws_stats["pushed"] < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        connections = streaming.app.ws_stats["connections"]
        faults.silent = True
        while streaming.app.ws_stats["connections"] <= connections and time.monotonic() < deadline:
            time.sleep(0.01)
        faults.silent = False

    thread = threading.Thread(target=go_silent_then_recover)
    thread.start()
    event = run_trigger(
        token=token,
        trade_types="2",
        max_messages=120,
        ping_interval=0.1,
        idle_timeout=0.5,
        output_path=None,
        inline_limit=200,
    )
    thread.join()
    summary = event["summary"]
    assert event["status"] == "success" and summary["reconnects"] >= 1
    seqs = [m["seqId"] for m in summary["messages_inline"]]
    assert seqs == list(range(1, 121))


def test_server_silent_for_good_fails_after_bounded_reconnects(mm_conn: dict[str, Any], sandbox: Any) -> None:
    token = MultiMarketsHook().get_msg_token()
    sandbox.state.faults.ws.silent = True
    event = run_trigger(token=token, ping_interval=0.1, idle_timeout=0.3, max_reconnects=2, reconnect_backoff=0.01)
    assert event["status"] == "error" and "failed 3 times in a row" in event["message"]
    assert event["summary"]["reconnects"] == 2


def test_malformed_frames_skipped(streaming: Any) -> None:
    token = MultiMarketsHook().get_msg_token()
    streaming.state.faults.ws.malformed_every = 4
    summary = run_trigger(token=token, trade_types="2", max_messages=40)["summary"]
    assert summary["messages"] == 40 and summary["malformed_frames"] >= 9
    assert [m["seqId"] for m in summary["messages_inline"]] == list(range(1, 41))


def test_unreachable_websocket(monkeypatch: pytest.MonkeyPatch, sandbox: Any) -> None:
    set_connection(monkeypatch, sandbox.connection(msg_ws_url="ws://127.0.0.1:9/openapi-c/openMsg/{appId}"))
    event = run_trigger(token="t" * 40, max_reconnects=1, reconnect_backoff=0.01)
    assert event["status"] == "error" and "msg_ws_url" in event["message"]


def test_serialize_round_trip(tmp_path: Path) -> None:
    trigger = MultiMarketsMsgSubscribeTrigger(
        token="t",
        multimarkets_conn_id="c",
        trade_types="1,2",
        deadline=123.5,
        max_messages=7,
        until_order_id="42",
        output_path=str(tmp_path / "x.jsonl"),
        ping_interval=3.0,
    )
    classpath, kwargs = trigger.serialize()
    # a literal: the triggerer imports exactly this path, whatever module the class is reached through
    assert classpath == "airflow_provider_multimarkets.triggers.msg_subscribe.MultiMarketsMsgSubscribeTrigger"
    json.dumps(kwargs)  # JSON-only
    module, _, name = classpath.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    secret = MultiMarketsMsgSubscribeTrigger(token="tok-9f8e7d6c-secret", multimarkets_conn_id="c", deadline=1.0)
    assert "tok-9f8e7d6c-secret" not in repr(secret) and "tok-9f8e7d6c-secret" not in str(secret)
    assert "conn_id='c'" in repr(secret)


def test_operator_arguments_validated() -> None:
    with pytest.raises(MultiMarketsConfigError, match="bounded"):
        MultiMarketsMsgSubscribeOperator(task_id="s", window_seconds=0)
    op = MultiMarketsMsgSubscribeOperator(task_id="s2", max_messages=5000, deferrable=False)
    with pytest.raises(MultiMarketsConfigError, match="output_path"):
        op._check_output()
    MultiMarketsMsgSubscribeOperator(task_id="s3", max_messages=10, deferrable=False)._check_output()


def test_operator_fetches_its_own_token_in_sync_mode(streaming: Any) -> None:
    op = MultiMarketsMsgSubscribeOperator(task_id="s", max_messages=3, window_seconds=20, deferrable=False)
    summary = op.execute({})  # type: ignore[arg-type]
    assert summary["messages"] == 3 and streaming.state.requests["getMsgPushToken"] == 1


def test_restarted_trigger_resumes_from_its_log(streaming: Any, tmp_path: Path) -> None:
    """A trigger started again with the same arguments (a new triggerer) goes on from the log."""
    token = MultiMarketsHook().get_msg_token()
    out = tmp_path / "pushes.jsonl"
    first = run_trigger(token=token, trade_types="2", max_messages=50, output_path=str(out))
    assert first["summary"]["messages"] == 50 and first["summary"]["restarts"] == 0
    second = run_trigger(token=token, trade_types="2", max_messages=120, output_path=str(out))
    summary = second["summary"]
    seqs = [json.loads(line)["seqId"] for line in out.read_text().splitlines()]
    assert seqs == list(range(1, 121))  # the sandbox sent the last ones again: not written twice
    assert summary["messages"] == 120 and summary["restarts"] == 1 and summary["reconnects"] >= 1
    assert summary["by_msg_code"] == {"trade": 120} and summary["duplicates_dropped"] >= 1


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("mode", ["deferrable", "sync"])
def test_subscription_in_real_airflow(streaming: Any, mode: str) -> None:
    dag_run = load_dag(f"mm_e2e_subscribe_{mode}").test()
    assert ti_states(dag_run) == {"get_token": "success", "subscribe": "success"}
    summary = xcom_value(dag_run, "subscribe")
    assert summary["messages"] == 5 and summary["stop_reason"] == "max_messages"
    assert summary["by_msg_code"] == {"trade": 5}
    token = xcom_value(dag_run, "get_token")
    assert token in streaming.state.streams and streaming.state.streams[token].connections == 1


def test_operator_module_is_parse_light() -> None:
    import ast
    import inspect

    import airflow_provider_multimarkets.operators.msg_subscribe as mod

    tree = ast.parse(inspect.getsource(mod))
    top_imports = {
        alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names
    }
    top_from = {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert not ({"asyncio", "websockets", "aiohttp"} & (top_imports | top_from))
