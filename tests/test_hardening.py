"""Hardening: every call is bounded in time and size, every bad input is a MultiMarketsError that
names the field and the fix (never a raw exception, never a secret), and the UI's Test button
answers at once and truthfully."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_PRIVATE_KEY, set_connection

from airflow_provider_multimarkets.api.settings import settings_from_connection
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsBannedError,
    MultiMarketsConfigError,
    MultiMarketsError,
    MultiMarketsRateLimitError,
    MultiMarketsResponseError,
    MultiMarketsSigningError,
    MultiMarketsTransportError,
)
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.trading.reports import summarize_pushes, write_report

SECRET_PARTS = (DEMO_PRIVATE_KEY[20:60], "hunter2")
TOKEN_BODY = b'{"code":"0","msg":"Success","data":"6230de2c-281a-47fe-9d5d-b5f6ac60f482push","ok":true}'


def _no_secret(text: str) -> None:
    for part in SECRET_PARTS:
        assert part not in text


# ---- a raw server that misbehaves at the byte level -----------------------------------------------------


class RawServer:
    """Accepts connections on 127.0.0.1 and answers each with ``handler(conn)`` (bounded by ``stop``)."""

    def __init__(self, handler: Callable[[socket.socket, threading.Event], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.handler = handler
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            conn.recv(65536)  # the request (small enough to arrive at once on loopback)
            self.handler(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, threading.Event], None]], RawServer]]:
    servers: list[RawServer] = []

    def make(handler: Callable[[socket.socket, threading.Event], None]) -> RawServer:
        server = RawServer(handler)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _conn_to(port: int, monkeypatch: pytest.MonkeyPatch, scheme: str = "http", **extra: Any) -> None:
    set_connection(
        monkeypatch,
        {
            "conn_type": "multimarkets",
            "host": f"{scheme}://127.0.0.1:{port}/openapi-c",
            "login": "1710e1f6b4b54c15bea72e8669966591",
            "password": DEMO_PRIVATE_KEY,
            "extra": {"company_id": 439, "rate_limit_store": "process", "retry_backoff": 0.01, **extra},
        },
    )


def _drip_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(600):  # a byte every 0.2 s, for up to two minutes
        if stop.wait(0.2):
            return
        conn.sendall(b" ")


def _drip_headers(conn: socket.socket, stop: threading.Event) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 600:
        if stop.wait(0.2):
            return
        conn.sendall(bytes([byte]))


@pytest.mark.parametrize("handler", [_drip_body, _drip_headers], ids=["slow body", "slow headers"])
@pytest.mark.parametrize("idempotent", [True, False])
def test_a_call_never_outlives_its_deadline(
    raw_server: Any, monkeypatch: pytest.MonkeyPatch, handler: Any, idempotent: bool
) -> None:
    server = raw_server(handler)
    _conn_to(server.port, monkeypatch, call_deadline=1.5, timeout=[2, 5], max_retries=1)
    with pytest.raises(
        MultiMarketsTransportError, match=r"within the call deadline of 1.5 s .*may have been processed"
    ) as info:
        MultiMarketsHook().call("getMsgPushToken", {}, idempotent=idempotent)
    assert info.value.maybe_sent  # an order is never retried on it


def _huge_body(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500000000\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(8000):
        if stop.is_set():
            return
        conn.sendall(chunk)


def _gzip_bomb(conn: socket.socket, stop: threading.Event) -> None:
    bomb = gzip.compress(b"\0" * 200_000_000, compresslevel=9)  # ~200 kB on the wire
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        + f"Content-Length: {len(bomb)}\r\n\r\n".encode()
        + bomb
    )


@pytest.mark.parametrize("handler", [_huge_body, _gzip_bomb], ids=["500 MB body", "gzip bomb"])
def test_answers_are_capped_after_decompression(raw_server: Any, monkeypatch: pytest.MonkeyPatch, handler: Any) -> None:
    server = raw_server(handler)
    _conn_to(server.port, monkeypatch, max_response_bytes=1_000_000, max_retries=0)
    with pytest.raises(MultiMarketsResponseError, match="larger than 1000000 bytes \\(after decompression\\)"):
        MultiMarketsHook().get_msg_token()


# ---- Retry-After: never sooner than asked, never with no wait, fail at once when too long -------------------

TOKEN_URL = "https://api.example.test/openapi-c/global/getMsgPushToken"


@pytest.fixture
def mocked_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(
        monkeypatch,
        {
            "conn_type": "multimarkets",
            "host": "https://api.example.test/openapi-c",
            "login": "1710e1f6b4b54c15bea72e8669966591",
            "password": DEMO_PRIVATE_KEY,
            "extra": {"company_id": 439, "retry_backoff": 0.01},
        },
    )


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "Thu, 01 Jan 1970 00:00:00 GMT", "soon", ""])
def test_unusable_retry_after_waits_a_whole_window(
    mocked_conn: None, requests_mock: Any, sleeps: list[float], value: str
) -> None:
    requests_mock.post(
        TOKEN_URL,
        [{"status_code": 429, "headers": {"Retry-After": value} if value else {}, "text": ""}, {"content": TOKEN_BODY}],
    )
    MultiMarketsHook().get_msg_token()
    assert requests_mock.call_count == 2 and len(sleeps) == 1 and sleeps[0] >= 60  # never "retry now"


@pytest.mark.parametrize("value", ["300", "86400", "Fri, 01 Jan 2100 00:00:00 GMT"])
def test_retry_after_beyond_the_max_wait_fails_at_once_saying_when(
    mocked_conn: None, requests_mock: Any, sleeps: list[float], value: str
) -> None:
    requests_mock.post(TOKEN_URL, status_code=429, headers={"Retry-After": value}, text="")
    with pytest.raises(
        MultiMarketsRateLimitError, match=r"until about 20\d\d-.*Z .*No call was sent. Call again after"
    ):
        MultiMarketsHook().get_msg_token()
    assert requests_mock.call_count == 1 and sleeps == []


def test_max_retries_is_bounded() -> None:
    with pytest.raises(MultiMarketsConfigError, match="'max_retries' must be at most 10"):
        settings_from_connection(
            host=None, port=None, login="k", password="p", extra={"company_id": 1, "max_retries": 50}
        )


# ---- credentials in the host ------------------------------------------------------------------------


def test_credentials_in_the_host_are_refused_without_echoing_them() -> None:
    with pytest.raises(MultiMarketsConfigError, match="'host' contains a user name or password") as info:
        settings_from_connection(
            host="https://admin:hunter2@api.example.test/openapi-c",
            port=None,
            login="k",
            password="p",
            extra={"company_id": 1},
        )
    _no_secret(str(info.value))


def test_no_authorization_header_is_ever_sent(
    mocked_conn: None, requests_mock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.example.test login admin password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    requests_mock.post(TOKEN_URL, content=TOKEN_BODY)
    MultiMarketsHook().get_msg_token()
    assert "Authorization" not in requests_mock.last_request.headers


# ---- every bad input is a MultiMarkets error naming the field ---------------------------------------------

BAD_SETTINGS = [
    ({"extra": {"company_id": 1, "timeout": "inf"}}, "'timeout'"),
    ({"extra": {"company_id": 1, "timeout": [1, 1e12]}}, "'timeout'"),
    ({"extra": {"company_id": 1, "rate_limit_window": "inf"}}, "'rate_limit_window'"),
    ({"extra": {"company_id": 1, "rate_limit_window": 1e9}}, "'rate_limit_window'"),
    ({"extra": {"company_id": 1, "verify": "/no/such/ca-bundle.pem"}}, "'verify'"),
    ({"host": "https://" + "a" * 64 + ".example.com"}, "'host'"),
    ({"host": "http://[::1:8080/openapi-c"}, "'host'"),
    ({"extra": 5}, "JSON int, not an object"),
    ({"extra": {"company_id": 1, "lang": "en\nUS"}}, "'lang'"),
    ({"extra": {"company_id": 1, "lang": "中文"}}, "'lang'"),
    ({"login": "clé-api"}, "'login'"),
]


@pytest.mark.parametrize(("override", "names"), BAD_SETTINGS)
def test_bad_settings_are_config_errors(override: dict[str, Any], names: str) -> None:
    kwargs: dict[str, Any] = {
        "host": "https://api.example.test/openapi-c",
        "port": None,
        "login": "1710e1f6b4b54c15bea72e8669966591",
        "password": "hunter2",
        "extra": {"company_id": 1},
    }
    kwargs.update(override)
    with pytest.raises(MultiMarketsConfigError) as info:
        settings_from_connection(**kwargs)
    assert names in str(info.value)
    _no_secret(str(info.value))


@pytest.mark.parametrize(
    ("payload", "error", "words"),
    [
        ({"remark": "bad \udc80 text"}, MultiMarketsSigningError, "lone surrogate"),
        ({1: "a", "1": "b"}, MultiMarketsSigningError, "key that is not a string: 1"),
        ({(1, 2): "a"}, MultiMarketsSigningError, "key that is not a string"),
        ({None: "a"}, MultiMarketsSigningError, "key that is not a string"),
        ({True: "a"}, MultiMarketsSigningError, "key that is not a string"),
    ],
)
def test_bad_payloads_fail_before_sending(
    mocked_conn: None, requests_mock: Any, payload: dict[Any, Any], error: type, words: str
) -> None:
    with pytest.raises(error, match=words):
        MultiMarketsHook().call("getMsgPushToken", payload)
    assert requests_mock.call_count == 0


def test_deep_payload_fails_before_sending(mocked_conn: None, requests_mock: Any) -> None:
    payload: dict[str, Any] = {}
    cursor = payload
    for _ in range(496):
        cursor["a"] = {}
        cursor = cursor["a"]
    with pytest.raises(MultiMarketsSigningError, match="nests deeper than 32 levels"):
        MultiMarketsHook().call("getMsgPushToken", payload)
    assert requests_mock.call_count == 0


@pytest.mark.parametrize(("name", "value"), [("version", "0.0.1\n"), ("group", "交易"), ("group", "trade api")])
def test_bad_header_arguments_are_config_errors_never_maybe_sent(
    mocked_conn: None, requests_mock: Any, name: str, value: str
) -> None:
    with pytest.raises(MultiMarketsConfigError, match=f"The {name} header value"):
        MultiMarketsHook().call("getMsgPushToken", {}, idempotent=False, **{name: value})
    assert requests_mock.call_count == 0


# ---- reports ----------------------------------------------------------------------------------------------


def _trade(amount: str, name: str = "EURAUD") -> str:
    return json.dumps(
        {
            "msgCode": "trade",
            "seqId": 1,
            "content": {
                "bizType": "POSITION_OPEN",
                "paramMap": {"symbolName": name, "orderStatus": "2", "dealAmount": amount},
            },
        }
    )


def test_reports_never_write_nan_and_escape_formulas(tmp_path: Path) -> None:
    summary = summarize_pushes(
        [_trade("NaN"), _trade("0.1"), _trade("Infinity"), _trade('=HYPERLINK("http://x")', "=cmd|' /C calc'!A0")]
    )
    assert summary["bad_values"] == 3
    paths = write_report({**summary, "ratio": float("nan")}, summary["trades_by_symbol_and_status"], tmp_path, "r")
    text = Path(paths["json"]).read_text()
    json.loads(text)  # valid JSON: no NaN / Infinity
    assert "NaN" not in text and "Infinity" not in text and '"ratio": null' in text
    with Path(paths["csv"]).open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["symbol"] for r in rows} == {"EURAUD", "'=cmd|' /C calc'!A0"}
    assert next(r for r in rows if r["symbol"] == "EURAUD")["lots"] == "0.1"


# ---- transport truths -----------------------------------------------------------------------------------


def test_many_threads_share_one_hook_without_pool_warnings(
    sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_multimarkets.sandbox import SandboxConfig

    sandbox = sandbox_factory(SandboxConfig(rate_limit=100_000))
    set_connection(monkeypatch, sandbox.connection(rate_limit_per_minute=0))
    hook = MultiMarketsHook()
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(30):
                hook.get_msg_token()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and sandbox.state.requests["getMsgPushToken"] == 480
    assert "Connection pool is full" not in caplog.text


def test_https_to_a_plain_http_server_says_so(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = sandbox.connection(max_retries=0)
    conn["host"] = conn["host"].replace("http://", "https://")
    set_connection(monkeypatch, conn)
    with pytest.raises(MultiMarketsTransportError, match="does not speak TLS.*Use http://"):
        MultiMarketsHook().get_msg_token()


FD_PROBE = r"""
import os, resource, json, sys
os.environ["AIRFLOW_CONN_MULTIMARKETS_DEFAULT"] = sys.argv[1]
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.exceptions import MultiMarketsError
hook = MultiMarketsHook()
hook.get_msg_token()  # every module imported, every file opened
hook.session.close()  # the next call needs a new socket
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
hold = []
try:
    while True:
        hold.append(open(os.devnull))
