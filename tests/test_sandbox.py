"""The sandbox behaves like the documented gateway; driven through the real hook where a client is involved."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ORDER_BIZ_TYPE, ORDER_BODY, FakeTime, set_connection

from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsBannedError,
    MultiMarketsHTTPError,
    MultiMarketsRateLimitError,
    MultiMarketsResponseError,
    MultiMarketsTransportError,
)
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.sandbox import HttpFault, SandboxConfig
from airflow_provider_multimarkets.trading.reports import account_list


@pytest.fixture
def sandbox_factory(sandbox_factory: Any) -> Any:
    """The sandbox outside its strict mode: this file checks its own answers too (pong, acks, 4001/4008)."""

    def make(config: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("strict", False)
        return sandbox_factory(config, **kwargs)

    return make


ORDER_ISOLATED = ORDER_BIZ_TYPE
ORDER_CROSS = "tradeapi.app.CfdMMOrderApiService.addMarketOrder"
ISOLATED_BODY = ORDER_BODY
CROSS_BODY = {
    "accountCurrency": "USDT",
    "accountDigits": 2,
    "bizType": 1,
    "direction": 2,
    "requestNum": "0.5",
    "requestPrice": "2225",
    "requestTime": 1698299972000,
    "symbolId": 720,
    "tradeType": 1,
}


# ---- an independent implementation of the digest's §3 recipe (not our signing module) --------------


def independent_sign(private_b64: str, body: dict[str, Any], timestamp: int) -> tuple[bytes, str]:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    def canon(value: Any) -> str:
        if isinstance(value, dict):
            keys = sorted((k for k in value if value[k] is not None), key=lambda k: k.encode("utf-16-be"))
            return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + canon(value[k]) for k in keys) + "}"
        if isinstance(value, list):
            return "[" + ",".join(canon(v) for v in value) + "]"
        return json.dumps(value, ensure_ascii=False)

    text = canon(body)
    key = serialization.load_der_private_key(base64.b64decode(private_b64), password=None)
    sig = key.sign((text.replace('"', "") + str(timestamp)).encode("utf-8"), padding.PKCS1v15(), hashes.SHA1())  # type: ignore[union-attr,call-arg]
    return text.encode("utf-8"), base64.b64encode(sig).decode()


def raw_post(
    sandbox: Any, biz_type: str, body: bytes, sig: str, ts: int, header_changes: dict[str, Any] | None = None
) -> dict[str, Any]:
    header_changes = header_changes or {}
    headers = {
        "companyId": str(sandbox.company_id),
        "trace": f"x-{ts}-test",
        "timestamp": str(ts),
        "apiKey": sandbox.api_key,
        "signature": sig,
        "recvWindow": "5000",
        "Content-Type": "application/json",
    }
    headers.update({k: v for k, v in header_changes.items() if v is not None})
    for k, v in header_changes.items():
        if v is None:
            headers.pop(k, None)
    resp = requests.post(f"{sandbox.base_url}/global/{biz_type}", data=body, headers=headers, timeout=5)
    return {"status": resp.status_code, **resp.json()}


def test_independently_signed_request_is_accepted_and_one_byte_change_rejected(sandbox: Any) -> None:
    ts = int(time.time() * 1000)
    body = {"customerGroupId": 12, "zeta": "价格", "alpha": {"b": 1, "a": [1, 2]}, "nothing": None}
    raw, sig = independent_sign(sandbox.private_key, body, ts)
    ok = raw_post(sandbox, "config.app.AppSymbolDubboService.getSymbolBaseList", raw, sig, ts)
    assert ok["code"] == "0" and ok["ok"] is True and ok["trace"] == f"x-{ts}-test"
    tampered = raw.replace(b'"customerGroupId":12', b'"customerGroupId":13')
    assert tampered != raw and len(tampered) == len(raw)
    bad = raw_post(sandbox, "config.app.AppSymbolDubboService.getSymbolBaseList", tampered, sig, ts)
    assert bad["code"] == "00012001" and bad["ok"] is False and bad["fail"] is True


def test_envelope_shape(sandbox: Any) -> None:
    ts = int(time.time() * 1000)
    raw, sig = independent_sign(sandbox.private_key, {}, ts)
    answer = raw_post(sandbox, "getMsgPushToken", raw, sig, ts)
    assert set(answer) == {"status", "code", "msg", "bizCode", "tm", "trace", "msgParams", "data", "ok", "fail"}
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}push", answer["data"])


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"companyId": None}, "GGATEWAY_CODE_003"),
        ({"trace": None}, "GGATEWAY_CODE_004"),
        ({"signature": None}, "GGATEWAY_CODE_009"),
        ({"timestamp": None}, "GGATEWAY_CODE_009"),
        ({"apiKey": "no-such-key"}, "00012003"),
        ({"companyId": "1"}, "00012004"),
        ({"recvWindow": "soon"}, "00012002"),
    ],
)
def test_gateway_header_rules(sandbox: Any, changes: dict[str, Any], code: str) -> None:
    ts = int(time.time() * 1000)
    raw, sig = independent_sign(sandbox.private_key, {}, ts)
    answer = raw_post(sandbox, "getMsgPushToken", raw, sig, ts, changes)
    assert answer["code"] == code and answer["data"] == "getMsgPushToken"


@pytest.mark.parametrize("skew_ms", [-6000, 6000, -600000])
def test_time_window(sandbox: Any, skew_ms: int) -> None:
    ts = int(time.time() * 1000) + skew_ms
    raw, sig = independent_sign(sandbox.private_key, {}, ts)
    assert raw_post(sandbox, "getMsgPushToken", raw, sig, ts)["code"] == "00012002"
    # a wider recvWindow admits the 6 s skews, never more than the server's maximum
    wide = raw_post(sandbox, "getMsgPushToken", raw, sig, ts, {"recvWindow": "10000"})["code"]
    assert wide == ("0" if abs(skew_ms) < 10000 else "00012002")


def test_body_must_be_a_json_object(sandbox: Any) -> None:
    ts = int(time.time() * 1000)
    assert raw_post(sandbox, "getMsgPushToken", b"[1]", "x", ts)["code"] == "GGATEWAY_CODE_015"
    assert raw_post(sandbox, "getMsgPushToken", b"{oops", "x", ts)["code"] == "GGATEWAY_CODE_015"


def test_raw_signature_mode_signs_the_text_as_sent(sandbox_factory: Any) -> None:
    sb = sandbox_factory(SandboxConfig(signature_mode="raw"))
    ts = int(time.time() * 1000)
    unsorted = b'{"b":1,"a":2}'
    _, sorted_sig = independent_sign(sb.private_key, {"b": 1, "a": 2}, ts)
    assert raw_post(sb, "getMsgPushToken", unsorted, sorted_sig, ts)["code"] == "00012001"
    canonical, sig = independent_sign(sb.private_key, {"a": 2, "b": 1}, ts)
    assert raw_post(sb, "getMsgPushToken", canonical, sig, ts)["code"] == "0"


def test_gateway_error_status_is_configurable(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sb = sandbox_factory(SandboxConfig(gateway_error_status=401))
    set_connection(monkeypatch, {**sb.connection(), "login": "wrong"})
    with pytest.raises(MultiMarketsApiError) as info:
        MultiMarketsHook().get_msg_token()
    assert info.value.code == "00012003" and info.value.http_status == 401


# ---- endpoints through the hook ------------------------------------------------------------------


def test_endpoints(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    info = hook.call("customer.app.CustomerWebApiService.findCustomerInfo", version="0.0.1")
    # the schema's object (one member per account), not the examples' array
    assert info["companyId"] == 439 and isinstance(info["accountList"], dict)
    account = next(a for a in account_list(info) if a["tradeType"] == 2)
    assert info["accountList"][str(account["accountId"])] == account
    assert {"accountId", "currency", "digits", "balance", "equity", "margin", "freeMargin"} <= set(account)
    assert all(isinstance(account[k], str) for k in ("balance", "equity", "margin"))
    symbols = hook.call(
        "config.app.AppSymbolDubboService.getSymbolBaseList", {"customerGroupId": info["customerGroupId"]}
    )
    eur = next(s for s in symbols if s["symbolCode"] == "EURAUD")
    assert eur["symbolDigits"] == 5 and eur["inTradeTime"] == 1 and eur["tradeTimeList"]
    order = hook.call(ORDER_ISOLATED, ISOLATED_BODY, version="0.0.1", group="tradeApi", idempotent=False)
    assert {"orderId", "positionId", "executePrice", "symbolId", "digits"} <= set(order)
    assert re.fullmatch(r"\d+\.\d{5}", order["executePrice"])
    cross = hook.call(ORDER_CROSS, CROSS_BODY, version="0.0.1", group="tradeApi", idempotent=False)
    assert cross["symbolName"] == "BINAN_SOL_USDT" and cross["orderId"] == order["orderId"] + 1
    assert len(sandbox.state.orders) == 2


@pytest.mark.parametrize(
    ("biz", "change", "code"),
    [
        (ORDER_ISOLATED, {"symbolId": None}, "CFDWBWE000005"),
        (ORDER_ISOLATED, {"entryType": None}, "CFDWBWE000005"),
        (ORDER_ISOLATED, {"requestPrice": "1.67655"}, "CFDWBWE000006"),
        (ORDER_ISOLATED, {"requestNum": "lots"}, "CFDWBWE000006"),
        (ORDER_ISOLATED, {"direction": "1"}, "CFDWBWE000006"),
        (ORDER_ISOLATED, {"tradeType": 1}, "CFDWBWE000007"),
        (ORDER_ISOLATED, {"direction": 3}, "CFDWBWE000007"),
        (ORDER_ISOLATED, {"symbolId": 424242}, "CFDWBWE000013"),
        (ORDER_ISOLATED, {"symbolId": 9001, "requestPrice": "235140"}, "CFDWBWE000016"),
        (ORDER_ISOLATED, {"requestNum": "1000"}, "CFDWBWE000026"),
        (ORDER_ISOLATED, {"accountCurrency": "USD"}, "CFDWBWE000007"),
        (ORDER_CROSS, {"tradeType": 2}, "CFDWBWE000007"),
        (ORDER_CROSS, {"symbolId": 8390}, "CFDWBWE000013"),
        # the vendor's OpenAPI types: strings stay strings, requestTime is 13-digit milliseconds
        (ORDER_ISOLATED, {"requestNum": 0.1}, "CFDWBWE000006"),
        (ORDER_ISOLATED, {"requestPrice": 167655}, "CFDWBWE000006"),
        (ORDER_ISOLATED, {"stopLoss": 160000}, "CFDWBWE000006"),
        (ORDER_ISOLATED, {"requestTime": 1698299972}, "CFDWBWE000006"),
        (ORDER_ISOLATED, {"expireType": 9}, "CFDWBWE000007"),
        (ORDER_ISOLATED, {"blacklist": "yes"}, "CFDWBWE000006"),
        (ORDER_ISOLATED, {"source": "my source!"}, "CFDWBWE000006"),
        (ORDER_ISOLATED, {"bizType": 12}, "CFDWBWE000007"),  # limit open is full-margin only
        (ORDER_CROSS, {"bizType": 13}, "CFDWBWE000007"),
        # a close needs the positionId of an open position of the account
        (ORDER_ISOLATED, {"bizType": 2}, "CFDWBWE000005"),
        (ORDER_ISOLATED, {"bizType": 2, "positionId": 1}, "CFDWBWE000007"),
        (ORDER_CROSS, {"bizType": 2, "positionId": 1}, "CFDWBWE000007"),
        # by amount (entryType 2): requestNum is a notional that must buy at least 0.01 lots
        (ORDER_ISOLATED, {"entryType": 2, "requestNum": "100"}, "CFDWBWE000026"),
    ],
)
def test_order_validation(mm_conn: dict[str, Any], sandbox: Any, biz: str, change: dict[str, Any], code: str) -> None:
    body = {**(ISOLATED_BODY if biz == ORDER_ISOLATED else CROSS_BODY), **change}
    with pytest.raises(MultiMarketsApiError) as info:
        MultiMarketsHook().call(biz, body, idempotent=False, check=False)  # the sandbox's own checks
    assert info.value.code == code
    if code == "CFDWBWE000026" and change.get("entryType") != 2:
        assert info.value.msg == "quantity must be within 0.01-100 lots and a multiple of 0.01 lots"
    assert sandbox.state.orders == []


def test_orders_follow_the_spec(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    opened = hook.call(ORDER_ISOLATED, {**ISOLATED_BODY, "bizType": 1, "source": "System"}, idempotent=False)
    assert opened["source"] == "System" and opened["openOrClose"] == 1
    default = hook.call(ORDER_ISOLATED, ISOLATED_BODY, idempotent=False)
    assert default["source"] == "OpenAPI"  # the response's required field, also without one in the request
    cross = hook.call(ORDER_CROSS, CROSS_BODY, idempotent=False)
    assert "source" not in cross  # the full-margin answer documents no source: the sandbox sends none
    hook.call(
        ORDER_ISOLATED,
        {**ISOLATED_BODY, "bizType": 2, "direction": 2, "positionId": default["positionId"]},
        idempotent=False,
    )
    # a close of the wrong direction, or more than the position holds, is refused
    close = {**ISOLATED_BODY, "bizType": 2, "direction": 2, "positionId": opened["positionId"]}
    for change, code in (({"direction": 1}, "CFDWBWE000007"), ({"requestNum": "0.50"}, "CFDWBWE000026")):
        with pytest.raises(MultiMarketsApiError) as info:
            hook.call(ORDER_ISOLATED, {**close, **change}, idempotent=False)
        assert info.value.code == code
    closed = hook.call(ORDER_ISOLATED, close, idempotent=False)
    assert closed["openOrClose"] == 2 and closed["positionId"] == opened["positionId"]
    with pytest.raises(MultiMarketsApiError) as info:  # the position is gone
        hook.call(ORDER_ISOLATED, close, idempotent=False)
    assert info.value.code == "CFDWBWE000007"
    # pending orders (10/11) are accepted for both variants, with no fill yet
    pending = hook.call(ORDER_ISOLATED, {**ISOLATED_BODY, "bizType": 10}, idempotent=False)
    assert pending["positionId"] == 0 and pending["executePrice"] == "0"
    page = hook.call("tradeapi.app.OrderApiService.queryOrderPage", {"tradeType": 2, "bizType": 10})
    assert page["total"] == 1 and page["records"][0]["status"] == 1
    # by amount: requestNum is a notional; the lots follow from the price and contract size
    by_amount = hook.call(ORDER_ISOLATED, {**ISOLATED_BODY, "entryType": 2, "requestNum": "50000"}, idempotent=False)
    lots = float(by_amount["tradeVolume"])
    assert 0.01 <= lots < 1 and lots == round(lots, 2)
    assert all(isinstance(sandbox.state.orders[-1]["request"][k], str) for k in ("requestNum", "requestPrice"))


def test_customer_info_has_every_field_of_the_spec(mm_conn: dict[str, Any], sandbox: Any) -> None:
    import yaml

    spec_path = Path(__file__).resolve().parents[1].parent / "shared" / "MultiMarkets-ClientAPI.openapi.en.yaml"
    if not spec_path.exists():
        pytest.skip(f"the vendor's OpenAPI file is not at {spec_path}")
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    schema = spec["paths"]["/global/customer.app.CustomerWebApiService.findCustomerInfo"]["post"]["responses"]["200"]
    fields = schema["content"]["application/json"]["schema"]["properties"]["data"]["properties"]
    info = MultiMarketsHook().call("customer.app.CustomerWebApiService.findCustomerInfo")
    assert set(fields) <= set(info), sorted(set(fields) - set(info))
    kinds = {"integer": int, "string": str, "boolean": bool}
    for name, field in fields.items():
        expected = kinds.get(field.get("type"))
        if expected is not None:
            value = info[name]
            assert isinstance(value, expected) and (expected is bool or not isinstance(value, bool)), name
    assert len(fields) == 53


@pytest.mark.parametrize(("body", "code"), [({}, "CFDWBWE000005"), ({"customerGroupId": "abc"}, "CFDWBWE000006")])
def test_symbol_list_validation(mm_conn: dict[str, Any], body: dict[str, Any], code: str) -> None:
    with pytest.raises(MultiMarketsApiError) as info:
        MultiMarketsHook().call("config.app.AppSymbolDubboService.getSymbolBaseList", body, check=False)
    assert info.value.code == code


def test_unknown_biz_type(mm_conn: dict[str, Any]) -> None:
    with pytest.raises(MultiMarketsApiError) as info:
        MultiMarketsHook().call("nope.app.Service.method")
    assert info.value.code == "GGATEWAY_CODE_002" and info.value.data == "nope.app.Service.method"


# ---- rate limit and ban ------------------------------------------------------------------------------


class ShiftedClock:
    """Real time plus an offset the test can advance (the time window still checks real stamps)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class FrozenClock:
    """A clock that moves only when advanced (here: by the hook's waits, which do not sleep)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limit_429_then_418_ban_escalates(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ShiftedClock()
    sb = sandbox_factory(
        SandboxConfig(rate_limit=5, rate_window=60, ban_seconds=300, default_recv_window=10**9, max_recv_window=10**9),
        clock=clock,
    )
    # the sandbox's own escalation: each call from a fresh hook with an in-process budget, so the
    # provider's ban breaker (which would never call into the 429) does not hide the gateway's rules
    set_connection(
        monkeypatch,
        sb.connection(rate_limit_per_minute=0, max_retries=0, recv_window=10**9, rate_limit_store="process"),
    )

    class FreshHook:
        def get_msg_token(self) -> str:
            return MultiMarketsHook().get_msg_token()

    hook = FreshHook()
    for _ in range(5):
        hook.get_msg_token()
    with pytest.raises(MultiMarketsRateLimitError) as limited:
        hook.get_msg_token()
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 60
    with pytest.raises(MultiMarketsBannedError):
        hook.get_msg_token()  # calling on after a 429
    clock.offset += 120  # the window has passed, but the ban (5 min) has not
    with pytest.raises(MultiMarketsBannedError):
        hook.get_msg_token()
    clock.offset += 200  # 320 s after the ban: lifted
    hook.get_msg_token()
    for _ in range(4):
        hook.get_msg_token()
    with pytest.raises(MultiMarketsRateLimitError):
        hook.get_msg_token()
    with pytest.raises(MultiMarketsBannedError):
        hook.get_msg_token()
    clock.offset += 400  # second ban lasts 10 minutes
    with pytest.raises(MultiMarketsBannedError):
        hook.get_msg_token()
    clock.offset += 250
    hook.get_msg_token()
    record = sb.state.keys[sb.api_key]
    assert record.bans == 2


def test_waiting_out_a_429_is_not_a_ban(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # the sandbox's clock moves only when the hook waits: four calls always fall in one window, however
    # busy the machine, and the wait for Retry-After is what opens the next one
    clock = FrozenClock()

    class Waits(FakeTime):  # the hook's and the budget's waits move both clocks, and do not sleep
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            clock.advance(seconds)

    waits = Waits()
    monkeypatch.setattr("airflow_provider_multimarkets.api.budget.time", waits)
    monkeypatch.setattr("airflow_provider_multimarkets.hooks.multimarkets.time.sleep", waits.sleep)
    sb = sandbox_factory(
        SandboxConfig(rate_limit=3, rate_window=2.0, default_recv_window=10**9, max_recv_window=10**9), clock=clock
    )
    set_connection(monkeypatch, sb.connection(rate_limit_per_minute=0, max_retries=1, recv_window=10**9))
    hook = MultiMarketsHook()
    for _ in range(4):  # the 4th gets a 429, honours Retry-After, then succeeds
        hook.get_msg_token()
    # a 429 blocks the key for the budget's whole window (60 s plus its margin), not only Retry-After: the
    # gateway's window is still full when one slot frees (api/budget.py CallBudget.record)
    from airflow_provider_multimarkets.api.budget import SAFETY_MARGIN_SECONDS

    assert "getMsgPushToken:429:00012005" in sb.state.answers
    assert 2.0 <= sum(waits.sleeps) <= 60 + SAFETY_MARGIN_SECONDS + 2.5
    assert not any(":418:" in k for k in sb.state.answers)


# ---- faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ({"status": 503}, MultiMarketsHTTPError, "HTTP 503"),
        ({"status": 400, "msg": "bad"}, MultiMarketsApiError, "400"),
        ({"html": True}, MultiMarketsHTTPError, "HTML"),
        ({"html": True, "status": 200}, MultiMarketsResponseError, "HTML page"),
        ({"empty": True}, MultiMarketsResponseError, "empty body"),
        ({"truncate": True}, MultiMarketsResponseError, "truncated"),
        ({"wrong_type": True}, MultiMarketsResponseError, "not an object"),
        ({"envelope": "00012007", "msg": "ip not allowed"}, MultiMarketsApiError, "Bind this worker's egress IP"),
        ({"drop": True}, MultiMarketsTransportError, "in flight"),
        ({"status": 429, "retry_after": "3"}, MultiMarketsRateLimitError, "Retry-After: 3 s"),
    ],
)
def test_http_faults(
    mm_conn: dict[str, Any],
    sandbox: Any,
    monkeypatch: pytest.MonkeyPatch,
    fault: dict[str, Any],
    error: type,
    words: str,
) -> None:
    set_connection(monkeypatch, sandbox.connection(max_retries=0))
    sandbox.add_fault("getMsgPushToken", **fault)
    with pytest.raises(error, match=re.escape(words)):
        MultiMarketsHook().get_msg_token()
    MultiMarketsHook().get_msg_token()  # the fault is used up


def test_fault_delay_times_out_client_and_wildcard(
    mm_conn: dict[str, Any], sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, sandbox.connection(max_retries=0, timeout=[2, 0.3]))
    sandbox.add_fault("*", delay=1.0, times=None)
    with pytest.raises(MultiMarketsTransportError, match="read timeout"):
        MultiMarketsHook().call("customer.app.CustomerWebApiService.findCustomerInfo")
    sandbox.state.faults.clear()
    MultiMarketsHook().get_msg_token()


def test_fault_spec_parsing() -> None:
    biz, fault = HttpFault.parse("getMsgPushToken:status=503,times=2,retry_after=4")
    assert (biz, fault.status, fault.times, fault.retry_after) == ("getMsgPushToken", 503, 2, "4")
    biz, fault = HttpFault.parse("*:drop=1,after_processing=true,times=forever")
    assert (biz, fault.drop, fault.after_processing, fault.times) == ("*", True, True, None)
    with pytest.raises(ValueError, match="unknown fault option"):
        HttpFault.parse("x:explode=1")


# ---- message WebSocket ---------------------------------------------------------------------------------


def frame(msg_type: str, token: str, seq: int, data: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {
        "head": {"msgType": msg_type, "token": token, "sendTime": int(time.time() * 1000), "lang": "en-US"},
        "device": 1,
        "seqId": seq,
        "trace": f"x-{int(time.time() * 1000)}-{seq}",
    }
    if data is not None:
        body["data"] = data
    return json.dumps(body)


async def ws_session(url: str, steps: Any) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(url, autoping=True) as ws:
        return await steps(ws)


async def recv_json(ws: Any, timeout: float = 5.0) -> Any:
    msg = await ws.receive(timeout=timeout)
    if msg.type.name != "TEXT":
        return msg
    return json.loads(msg.data)


def ws_url(sandbox: Any) -> str:
    return sandbox.ws_url.replace("{appId}", "439")


def test_ws_login_subscribe_ping_and_trade_push(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    token = hook.get_msg_token()

    async def steps(ws: Any) -> list[Any]:
        got = []
        await ws.send_str(frame("login", token, 1))
        got.append(await recv_json(ws))
        await ws.send_str(frame("subscribe_asset", token, 2, {"tradeTypes": "2"}))
        got.append(await recv_json(ws))
        await ws.send_str(frame("ping", token, 3))
        got.append(await recv_json(ws))
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: hook.call(ORDER_ISOLATED, ISOLATED_BODY, idempotent=False)
        )
        got.append(await recv_json(ws))
        await ws.send_str(frame("cancel_subscribe_asset", token, 4, {"tradeTypes": "2"}))
        got.append(await recv_json(ws))
        await ws.send_str(frame("logout", token, 5))
        got.append(await recv_json(ws))
        return got

    login, sub, pong, trade, cancel, logout = asyncio.run(ws_session(ws_url(sandbox), steps))
    assert login["msgCode"] == "subscribe_success" and login["content"]["code"] == "0" and login["seqId"] == 1
    assert sub["content"]["tradeTypes"] == "2"
    assert pong["msgCode"] == "pong" and pong["seqId"] == 3
    assert trade["msgCode"] == "trade" and trade["seqId"] == 1
    assert set(trade) == {"msgCode", "timestamp", "trace", "seqId", "content"}
    params = trade["content"]["paramMap"]
    assert trade["content"]["bizType"] == "POSITION_OPEN" and params["orderStatus"] == "2"
    assert params["orderId"] == str(sandbox.state.orders[0]["response"]["orderId"])
    assert all(isinstance(v, str) for v in params.values())
    assert cancel["content"]["tradeTypes"] == ""
    assert logout["msgCode"] == "logout"


def test_ws_refuses_unknown_token_and_frames_before_login(sandbox: Any) -> None:
    async def steps(ws: Any) -> list[Any]:
        await ws.send_str(frame("subscribe_asset", "x", 1, {"tradeTypes": "2"}))
        early = await recv_json(ws)
        await ws.send_str(frame("login", f"{uuid.uuid4()}push", 2))
        refused = await recv_json(ws)
        closed = await ws.receive(timeout=5)
        return [early, refused, closed, ws.close_code]

    early, refused, closed, code = asyncio.run(ws_session(ws_url(sandbox), steps))
    assert early["content"]["code"] == "GGATEWAY_CODE_001"
    assert refused["msgCode"] == "subscribe_fail" and refused["content"]["code"] == "GGATEWAY_CODE_005"
    assert "getMsgPushToken" in refused["content"]["msg"]
    assert code == 4001


def test_ws_refuse_login_fault_and_malformed_client_frame(mm_conn: dict[str, Any], sandbox: Any) -> None:
    token = MultiMarketsHook().get_msg_token()
    sandbox.state.faults.ws.refuse_login = True

    async def steps(ws: Any) -> list[Any]:
        await ws.send_str("not json")
        bad = await recv_json(ws)
        await ws.send_str(frame("login", token, 1))
        return [bad, await recv_json(ws)]

    bad, refused = asyncio.run(ws_session(ws_url(sandbox), steps))
    assert bad["content"]["code"] == "GGATEWAY_CODE_015"
    assert refused["content"]["code"] == "GGATEWAY_CODE_005"


def test_ws_ping_timeout_closes(mm_conn: dict[str, Any], sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sb = sandbox_factory(SandboxConfig(ping_timeout=0.4))
    set_connection(monkeypatch, sb.connection())
    token = MultiMarketsHook().get_msg_token()

    async def steps(ws: Any) -> Any:
        await ws.send_str(frame("login", token, 1))
        await recv_json(ws)
        started = time.monotonic()
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type.name in ("CLOSE", "CLOSED", "CLOSING"):
                return ws.close_code, time.monotonic() - started

    code, _ = asyncio.run(ws_session(ws_url(sb), steps))
    assert code == 4008
    assert sb.app.ws_stats["ping_timeouts"] == 1


@pytest.mark.parametrize(("redeliver_seconds", "resumed"), [(0.0, [3, 4, 5]), (30.0, [1, 2, 3, 4, 5])])
def test_ws_drop_and_resume_redelivers_with_same_seq(
    sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch, redeliver_seconds: float, resumed: list[int]
) -> None:
    sandbox = sandbox_factory(SandboxConfig(redeliver_seconds=redeliver_seconds))
    set_connection(monkeypatch, sandbox.connection())
    hook = MultiMarketsHook()
    token = hook.get_msg_token()
    sandbox.state.faults.ws.drop_after = 3
    sandbox.state.faults.ws.drop_times = 1

    async def first(ws: Any) -> list[int]:
        await ws.send_str(frame("login", token, 1))
        await recv_json(ws)
        await ws.send_str(frame("subscribe_asset", token, 2, {"tradeTypes": "2"}))
        await recv_json(ws)
        loop = asyncio.get_running_loop()
        for _ in range(5):
            await loop.run_in_executor(None, lambda: hook.call(ORDER_ISOLATED, ISOLATED_BODY, idempotent=False))
        seqs = []
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type.name != "TEXT":
                return seqs
            seqs.append(json.loads(msg.data)["seqId"])

    async def second(ws: Any) -> list[int]:
        await ws.send_str(frame("login", token, 1))
        await recv_json(ws)
        seqs = []
        for _ in range(len(resumed)):
            seqs.append((await recv_json(ws))["seqId"])
        return seqs

    assert asyncio.run(ws_session(ws_url(sandbox), first)) == [1, 2, 3]
    # resumed stream: the recently delivered pushes again (same seqId: duplicates to drop), then the rest
    assert asyncio.run(ws_session(ws_url(sandbox), second)) == resumed


def test_ws_malformed_push_frames_and_trade_stream(
    mm_conn: dict[str, Any], sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = sandbox_factory(SandboxConfig(trade_stream_rate=200))
    set_connection(monkeypatch, sb.connection())
    token = MultiMarketsHook().get_msg_token()
    sb.state.faults.ws.malformed_every = 5

    async def steps(ws: Any) -> tuple[int, int, list[int]]:
        await ws.send_str(frame("login", token, 1))
        await recv_json(ws)
        await ws.send_str(frame("subscribe_asset", token, 2, {"tradeTypes": "1,2"}))
        await recv_json(ws)
        good = bad = 0
        seqs = []
        while good < 40:
            msg = await ws.receive(timeout=5)
            try:
                data = json.loads(msg.data)
            except ValueError:
                bad += 1
                continue
            good += 1
            seqs.append(data["seqId"])
        return good, bad, seqs

    good, bad, seqs = asyncio.run(ws_session(ws_url(sb), steps))
    assert good == 40 and bad >= 7
    assert seqs == list(range(seqs[0], seqs[0] + 40))


def test_ws_silent_server(mm_conn: dict[str, Any], sandbox: Any) -> None:
    token = MultiMarketsHook().get_msg_token()
    sandbox.state.faults.ws.silent = True

    async def steps(ws: Any) -> Any:
        await ws.send_str(frame("ping", token, 1))
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.5)
        sandbox.state.faults.ws.silent = False  # recovered: the waiting ping is answered
        return await recv_json(ws)

    assert asyncio.run(ws_session(ws_url(sandbox), steps))["msgCode"] == "pong"


def test_ws_unknown_app_id_when_required(sandbox_factory: Any) -> None:
    import aiohttp

    sb = sandbox_factory(SandboxConfig(require_app_id="app-1"))

    async def connect() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(sb.ws_url.replace("{appId}", "other")):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(connect()) == 404


# ---- the command line --------------------------------------------------------------------------------


def test_cli_starts_prints_connection_and_serves_the_hook(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "keys.json"
    conn_file = tmp_path / "conn.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_multimarkets.sandbox.cli",
            "--port",
            "0",
            "--key-file",
            str(key_file),
            "--connection-file",
            str(conn_file),
            "--fault",
            "getMsgPushToken:status=503,times=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        assert lines[0].startswith("MultiMarkets sandbox listening on http://127.0.0.1:")
        export = lines[2].strip()
        assert export.startswith("export AIRFLOW_CONN_MULTIMARKETS_DEFAULT='")
        conn = json.loads(export.split("=", 1)[1].strip("'"))
        assert conn == json.loads(conn_file.read_text())
        assert {"host", "login", "password", "extra"} <= set(conn)
        assert {"company_id", "msg_ws_url"} <= set(conn["extra"])
        assert json.loads(key_file.read_text())["apiKey"] == conn["login"]
        set_connection(monkeypatch, {**conn, "extra": {**conn["extra"], "retry_backoff": 0.01}})
        assert MultiMarketsHook().get_msg_token().endswith("push")  # after one injected 503
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "getMsgPushToken -> HTTP 200" in err and "injected fault" in err
    assert conn["password"] not in err + out.replace(export, "")
    assert json.loads(out.strip().splitlines()[-1])["requests"] == {"getMsgPushToken": 1}


def test_cli_without_the_sandbox_extra_says_which_extra() -> None:
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "from airflow_provider_multimarkets.sandbox.cli import main\n"
        "raise SystemExit(main(['--port', '0']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "pip install 'airflow-provider-multimarkets[sandbox]'" in out.stderr
    assert "Traceback" not in out.stderr
