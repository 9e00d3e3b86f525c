"""MultiMarketsHook: signed requests, session reuse, retry rules, typed errors, no leaked secrets."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest
import requests
from conftest import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY, set_connection

from airflow_provider_multimarkets import __version__
from airflow_provider_multimarkets.api.signing import canonical_json, string_to_sign, verify
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsBannedError,
    MultiMarketsConfigError,
    MultiMarketsHTTPError,
    MultiMarketsRateLimitError,
    MultiMarketsResponseError,
    MultiMarketsTransportError,
)
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

BASE = "https://mm.example.test/openapi-c"
TOKEN_URL = f"{BASE}/global/getMsgPushToken"
OK_TOKEN = {
    "msg": "Success",
    "fail": False,
    "trace": "",
    "code": "0",
    "data": "6230de2c-281a-47fe-9d5d-b5f6ac60f482push",
    "bizCode": "",
    "tm": 0,
    "ok": True,
}


@pytest.fixture
def demo_conn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    conn = {
        "conn_type": "multimarkets",
        "host": BASE,
        "login": "1710e1f6b4b54c15bea72e8669966591",
        "password": DEMO_PRIVATE_KEY,
        "extra": {"company_id": 439, "lang": "en-US", "retry_backoff": 0.01, "rate_limit_per_minute": 0},
    }
    set_connection(monkeypatch, conn)
    return conn


def test_header_set_and_signature(demo_conn: dict[str, Any], requests_mock: Any) -> None:
    requests_mock.post(
        f"{BASE}/global/tradeapi.app.CfdMMOrderApiService.addMarketOrder", json=dict(OK_TOKEN, data={"orderId": 1})
    )
    hook = MultiMarketsHook()
    payload = {"symbolId": 720, "bizType": 1, "remark": None, "requestPrice": "2225", "direction": 1}
    assert hook.call(
        "tradeapi.app.CfdMMOrderApiService.addMarketOrder",
        payload,
        version="0.0.1",
        group="tradeApi",
        idempotent=False,
        check=False,
    ) == {"orderId": 1}
    req = requests_mock.request_history[0]
    h = req.headers
    assert h["companyId"] == "439" and h["apiKey"] == "1710e1f6b4b54c15bea72e8669966591"
    assert len(h["timestamp"]) == 13 and h["timestamp"].isdigit()
    assert h["trace"].startswith("x-" + h["timestamp"])
    assert h["recvWindow"] == "5000" and h["lang"] == "en-US"
    assert h["version"] == "0.0.1" and h["group"] == "tradeApi"
    assert h["Content-Type"] == "application/json"
    assert h["User-Agent"].startswith(f"airflow-provider-multimarkets/{__version__} (apache-airflow/")
    # the body sent is exactly the signed canonical text
    assert (
        req.body.decode()
        == canonical_json(payload)
        == '{"bizType":1,"direction":1,"requestPrice":"2225","symbolId":720}'
    )
    assert verify(DEMO_PUBLIC_KEY, string_to_sign(req.body.decode(), h["timestamp"]), h["signature"])
    assert "Authorization" not in h


def test_optional_headers_absent_and_trace_unique(demo_conn: dict[str, Any], requests_mock: Any) -> None:
    requests_mock.post(TOKEN_URL, json=OK_TOKEN)
    hook = MultiMarketsHook()
    hook.get_msg_token()
    hook.get_msg_token()
    first, second = (r.headers for r in requests_mock.request_history)
    assert "version" not in first and "group" not in first
    assert first["trace"] != second["trace"]
    assert requests_mock.request_history[0].body == b"{}"


def test_one_session_reused(demo_conn: dict[str, Any], requests_mock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    requests_mock.post(TOKEN_URL, json=OK_TOKEN)
    made: list[Any] = []
    original = requests.Session.__init__

    def counting(self: Any) -> None:
        made.append(self)
        original(self)

    monkeypatch.setattr(requests.Session, "__init__", counting)
    hook = MultiMarketsHook()
    for _ in range(5):
        hook.get_msg_token()
    assert len(made) == 1 and hook.session is made[0]


def test_key_parsed_once(demo_conn: dict[str, Any], requests_mock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_multimarkets.api import signing

    calls: list[int] = []
    original = signing.load_private_key
    monkeypatch.setattr(signing, "load_private_key", lambda s: calls.append(1) or original(s))
    requests_mock.post(TOKEN_URL, json=OK_TOKEN)
    hook = MultiMarketsHook()
    for _ in range(3):
        hook.get_msg_token()
    assert len(calls) == 1


def test_session_over_real_sockets_keeps_one_connection(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    ports = set()
    for _ in range(5):
        hook.get_msg_token()
        pool = hook.session.get_adapter(sandbox.base_url).poolmanager
        for key in pool.pools.keys():  # noqa: SIM118 - RecentlyUsedContainer is not iterable
            conn_pool = pool.pools[key]
            for conn in list(conn_pool.pool.queue):
                if conn is not None and conn.sock is not None:
                    ports.add(conn.sock.getsockname()[1])
    assert len(ports) == 1
    assert sandbox.state.requests["getMsgPushToken"] == 5


# ---- retry matrix -------------------------------------------------------------------------------


def test_503_then_ok_is_retried(demo_conn: dict[str, Any], requests_mock: Any, sleeps: list[float]) -> None:
    requests_mock.post(
        TOKEN_URL, [{"status_code": 503, "text": "busy"}, {"status_code": 503, "text": "busy"}, {"json": OK_TOKEN}]
    )
    assert MultiMarketsHook().get_msg_token().endswith("push")
    assert requests_mock.call_count == 3 and len(sleeps) == 2
    assert sleeps[1] >= sleeps[0] * 0.5


def test_429_blocks_the_whole_window_or_its_longer_retry_after(
    demo_conn: dict[str, Any], requests_mock: Any, sleeps: list[float]
) -> None:
    # Retry-After 7 s is when one slot frees; the gateway's window is still full: blocked 61 s (issue 26)
    requests_mock.post(
        TOKEN_URL, [{"status_code": 429, "headers": {"Retry-After": "7"}, "text": ""}, {"json": OK_TOKEN}]
    )
    MultiMarketsHook().get_msg_token()
    assert len(sleeps) == 1 and 61.0 < sleeps[0] < 61.2  # the shared block's wait, with jitter
    requests_mock.post(
        TOKEN_URL, [{"status_code": 429, "headers": {"Retry-After": "90"}, "text": ""}, {"json": OK_TOKEN}]
    )
    sleeps.clear()
    MultiMarketsHook().get_msg_token()
    assert len(sleeps) == 1 and 90.0 < sleeps[0] < 90.2


def test_418_longer_than_max_wait_fails_at_once(
    demo_conn: dict[str, Any], requests_mock: Any, sleeps: list[float]
) -> None:
    requests_mock.post(TOKEN_URL, status_code=418, text="")
    with pytest.raises(MultiMarketsBannedError, match=r"HTTP 418\) until about .*Z \(\d+ s from now\)") as info:
        MultiMarketsHook().get_msg_token()
    assert requests_mock.call_count == 1 and sleeps == []
    assert info.value.ban_ends_at is not None
    # every later call in any process that shares the budget fails the same way, sending nothing
    with pytest.raises(MultiMarketsBannedError, match="No call was sent"):
        MultiMarketsHook().get_msg_token()
    assert requests_mock.call_count == 1


def test_418_with_a_short_retry_after_waits_then_retries(
    demo_conn: dict[str, Any], requests_mock: Any, sleeps: list[float]
) -> None:
    requests_mock.post(
        TOKEN_URL, [{"status_code": 418, "headers": {"Retry-After": "30"}, "text": ""}, {"json": OK_TOKEN}]
    )
    assert MultiMarketsHook().get_msg_token().endswith("push")
    assert requests_mock.call_count == 2 and len(sleeps) == 1 and 30 < sleeps[0] < 30.2


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"status_code": 400, "text": "bad"}, MultiMarketsHTTPError),
        ({"json": dict(OK_TOKEN, code="00012001", ok=False)}, MultiMarketsApiError),
        ({"text": "<html>oops</html>"}, MultiMarketsResponseError),
        ({"text": ""}, MultiMarketsResponseError),
    ],
)
def test_never_retried(
    demo_conn: dict[str, Any], requests_mock: Any, sleeps: list[float], answer: dict[str, Any], error: type
) -> None:
    requests_mock.post(TOKEN_URL, **answer)
    with pytest.raises(error):
        MultiMarketsHook().get_msg_token()
    assert requests_mock.call_count == 1 and sleeps == []


def test_retries_are_bounded(demo_conn: dict[str, Any], requests_mock: Any, sleeps: list[float]) -> None:
    requests_mock.post(TOKEN_URL, status_code=502, text="")
    with pytest.raises(MultiMarketsHTTPError):
        MultiMarketsHook(max_retries=2).get_msg_token()
    assert requests_mock.call_count == 3 and len(sleeps) == 2


@pytest.mark.parametrize("idempotent", [True, False])
def test_timeout_on_order_not_retried_but_idempotent_is(
    demo_conn: dict[str, Any], requests_mock: Any, sleeps: list[float], idempotent: bool
) -> None:
    requests_mock.post(TOKEN_URL, [{"exc": requests.exceptions.ReadTimeout("slow")}, {"json": OK_TOKEN}])
    hook = MultiMarketsHook()
    if idempotent:
        assert hook.call("getMsgPushToken").endswith("push")
        assert requests_mock.call_count == 2
    else:
        with pytest.raises(MultiMarketsTransportError, match="may have been processed") as info:
            hook.call("getMsgPushToken", idempotent=False)
        assert info.value.maybe_sent and requests_mock.call_count == 1 and sleeps == []


def test_5xx_and_429_on_order_not_retried(demo_conn: dict[str, Any], requests_mock: Any, sleeps: list[float]) -> None:
    requests_mock.post(
        TOKEN_URL, [{"status_code": 503, "text": ""}, {"status_code": 429, "text": ""}, {"json": OK_TOKEN}]
    )
    hook = MultiMarketsHook()
    with pytest.raises(MultiMarketsHTTPError):
        hook.call("getMsgPushToken", idempotent=False)
    with pytest.raises(MultiMarketsRateLimitError):
        hook.call("getMsgPushToken", idempotent=False)
    assert sleeps == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("idempotent", [True, False])
def test_connection_refused_is_retried_even_for_orders(
    monkeypatch: pytest.MonkeyPatch, sleeps: list[float], idempotent: bool
) -> None:
    set_connection(
        monkeypatch,
        {
            "conn_type": "multimarkets",
            "host": f"http://127.0.0.1:{_closed_port()}",
            "login": "k",
            "password": DEMO_PRIVATE_KEY,
            "extra": {"company_id": 1, "rate_limit_per_minute": 0},
        },
    )
    with pytest.raises(MultiMarketsTransportError, match="request was not sent") as info:
        MultiMarketsHook(max_retries=2).call("getMsgPushToken", idempotent=idempotent)
    assert not info.value.maybe_sent
    assert len(sleeps) == 2


def test_refused_then_server_up_succeeds(sandbox: Any, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    """A real refused connection on the first attempt, the real sandbox on the second."""
    set_connection(monkeypatch, sandbox.connection())
    hook = MultiMarketsHook()
    real_url = hook.settings.base_url
    dead = f"http://127.0.0.1:{_closed_port()}/openapi-c"
    urls = [dead, real_url]
    monkeypatch.setattr(
        type(hook.settings), "url_for", lambda self, b: f"{urls.pop(0) if len(urls) > 1 else urls[0]}/global/{b}"
    )
    assert hook.call("getMsgPushToken", idempotent=False).endswith("push")
    assert len(sleeps) == 1 and sandbox.state.requests["getMsgPushToken"] == 1


def test_tls_error_is_permanent(demo_conn: dict[str, Any], requests_mock: Any, sleeps: list[float]) -> None:
    requests_mock.post(TOKEN_URL, exc=requests.exceptions.SSLError("bad cert"))
    with pytest.raises(MultiMarketsTransportError, match="verify"):
        MultiMarketsHook().get_msg_token()
    assert sleeps == []


def test_tls_verification_on_by_default(demo_conn: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert MultiMarketsHook().session.verify is True


# ---- against the sandbox over loopback -------------------------------------------------------------


def test_sandbox_503_then_ok(mm_conn: dict[str, Any], sandbox: Any) -> None:
    sandbox.add_fault("getMsgPushToken", status=503, times=2)
    assert MultiMarketsHook().get_msg_token().endswith("push")
    assert sandbox.state.requests["getMsgPushToken"] == 1  # the two 503s were answered before the gateway


def test_sandbox_read_timeout_on_order_places_exactly_one_order(mm_conn: dict[str, Any], sandbox: Any) -> None:
    sandbox.add_fault("tradeapi.app.OrderApiService.addMarketOrder", delay=1.5, after_processing=True)
    hook = MultiMarketsHook(timeout=(2, 0.5))
    order = {
        "accountCurrency": "CNY",
        "accountDigits": 2,
        "accountId": 1034124,
        "bizType": 1,
        "direction": 1,
        "entryType": 1,
        "requestNum": "0.1",
        "requestPrice": "167655",
        "requestTime": 1698299972000,
        "symbolId": 8390,
        "tradeType": 2,
    }
    with pytest.raises(MultiMarketsTransportError, match="read timeout"):
        hook.call("tradeapi.app.OrderApiService.addMarketOrder", order, idempotent=False)
    assert len(sandbox.state.orders) == 1


def test_sandbox_signature_and_clock_errors(
    mm_conn: dict[str, Any], sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = dict(mm_conn, password=sandbox.private_key[:-80] + DEMO_PRIVATE_KEY[-80:])
    other = {**mm_conn, "password": DEMO_PRIVATE_KEY}
    set_connection(monkeypatch, other)
    with pytest.raises(MultiMarketsApiError) as info:
        MultiMarketsHook().get_msg_token()
    assert info.value.code == "00012001" and "privateKey" in str(info.value)
    assert bad  # (a corrupted key is covered by the signing tests)
    set_connection(monkeypatch, mm_conn)
    hook = MultiMarketsHook()
    monkeypatch.setattr("airflow_provider_multimarkets.hooks.multimarkets.time.time", lambda: 1_000_000.0)
    with pytest.raises(MultiMarketsApiError) as info:
        hook.get_msg_token()
    assert info.value.code == "00012002" and "recv_window" in str(info.value)


# ---- configuration and secrets ---------------------------------------------------------------------


def test_missing_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NOPE", raising=False)
    with pytest.raises(MultiMarketsConfigError, match="AIRFLOW_CONN_NOPE"):
        MultiMarketsHook("nope").get_msg_token()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"login": None}, "login"),
        ({"password": None}, "password"),
        ({"extra": {}}, "company_id"),
        ({"password": "not-a-key"}, "secretKey"),
        ({"host": "htps://x"}, "host"),
    ],
)
def test_bad_connection_fields_fail_at_first_use(
    monkeypatch: pytest.MonkeyPatch, demo_conn: dict[str, Any], change: dict[str, Any], field: str
) -> None:
    set_connection(monkeypatch, {**demo_conn, **change})
    hook = MultiMarketsHook()  # constructing never touches the connection
    with pytest.raises(MultiMarketsConfigError) as info:
        hook.get_msg_token()
    assert field in str(info.value)
    assert DEMO_PRIVATE_KEY[20:60] not in str(info.value)


def test_unknown_extras_warned_never_sent(
    demo_conn: dict[str, Any],
    requests_mock: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    set_connection(monkeypatch, {**demo_conn, "extra": {**demo_conn["extra"], "X-Debug": "1"}})
    requests_mock.post(TOKEN_URL, json=OK_TOKEN)
    with caplog.at_level(logging.WARNING):
        MultiMarketsHook().get_msg_token()
    assert "X-Debug" in caplog.text + capsys.readouterr().out
    assert "X-Debug" not in requests_mock.request_history[0].headers


def test_test_connection(mm_conn: dict[str, Any], sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = MultiMarketsHook().test_connection()
    assert ok and "439" in message
    set_connection(monkeypatch, {**mm_conn, "login": "unknown-key"})
    ok, message = MultiMarketsHook().test_connection()
    assert not ok and "00012003" in message


def test_no_secret_in_logs_errors_or_reprs(
    demo_conn: dict[str, Any],
    requests_mock: Any,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    requests_mock.post(
        TOKEN_URL,
        [
            {"status_code": 503, "text": "x"},
            {"json": OK_TOKEN},
            {"json": dict(OK_TOKEN, code="00012001", ok=False)},
            {"exc": requests.exceptions.ReadTimeout()},
        ],
    )
    errors: list[str] = []
    hook = MultiMarketsHook()
    with caplog.at_level(logging.DEBUG):
        token = hook.get_msg_token()
        for _ in range(2):
            try:
                hook.call("getMsgPushToken", idempotent=False)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{exc!s} {exc!r}")
    out = capsys.readouterr()
    signatures = [r.headers["signature"] for r in requests_mock.request_history]
    haystack = "\n".join([caplog.text, out.out, out.err, *errors, repr(hook), repr(hook.settings), repr(hook.signer)])
    secret_compact = DEMO_PRIVATE_KEY
    for needle in [secret_compact, secret_compact[100:140], token, *signatures]:
        assert needle not in haystack
    assert len(errors) == 2


def test_secret_and_token_are_registered_with_the_masker(demo_conn: dict[str, Any], requests_mock: Any) -> None:
    try:
        from airflow.sdk.log import _secrets_masker  # type: ignore[attr-defined]
    except ImportError:
        try:  # Airflow 3.0
            from airflow.sdk.execution_time.secrets_masker import _secrets_masker  # type: ignore[no-redef]
        except ImportError:  # Airflow 2.x
            from airflow.utils.log.secrets_masker import _secrets_masker  # type: ignore[no-redef]

    requests_mock.post(TOKEN_URL, json=OK_TOKEN)
    token = MultiMarketsHook().get_msg_token()
    masker = _secrets_masker()
    text = f"secret={DEMO_PRIVATE_KEY} token={token}"
    redacted = masker.redact(text)
    assert DEMO_PRIVATE_KEY not in redacted and token not in redacted


def test_biz_type_validated(demo_conn: dict[str, Any]) -> None:
    with pytest.raises(MultiMarketsConfigError, match="bizType"):
        MultiMarketsHook().call("../admin")
    with pytest.raises(MultiMarketsConfigError, match="bizType"):
        MultiMarketsHook().call("")


def test_payload_is_json_serialisable_only(demo_conn: dict[str, Any]) -> None:
    from airflow_provider_multimarkets.exceptions import MultiMarketsSigningError

    with pytest.raises(MultiMarketsSigningError):
        MultiMarketsHook().call("getMsgPushToken", {"when": object()})


def test_context_manager_closes_session(demo_conn: dict[str, Any], requests_mock: Any) -> None:
    requests_mock.post(TOKEN_URL, json=OK_TOKEN)
    with MultiMarketsHook() as hook:
        hook.get_msg_token()
        assert "session" in hook.__dict__
    assert "session" not in hook.__dict__
    json.dumps(OK_TOKEN)


def test_proxy_environment_read_once_and_honoured(demo_conn: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    session = MultiMarketsHook().session
    assert session.trust_env is False
    assert session.proxies.get("https") == "http://proxy.internal:3128"


def test_no_proxy_bypass_and_ca_bundle(demo_conn: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "mm.example.test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    session = MultiMarketsHook().session
    assert "https" not in session.proxies
    assert session.verify == "/etc/ssl/certs/ca-certificates.crt"
