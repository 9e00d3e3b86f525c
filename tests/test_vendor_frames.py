"""Every frame kind the vendor's H5 socket client handles, in the shapes it reads them.

The vendor client (``CTradeExchange/trade-h5``, ``src/plugins/socket/msgSocketEvent.js`` and
``socket.js``) dispatches JSON frames on ``msgCode``: ``subscribe_success``/``subscribe_fail``
answer the login, ``notice`` carries ``content.updateType`` (4 = log out), ``disconnect`` means the
session was taken over elsewhere, ``UserForceLogoutRet`` a forced log-out. Text frames starting
``f(``/``g(`` carry account and position profit and loss for trade types 1 and 2.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import set_connection
from test_subscription_faults import ScriptedServer, push, run

from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.messaging.frames import is_auth_failure, is_push, parse_pnl_frame, session_end
from airflow_provider_multimarkets.operators.msg_subscribe import _first_event
from airflow_provider_multimarkets.sandbox import SandboxConfig
from airflow_provider_multimarkets.triggers.msg_subscribe import MultiMarketsMsgSubscribeTrigger

PNL_F = "f(-12.50,300.00,9687.50,3229.17,9687.50,10000.00);(2023102650229,-10.00);(2023102650230,-2.50)"
PNL_G = "g(4.20,59371.20,940633.00,1684.38,1000004.20,1000000.00);(2023102650231,4.20,1.55012)"


def notice(update_type: Any, trade_type: int = 2, show: int = 0) -> dict[str, Any]:
    return {
        "msgCode": "notice",
        "timestamp": 1_700_000_000_000 + (update_type if isinstance(update_type, int) else 0),
        "trace": "x-notice",
        "content": {"tradeType": trade_type, "updateType": update_type, "show": show},
    }


# ---- pure classification ------------------------------------------------------------------------


def test_handshake_frames_are_never_pushes() -> None:
    ok = {"msgCode": "subscribe_success", "content": {"code": "0"}}
    refused = {"msgCode": "subscribe_fail", "content": {"code": "GGATEWAY_CODE_005", "msg": "token invalid"}}
    assert not is_push(ok) and session_end(ok) is None
    assert not is_push(refused) and is_auth_failure(refused)
    end = session_end(refused)
    assert end is not None and end.refused and "subscribe_fail" in end.cause and "GGATEWAY_CODE_005" in end.cause


@pytest.mark.parametrize("update_type", [0, 1, 2, 3, 5, 6, "1"])
def test_notices_other_than_log_out_are_pushes(update_type: Any) -> None:
    assert is_push(notice(update_type)) and session_end(notice(update_type)) is None


@pytest.mark.parametrize("update_type", [4, "4"])
def test_a_log_out_notice_ends_the_session(update_type: Any) -> None:
    frame = notice(update_type)
    assert not is_push(frame)
    end = session_end(frame)
    assert end is not None and end.auth and not end.refused and "updateType 4" in end.cause


def test_disconnect_and_forced_logout_end_the_session() -> None:
    displaced = session_end({"msgCode": "disconnect", "content": {}})
    assert displaced is not None and not displaced.auth and "logged in elsewhere" in displaced.cause
    forced = session_end({"msgCode": "UserForceLogoutRet"})
    assert forced is not None and forced.auth and "UserForceLogoutRet" in forced.cause
    assert not is_push({"msgCode": "disconnect"}) and not is_push({"msgCode": "UserForceLogoutRet"})


def test_pnl_frames_parse_as_the_vendor_client_reads_them() -> None:
    full = parse_pnl_frame(PNL_F)
    assert full == {
        "tradeType": 1,
        "account": {
            "profitLoss": "-12.50",
            "occupyMargin": "300.00",
            "availableMargin": "9687.50",
            "marginRadio": "3229.17",
            "netWorth": "9687.50",
            "balance": "10000.00",
        },
        "positions": [
            {"positionId": "2023102650229", "profitLoss": "-10.00"},
            {"positionId": "2023102650230", "profitLoss": "-2.50"},
        ],
    }
    isolated = parse_pnl_frame(PNL_G)
    assert isolated is not None and isolated["tradeType"] == 2
    assert isolated["positions"] == [
        {"positionId": "2023102650231", "profitLoss": "4.20", "previewStopPrice": "1.55012"}
    ]
    no_positions = parse_pnl_frame("g(0,0,100,0,100,100)")
    assert no_positions is not None and no_positions["positions"] == []


@pytest.mark.parametrize(
    "text",
    [
        "f(1,2,3)",  # too few account fields
        "f(1,2,3,4,5,6",  # unclosed
        "f(1,2,3,4,5,x)",  # not a number
        "f(1,2,3,4,5,nan)",
        "g(1,2,3,4,5,6);(123)",  # a position without its P&L
        "g(1,2,3,4,5,6);123,4",
        "h(1,2,3,4,5,6)",
        "f()",
    ],
)
def test_malformed_pnl_frames_are_rejected(text: str) -> None:
    assert parse_pnl_frame(text) is None


# ---- the trigger against a server speaking the vendor's frames ------------------------------------


async def vendor_handshake(ws: Any) -> None:
    """Answer login with subscribe_success and subscribe_asset with its echo, as the vendor client expects."""
    login = json.loads(await ws.recv())
    assert login["head"]["msgType"] == "login"
    await ws.send(json.dumps({"msgCode": "subscribe_success", "seqId": login["seqId"], "content": {"code": "0"}}))
    sub = json.loads(await ws.recv())
    assert sub["head"]["msgType"] == "subscribe_asset"
    await ws.send(json.dumps({"msgCode": "subscribe_asset", "seqId": sub["seqId"], "content": {"code": "0"}}))


def play(use_ws: Any, tmp_path: Path, frames: list[Any], **run_kwargs: Any) -> tuple[dict[str, Any], list[str], int]:
    """A vendor-speaking server sends ``frames`` (text as is, dicts as JSON) after the handshake:
    the trigger's event, the push log's lines and how many connections the trigger opened."""

    async def handler(ws: Any, n: int) -> None:
        await vendor_handshake(ws)
        for frame in frames:
            await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        await asyncio.sleep(5)

    out = tmp_path / "pushes.jsonl"
    with ScriptedServer(handler) as server:
        use_ws(server.url)
        event = run(output_path=str(out), **run_kwargs)
        connections = server.connections
    return event, out.read_text().splitlines() if out.exists() else [], connections


def test_subscribe_success_is_not_counted_toward_max_messages(use_ws: Any, tmp_path: Path) -> None:
    again = {"msgCode": "subscribe_success", "content": {"code": "0"}}  # sent again
    event, lines, _ = play(use_ws, tmp_path, [again, push(0), push(1), push(2)], max_messages=2)
    summary = event["summary"]
    assert event["status"] == "success" and summary["stop_reason"] == "max_messages"
    assert summary["messages"] == 2 and summary["by_msg_code"] == {"trade": 2}
    assert [json.loads(line)["msgCode"] for line in lines] == ["trade", "trade"]


def test_subscribe_fail_is_an_auth_error_without_reconnects(use_ws: Any) -> None:
    async def handler(ws: Any, n: int) -> None:
        login = json.loads(await ws.recv())
        refusal = {"code": "GGATEWAY_CODE_005", "msg": "token invalid"}
        await ws.send(json.dumps({"msgCode": "subscribe_fail", "seqId": login["seqId"], "content": refusal}))
        await asyncio.sleep(5)

    with ScriptedServer(handler) as server:
        use_ws(server.url)
        event = run(max_messages=5)
        assert server.connections == 1
    assert event["status"] == "error" and event["error_type"] == "MultiMarketsMsgAuthError"
    assert "subscribe_fail" in event["message"] and "GetMsgTokenOperator" in event["message"]
    assert event["summary"]["messages"] == 0 and event["summary"]["reconnects"] == 0


@pytest.mark.parametrize(
    ("frame", "error_type", "says"),
    [
        (notice(4), "MultiMarketsMsgAuthError", "updateType 4"),
        ({"msgCode": "UserForceLogoutRet", "content": {}}, "MultiMarketsMsgAuthError", "UserForceLogoutRet"),
        ({"msgCode": "disconnect", "content": {}}, "MultiMarketsMsgError", "logged in elsewhere"),
    ],
)
def test_frames_that_end_the_session_end_the_subscription(
    use_ws: Any, tmp_path: Path, frame: dict[str, Any], error_type: str, says: str
) -> None:
    # the last push comes after the session ended: it is not read
    event, lines, connections = play(use_ws, tmp_path, [push(1), notice(1), frame, push(2)])
    assert connections == 1  # not retried: reconnecting would fight the other session
    assert event["status"] == "error" and event["error_type"] == error_type and says in event["message"]
    summary = event["summary"]
    assert summary["messages"] == 2 and summary["by_msg_code"] == {"trade": 1, "notice": 1}
    assert len(lines) == 2  # what arrived before is kept


def test_pnl_frames_are_their_own_kind(use_ws: Any, tmp_path: Path) -> None:
    latest = PNL_G.replace("4.20", "5.00", 1)
    frames = [PNL_F, push(1), PNL_G, "f(1,2,3", latest, push(2)]  # "f(1,2,3": malformed
    event, lines, _ = play(use_ws, tmp_path, frames, max_messages=2)
    summary = event["summary"]
    assert event["status"] == "success" and summary["messages"] == 2 and summary["by_msg_code"] == {"trade": 2}
    assert summary["pnl_frames"] == 3 and summary["malformed_frames"] == 1
    assert summary["last_pnl"]["1"]["account"]["profitLoss"] == "-12.50"
    assert summary["last_pnl"]["2"]["account"]["profitLoss"] == "5.00"  # the latest snapshot
    assert summary["last_pnl"]["2"]["positions_total"] == 1
    assert all(json.loads(line)["msgCode"] == "trade" for line in lines)


@pytest.fixture
def use_ws(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def point(url: str) -> None:
        set_connection(monkeypatch, sandbox.connection(msg_ws_url=url))

    return point


# ---- the sandbox sends them ----------------------------------------------------------------------


def _admin(sb: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    url = sb.base_url.replace("/openapi-c", "") + path
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def test_sandbox_sends_every_vendor_frame_kind(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sb = sandbox_factory(SandboxConfig(pnl_interval=0.2))
    set_connection(monkeypatch, sb.connection(retry_backoff=0.01))
    hook = MultiMarketsHook()
    token = hook.get_msg_token()
    trigger = MultiMarketsMsgSubscribeTrigger(
        token=token, trade_types="1,2", deadline=time.time() + 30, reconnect_backoff=0.05
    )
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(asyncio.run(_first_event(trigger))))
    thread.start()
    try:
        deadline = time.monotonic() + 60  # events, not fixed sleeps: logged in and subscribed to both types

        def wait_for(check: Any) -> None:
            while not check() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert check(), "the trigger never got there"

        wait_for(lambda: sb.app.logged_in and any(s.trade_types >= {"1", "2"} for s in sb.state.streams.values()))
        assert _admin(sb, "/_sandbox/ws/send", {"kind": "notice", "updateType": 1, "tradeType": "2"})["sent"] == 1
        assert _admin(sb, "/_sandbox/ws/send", {"kind": "pnl"})["sent"] == 2
        wait_for(lambda: sum(s.pushed for s in sb.state.streams.values()) >= 1)  # the notice is on the wire
        assert _admin(sb, "/_sandbox/ws/send", {"kind": "disconnect"})["sent"] == 1
    finally:
        thread.join(30)
    assert not thread.is_alive()
    assert result["status"] == "error" and result["error_type"] == "MultiMarketsMsgError"
    assert "logged in elsewhere" in result["message"]
    summary = result["summary"]
    assert summary["by_msg_code"] == {"notice": 1} and summary["connections"] == 1
    assert summary["pnl_frames"] >= 2 and set(summary["last_pnl"]) == {"1", "2"}
    assert summary["malformed_frames"] == 0
    assert sb.app.ws_stats["session_ends"] == 1


def test_sandbox_refuses_a_bad_token_with_subscribe_fail(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, sandbox.connection())
    event = asyncio.run(
        _first_event(
            MultiMarketsMsgSubscribeTrigger(token="0" * 36 + "push", deadline=time.time() + 10, reconnect_backoff=0.05)
        )
    )
    assert event["status"] == "error" and event["error_type"] == "MultiMarketsMsgAuthError"
    assert "subscribe_fail" in event["message"] and "GGATEWAY_CODE_005" in event["message"]


# ---- one settings path, one backoff rule -----------------------------------------------------------


def test_the_trigger_reads_the_connection_as_the_hook_does(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_multimarkets.api.settings import settings_from_airflow_connection

    monkeypatch.delenv("AIRFLOW_CONN_MM_NOWHERE", raising=False)
    event = asyncio.run(
        _first_event(
            MultiMarketsMsgSubscribeTrigger(token="t" * 40, multimarkets_conn_id="mm_nowhere", deadline=time.time() + 5)
        )
    )
    assert event["status"] == "error" and event["error_type"] == "MultiMarketsConfigError"
    assert "'mm_nowhere' is not defined" in event["message"] and "AIRFLOW_CONN_MM_NOWHERE" in event["message"]
    hook_error = None
    try:
        MultiMarketsHook("mm_nowhere").settings  # noqa: B018
    except Exception as exc:
        hook_error = str(exc)
    assert hook_error == event["message"]

    class Conn:
        host, port, login = sandbox.base_url, None, sandbox.api_key
        password = sandbox.private_key

        def __init__(self, extra: str, parsed: Any) -> None:
            self.extra, self.extra_dejson = extra, parsed

    masked: list[str] = []
    settings = settings_from_airflow_connection(
        Conn('{"company_id": 439}', {"company_id": 439}), "x", mask=masked.append
    )
    assert settings.company_id == 439 and masked[0] == sandbox.private_key  # registered with the masker
    overridden = settings_from_airflow_connection(
        Conn('{"company_id": 439}', {"company_id": 439}), "x", overrides={"company_id": 7, "lang": None}
    )
    assert overridden.company_id == 7
    for raw, parsed in (("[1, 2]", [1, 2]), ("42", 42), ("not json", {})):
        with pytest.raises(Exception, match="is not a JSON object"):
            settings_from_airflow_connection(Conn(raw, parsed), "x")
    with pytest.raises(Exception, match="company_id"):  # an empty extra is not malformed: it lacks company_id
        settings_from_airflow_connection(Conn("{}", {}), "x")


def test_one_backoff_rule_for_calls_and_reconnects() -> None:
    from airflow_provider_multimarkets.api.retry import RetryPolicy, backoff_delay

    assert [backoff_delay(n, 1.0, 30.0, rand=lambda: 1.0) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert [backoff_delay(n, 1.0, 30.0, rand=lambda: 0.0) for n in range(3)] == [0.5, 1, 2]
    assert backoff_delay(10_000, 1.0, 30.0, rand=lambda: 1.0) == 30  # no overflow
    policy = RetryPolicy(backoff=0.5, max_backoff=4.0)
    assert policy.delay(3, RuntimeError(), rand=lambda: 1.0) == backoff_delay(3, 0.5, 4.0, rand=lambda: 1.0) == 4.0


# ---- the frame parser: orjson when installed, the same frames and values as the standard library ---


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(push(1)),
        '{"msgCode":"trade","v":NaN}',  # orjson refuses NaN: the standard library takes it
        '{"msgCode":"trade","v":"\\ud800"}',  # a lone surrogate (escaped)
        '{"msgCode":"trade","v":1,"v":2}',  # duplicate keys: the last wins in both
        "[1, 2]",
        "not json",
        "",
    ],
)
def test_fast_and_standard_parsers_agree(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import math

    from airflow_provider_multimarkets.messaging import codec, frames

    def parsed(fast: str) -> Any:
        monkeypatch.setenv("MULTIMARKETS_FAST_JSON", fast)
        monkeypatch.setattr(codec, "_loads", None)
        monkeypatch.setattr(codec, "_bytes_loads", None)
        frame = frames.parse_server_frame(text)
        try:  # the client's hot path on a text frame's bytes: the same frame, or it leaves it to the above
            hot = codec.bytes_loads()(text.encode("utf-8", "surrogatepass"))
        except ValueError:
            hot = frame
        hot = hot if isinstance(hot, dict) else frame  # not an object: the general path as well
        assert hot == frame or (frame is not None and math.isnan(frame["v"]))
        return json.dumps(frame, sort_keys=True) if frame is not None else None

    fast, standard = parsed("1"), parsed("0")
    assert codec.frame_loads().__wrapped__ is json.loads  # type: ignore[attr-defined]  # "0" turned orjson off
    assert fast == standard
    if "NaN" in text:
        assert fast is not None and math.isnan(json.loads(fast)["v"])


def test_the_log_keeps_integers_beyond_64_bits_exactly(use_ws: Any, tmp_path: Path) -> None:
    big = {**push(1), "content": {**push(1)["content"], "dealNo": 123456789012345678901234567890}}
    event, lines, _ = play(use_ws, tmp_path, [big, push(2)], max_messages=2)
    assert event["summary"]["messages"] == 2
    assert "123456789012345678901234567890" in lines[0]  # the text as received, whatever the parser


def test_the_strict_sandbox_sends_only_documented_frames(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Strict mode: login answered (subscribe_success), then nothing but pushes: no pong, no answer to
    subscribe_asset or logout, and the close after logout has code 1000."""
    from websockets.sync.client import connect

    from airflow_provider_multimarkets.messaging.frames import build_frame

    sb = sandbox_factory(SandboxConfig())  # strict by default in the test suite
    set_connection(monkeypatch, sb.connection(retry_backoff=0.01))
    token = MultiMarketsHook().get_msg_token()
    received: list[str] = []
    with connect(sb.ws_url.replace("{appId}", "439"), proxy=None) as ws:
        for i, (kind, data) in enumerate(
            [("login", None), ("subscribe_asset", {"tradeTypes": "2"}), ("ping", None), ("ping", None)], 1
        ):
            ws.send(build_frame(kind, token, i, data=data))
        received.append(str(ws.recv(timeout=30)))  # subscribe_success
        deadline = time.monotonic() + 30
        while not any("2" in s.trade_types for s in sb.state.streams.values()) and time.monotonic() < deadline:
            time.sleep(0.01)  # an event: the subscription is in place
        while sb.app.ws_stats["pings"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # both pings read (and, strict, not answered)
        sb.state.publish(439, "2", "trade", {"bizType": "POSITION_OPEN", "paramMap": {"orderId": "1"}})
        received.append(str(ws.recv(timeout=30)))  # the push, and nothing before it
        ws.send(build_frame("logout", token, 5))
        try:
            while True:
                received.append(str(ws.recv(timeout=10)))
        except Exception as exc:  # ConnectionClosedOK: the server closed after logout
            code = getattr(getattr(exc, "rcvd", None), "code", None)
    codes = [json.loads(text).get("msgCode") for text in received]
    assert codes == ["subscribe_success", "trade"] and code == 1000