except OSError:
    pass
try:
    hook.get_msg_token()
except MultiMarketsError as exc:
    print("ERROR", exc)
"""


def test_file_descriptor_exhaustion_is_named(sandbox: Any) -> None:
    conn = json.dumps(sandbox.connection(max_retries=0, rate_limit_store="process"))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); exec(open(0).read())",
            conn,
        ],
        input=FD_PROBE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "ran out of file descriptors (Too many open files)" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "too short" not in out.stdout + out.stderr  # no masking noise from short extra values


# ---- the UI's Test button ----------------------------------------------------------------------------


def test_test_connection_to_a_dead_port_answers_once_and_names_the_api_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _conn_to(port, monkeypatch, max_retries=3)
    ok, message = MultiMarketsHook().test_connection()
    assert not ok and "the Airflow API server can reach it" in message and "this worker" not in message


def test_test_connection_does_not_retry(mocked_conn: None, requests_mock: Any) -> None:
    requests_mock.post(TOKEN_URL, status_code=503, text="busy")
    ok, _ = MultiMarketsHook().test_connection()
    assert not ok and requests_mock.call_count == 1


def test_wrong_company_hint_names_the_company_id_field(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, sandbox.connection(company_id=440))
    ok, message = MultiMarketsHook().test_connection()
    assert not ok and "00012004" in message and "Company ID" in message


def test_wrong_key_message_does_not_repeat_itself(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_multimarkets.sandbox.keys import generate_key_pair

    conn = sandbox.connection()
    conn["password"] = generate_key_pair()[0]
    set_connection(monkeypatch, conn)
    ok, message = MultiMarketsHook().test_connection()
    assert not ok and "00012001" in message
    assert message.count("signature verification failed") == 1


def test_banned_key_test_answers_at_once(mocked_conn: None, requests_mock: Any, sleeps: list[float]) -> None:
    requests_mock.post(TOKEN_URL, status_code=418, headers={"Retry-After": "30"}, text="")
    ok, message = MultiMarketsHook().test_connection()
    assert not ok and "418" in message and sleeps == []


def test_errors_are_multimarkets_errors() -> None:
    for cls in (MultiMarketsApiError, MultiMarketsBannedError, MultiMarketsResponseError):
        assert issubclass(cls, MultiMarketsError)
