"""The rules of the simulated gateway, independent of the web library.

``SandboxState.handle_http`` applies the gateway rules in the order a gateway would (headers,
apiKey, ban, rate limit, time window, signature as a Java server checks it, company), then the
documented interface: its ``version``/``group``, its body against the request schema (the sandbox's
own copy of the spec, :mod:`.contract`), and its handler, whose answer is shaped into the
interface's documented ``data``. Every one of the 284 documented bizTypes is served: the trading
interfaces from the books (:mod:`~airflow_provider_multimarkets.sandbox.trading`), a few from seed data, the rest from the spec's
examples and schemas. Requests with an ``idempotency-key`` header go through the documented cache
(:mod:`.idempotency`).

The message hub keeps one stream per msg token, so a client that reconnects with the same token
resumes where it was (at-least-once: the last delivered pushes are sent again and carry the same
``seqId``, which is how a client recognises duplicates).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_multimarkets.sandbox import data, java_sign
from airflow_provider_multimarkets.sandbox.contract import BizError, Contract
from airflow_provider_multimarkets.sandbox.faults import FaultPlan
from airflow_provider_multimarkets.sandbox.idempotency import (
    CODE_CONCURRENT,
    MSG_CONCURRENT,
    IdempotencyCache,
    Key,
    cache_key,
)
from airflow_provider_multimarkets.sandbox.trading import (
    CLOSING_ORDER_BIZ_TYPES,
    FULL_ORDER_BIZ_TYPES,
    ISOLATED_ORDER_BIZ_TYPES,
    PENDING_ORDER_BIZ_TYPES,
    THIRD_PARTY_ORDER_RE,
    TradingBooks,
)

log = logging.getLogger("multimarkets.sandbox")

__all__ = [
    "CLOSING_ORDER_BIZ_TYPES",
    "FULL_ORDER_BIZ_TYPES",
    "ISOLATED_ORDER_BIZ_TYPES",
    "PENDING_ORDER_BIZ_TYPES",
    "THIRD_PARTY_ORDER_RE",
    "ApiKeyRecord",
    "BizError",
    "HttpAnswer",
    "MsgStream",
    "SandboxConfig",
    "SandboxState",
]

BIZ_TOKEN = "getMsgPushToken"  # noqa: S105 - a bizType, not a secret
BIZ_CUSTOMER = "customer.app.CustomerWebApiService.findCustomerInfo"
BIZ_SYMBOLS = "config.app.AppSymbolDubboService.getSymbolBaseList"
BIZ_ORDER_CROSS = "tradeapi.app.CfdMMOrderApiService.addMarketOrder"
BIZ_ORDER_ISOLATED = "tradeapi.app.OrderApiService.addMarketOrder"
BIZ_ORDER_PAGE = "tradeapi.app.OrderApiService.queryOrderPage"
BIZ_TRADE_RECORDS = "tradeapi.app.OrderApiService.queryTradeRecordPage"
BIZ_CAPITAL_FLOW = "tradeapi.app.OrderApiService.queryCapitalFlowList"
BIZ_POSITION_PAGE = "tradeapi.app.PositionApiService.queryPositionPage"
REQUIRED_HEADERS = ("companyId", "trace", "timestamp", "apiKey", "signature")
TRADE_TYPES = {"1", "2", "5", "6"}
#: ``paging_fault``: a server that ignores ``current`` (page 1 every time), or whose count says the
#: query is one page (``total_page_1``) or empty (``total_page_0``) while its pages are full
PAGING_FAULTS = ("", "ignore_current", "total_page_1", "total_page_0")


@dataclass
class SandboxConfig:
    rate_limit: int = 100
    """Calls per ``rate_window`` seconds per apiKey before a 429."""
    rate_window: float = 60.0
    ban_seconds: float = 300.0
    """First ban after calling on past a 429; each later ban adds this much again (5, 10, 15 min)."""
    default_recv_window: int = 5000
    max_recv_window: int = 60000
    gateway_error_status: int = 200
    """HTTP status of gateway error envelopes (00012001...); the docs leave it open."""
    signature_mode: str = "canonical"
    """``canonical``: the server writes the parsed body again as a Java server would (:mod:`.java_sign`);
    ``raw``: it signs the raw text."""
    token_ttl: float = 24 * 3600.0
    ping_timeout: float = 60.0
    """A message connection that sends no ping for this long is closed."""
    redeliver_on_resume: int = 1
    """Pushes sent again, with their seqId, when a token's stream resumes on a new connection..."""
    redeliver_seconds: float = 5.0
    """...together with every push sent in this many seconds before the resume (at-least-once: a push
    written to a connection that was dying may never have been read)."""
    order_push_delay: float = 0.0
    trade_stream_rate: float = 0.0
    """Synthetic trade pushes per second to every subscribed stream (0: off)."""
    trade_stream_limit: int | None = None
    trade_stream_types: frozenset[str] | None = None
    """The trade types the synthetic stream pushes to (``None``: every subscribed one). ``{"1"}`` keeps
    trade type 2 (the isolated-margin account the example orders use) to the user's own orders."""
    require_app_id: str | None = None
    seed: int = 7
    pnl_interval: float = 0.0
    """Seconds between profit-and-loss text frames (``f(...)`` trade type 1, ``g(...)`` trade type 2)
    to every connection subscribed to those trade types (0: off), as the vendor's H5 client reads them."""
    strict_frames: bool = False
    """Send on the message WebSocket only what the docs and the vendor's H5 client show: pushes
    (``trade``, ``notice``), ``subscribe_success``/``subscribe_fail`` for the login, ``disconnect``,
    ``UserForceLogoutRet`` and the ``f(...)``/``g(...)`` text frames. No ``pong``, no answer to
    ``subscribe_asset``/``cancel_subscribe_asset``/``logout``, no ``error`` frames, and every close
    with code 1000 (close codes 4001/4008 have no source)."""
    burst_after_subscribe: int = 0
    """Benchmark mode: right after a subscribe, send this many pre-rendered trade pushes as fast as
    the socket takes them (seqId and trace still unique), then carry on normally."""
    sign_charset: str = "UTF-8"
    """The charset the gateway signs with (``getBytes()`` with the JVM's default): UTF-8, GBK or ISO-8859-1."""
    check_version_group: bool = True
    """Refuse a documented interface called without (or with another) documented ``version``/``group``."""
    account_list: str = "map"
    """``findCustomerInfo.accountList``: ``map`` (the schema's object, keyed by accountId) or ``array`` (the examples)."""
    idempotency_ttl: float = 24 * 3600.0
    """How long an answer stays cached under its ``idempotency-key`` (the documented 24 h)."""
    paging_fault: str = ""
    """Make the paged queries of the books lie: ``ignore_current``, ``total_page_1`` or ``total_page_0``."""
    hold_timeout: float = 120.0
    """The longest a held request (``Sandbox.hold``) waits to be released."""

    def __post_init__(self) -> None:
        if self.sign_charset not in java_sign.CHARSETS:
            raise ValueError(f"sign_charset must be one of {', '.join(java_sign.CHARSETS)}, not {self.sign_charset!r}")
        if self.account_list not in data.ACCOUNT_LIST_SHAPES:
            raise ValueError(f"account_list must be one of {', '.join(data.ACCOUNT_LIST_SHAPES)}")
        if self.paging_fault not in PAGING_FAULTS:
            raise ValueError(f"paging_fault must be one of {PAGING_FAULTS}")


@dataclass
class ApiKeyRecord:
    api_key: str
    public_key: str
    company_id: int
    calls: deque[float] = field(default_factory=deque)
    over_limit: bool = False
    banned_until: float = 0.0
    bans: int = 0


@dataclass
class MsgStream:
    """The message stream of one msg token: subscription, outbox and delivered tail."""

    token: str
    company_id: int
    issued_at: float
    trade_types: set[str] = field(default_factory=set)
    next_seq: int = 1
    outbox: deque[dict[str, Any]] = field(default_factory=deque)
    delivered: deque[tuple[float, dict[str, Any]]] = field(default_factory=lambda: deque(maxlen=20000))
    connections: int = 0
    attached: bool = False
    wake: Callable[[], None] | None = None
    pushed: int = 0
    expired: bool = False
    closed_at: float | None = None
    """When the server last closed a connection of this stream itself (monotonic)."""
    detached_at: float | None = None
    """When the last connection of this stream ended (monotonic): what it was sent just before may
    never have been read."""


@dataclass
class HttpAnswer:
    status: int
    envelope: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)
    #: the interface answered it (its data or a business error): what the idempotency cache keeps
    from_interface: bool = False


@dataclass
class Admitted:
    """A request the gateway let through to the interface."""

    biz_type: str
    headers: dict[str, str]
    body: dict[str, Any]
    record: ApiKeyRecord
    trace: str
    started: float
    #: the body as received
    text: str = ""
    idempotency: Key | None = None


Handler = Callable[[ApiKeyRecord, dict[str, Any], dict[str, str]], Any]


class SandboxState(TradingBooks):
    def __init__(self, config: SandboxConfig | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config or SandboxConfig()
        self.clock = clock  # type: ignore[method-assign]
        self.contract = Contract.load()
        self.faults = FaultPlan()
        self.lock = threading.RLock()
        self.keys: dict[str, ApiKeyRecord] = {}
        self.streams: dict[str, MsgStream] = {}
        self.requests: Counter[str] = Counter()
        #: every request that reached the server, faulted ones included (``requests`` counts handled ones)
        self.received: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.orders: list[dict[str, Any]] = []
        #: open positions by positionId; closed ones (with their close), for the closing records
        self.positions: dict[int, dict[str, Any]] = {}
        self.closed_positions: list[dict[str, Any]] = []
        #: the customer's leverage per (company, trade type, symbol)
        self.leverage: dict[tuple[int, int, int], int] = {}
        #: seeded discrepancies, for reconciliation scenarios: orders whose trade record is withheld,
        #: and trade records of fills that have no order here
        self.withheld_trade_records: set[int] = set()
        self.unmatched_trade_records: list[dict[str, Any]] = []
        #: (arrival time, bizType, HTTP status, envelope code) of every handled request, for scenarios
        #: that check the gateway's view: calls in any 60 s, calls received during a ban
        self.call_log: deque[tuple[float, str, int, str]] = deque(maxlen=200_000)
        #: the last signatures received (for secret audits in tests)
        self.seen_signatures: deque[str] = deque(maxlen=10000)
        #: the last request headers received (lower-case names), for tests of what a client sends
        self.seen_headers: deque[tuple[str, dict[str, str]]] = deque(maxlen=1000)
        self.rng = random.Random(self.config.seed)
        self.accounts: dict[int, list[dict[str, Any]]] = {}
        self.symbols = {s["symbolId"]: s for s in data.seed_symbols()}
        self.prices = dict(data.START_PRICES)
        self._next_order = 21257491
        self._next_position = 2023102650229
        self.on_publish: Callable[[MsgStream], None] | None = None
        self.idempotency = IdempotencyCache(ttl=self.config.idempotency_ttl, clock=self.clock)
        #: bizTypes whose processing waits until the event is set (``Sandbox.hold``), for concurrency tests
        self.holds: dict[str, threading.Event] = {}
        self._endpoints: dict[str, Handler] = {
            BIZ_TOKEN: self._msg_token,
            BIZ_CUSTOMER: self._customer_info,
            BIZ_SYMBOLS: self._symbols,
            **self.trading_endpoints(),
        }

    # ---- setup ------------------------------------------------------------------------------

    def register_key(self, api_key: str, public_key: str, company_id: int = data.COMPANY_ID) -> None:
        with self.lock:
            self.keys[api_key] = ApiKeyRecord(api_key, public_key, company_id)

    def accounts_of(self, company_id: int) -> list[dict[str, Any]]:
        if company_id not in self.accounts:
            self.accounts[company_id] = data.seed_accounts(company_id)
        return self.accounts[company_id]

    def endpoints(self) -> dict[str, Handler]:
        """The interfaces with a handler of their own (the others answer from the spec)."""
        return dict(self._endpoints)

    # ---- HTTP gateway -------------------------------------------------------------------------

    def envelope(
        self,
        trace: str,
        *,
        data_: Any = None,
        code: str = "0",
        msg: str = "Success",
        msg_params: str | None = None,
        started: float | None = None,
    ) -> dict[str, Any]:
        ok = code == "0"
        return {
            "code": code,
            "msg": msg,
            "bizCode": "" if ok else "MS",
            "tm": int(((self.clock() - started) if started else 0) * 1000),
            "trace": trace,
            "msgParams": msg_params,
            "data": data_,
            "ok": ok,
            "fail": not ok,
        }

    def handle_http(self, biz_type: str, headers: dict[str, str], raw_body: bytes) -> HttpAnswer:
        """Apply the gateway rules and the endpoint, return status and envelope (the idempotency
        cache included; a concurrent duplicate needs the server's asynchronous path)."""
        answer, admitted = self.admit(biz_type, headers, raw_body)
        if admitted is None:
            assert answer is not None
            return answer
        cached = self.claim(admitted)
        if cached is not None:
            return cached
        return self.serve(admitted)

    def admit(
        self, biz_type: str, headers: dict[str, str], raw_body: bytes
    ) -> tuple[HttpAnswer | None, Admitted | None]:
        """The gateway's checks: ``(answer, None)`` when it answers itself, ``(None, admitted)`` otherwise."""
        started = self.clock()
        lower = {k.lower(): v for k, v in headers.items()}
        with self.lock:
            self.requests[biz_type] += 1
            self.seen_headers.append((biz_type, lower))
            result = self._gateway(biz_type, lower, raw_body, started)
            if isinstance(result, HttpAnswer):
                self._count(biz_type, result, started)
                return result, None
            return None, result

    def claim(self, admitted: Admitted) -> HttpAnswer | None:
        """The idempotency cache: the cached answer, a refusal of a concurrent duplicate, or ``None``
        (then the request is in flight under its key until :meth:`serve` ends)."""
        key = cache_key(admitted.biz_type, admitted.headers)
        if key is None:
            return None
        state, cached = self.idempotency.begin(key)
        answer: HttpAnswer | None = None
        if state == "cached":
            answer = cached
        elif state == "busy":
            envelope = self.envelope(admitted.trace, data_=admitted.biz_type, code=CODE_CONCURRENT, msg=MSG_CONCURRENT)
            answer = HttpAnswer(200, envelope)
        else:
            admitted.idempotency = key
        if answer is not None:
            with self.lock:
                self._count(admitted.biz_type, answer, admitted.started)
        return answer

    def serve(self, admitted: Admitted) -> HttpAnswer:
        """The interface: version/group, the body against its schema, its handler, the shaped answer."""
        answer: HttpAnswer | None = None
        try:
            with self.lock:
                answer = self._serve(admitted)
                self._count(admitted.biz_type, answer, admitted.started)
            return answer
        finally:
            if admitted.idempotency is not None:  # cached for the next request with the key; free on a crash
                self.idempotency.finish(admitted.idempotency, answer)

    def _count(self, biz_type: str, answer: HttpAnswer, started: float) -> None:
        code = answer.envelope.get("code") if answer.envelope else str(answer.status)
        self.answers[f"{biz_type}:{answer.status}:{code}"] += 1
        self.call_log.append((started, biz_type, answer.status, str(code)))

    def _gateway_error(self, trace: str, code: str, msg: str, biz_type: str) -> HttpAnswer:
        return HttpAnswer(self.config.gateway_error_status, self.envelope(trace, data_=biz_type, code=code, msg=msg))

    def _gateway(self, biz_type: str, headers: dict[str, str], raw: bytes, started: float) -> HttpAnswer | Admitted:
        trace = headers.get("trace", "")
        for name in REQUIRED_HEADERS:
            if not headers.get(name.lower()):
                code = {"companyId": "GGATEWAY_CODE_003", "trace": "GGATEWAY_CODE_004"}.get(name, "GGATEWAY_CODE_009")
                return self._gateway_error(trace, code, f"request header {name} is empty", biz_type)
        self.seen_signatures.append(headers["signature"])
        record = self.keys.get(headers["apikey"])
        if record is None:
            return self._gateway_error(trace, "00012003", "API_KEY does not exist", biz_type)

        now = self.clock()
        limited = self._rate_limit(record, now, trace, biz_type)
        if limited is not None:
            return limited

        try:
            ts = int(headers["timestamp"])
            window = int(headers.get("recvwindow") or self.config.default_recv_window)
        except ValueError:
            return self._gateway_error(trace, "00012002", "timestamp/recvWindow must be milliseconds", biz_type)
        window = min(window, self.config.max_recv_window)
        if abs(now * 1000 - ts) > window:
            return self._gateway_error(trace, "00012002", "request outside the time window", biz_type)

        try:
            text = raw.decode("utf-8")
            body = java_sign.parse(text) if text.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            return self._gateway_error(trace, "GGATEWAY_CODE_015", f"illegal request params: {exc}", biz_type)
        if not isinstance(body, dict):
            return self._gateway_error(trace, "GGATEWAY_CODE_015", "request body must be a JSON object", biz_type)
        if self.config.signature_mode == "raw":
            signed = text.replace('"', "") + headers["timestamp"]
        else:
            try:  # a body no client could have signed (nesting too deep)
                signed = java_sign.text_to_sign(body, headers["timestamp"])
            except java_sign.JavaJsonError as exc:
                return self._gateway_error(trace, "GGATEWAY_CODE_015", f"illegal request body: {exc}", biz_type)
        signed_bytes = java_sign.java_bytes(signed, self.config.sign_charset)
        if not java_sign.verify(record.public_key, signed_bytes, headers["signature"]):
            return self._gateway_error(trace, "00012001", "signature verification failed", biz_type)
        if headers["companyid"].strip() != str(record.company_id):
            return self._gateway_error(trace, "00012004", "no permission for this company", biz_type)
        if biz_type not in self.contract:
            return self._gateway_error(trace, "GGATEWAY_CODE_002", "invalid business type", biz_type)
        return Admitted(biz_type, headers, body, record, trace, started, text)

    def _serve(self, admitted: Admitted) -> HttpAnswer:
        biz_type, body, trace = admitted.biz_type, admitted.body, admitted.trace
        try:
            if self.config.check_version_group:
                self.contract.check_headers(biz_type, admitted.headers)
            self.contract.check_body(biz_type, body, admitted.text)
            handler = self._endpoints.get(biz_type)
            result = handler(admitted.record, body, admitted.headers) if handler else self.contract.shape(biz_type)
            answer_data = self.contract.shape(biz_type, result)
            if biz_type == BIZ_CUSTOMER and self.config.account_list == "array" and isinstance(answer_data, dict):
                answer_data["accountList"] = list(result["accountList"])  # the examples' shape, on request
        except BizError as exc:
            envelope = self.envelope(
                trace, data_=None, code=exc.code, msg=exc.msg, msg_params=exc.msg_params, started=admitted.started
            )
            return HttpAnswer(200, envelope, from_interface=True)
        envelope = self.envelope(trace, data_=answer_data, started=admitted.started)
        return HttpAnswer(200, self.contract.shape_envelope(biz_type, envelope), from_interface=True)

    def _rate_limit(self, record: ApiKeyRecord, now: float, trace: str, biz_type: str) -> HttpAnswer | None:
        cfg = self.config
        if now < record.banned_until:
            return HttpAnswer(
                418,
                self.envelope(trace, data_=biz_type, code="00012005", msg="API key disabled for calling on after 429"),
                {"Retry-After": str(int(record.banned_until - now) + 1)},
            )
        calls = record.calls
        while calls and now - calls[0] >= cfg.rate_window:
            calls.popleft()
        if len(calls) < cfg.rate_limit:
            record.over_limit = False
            calls.append(now)
            return None
        retry_after = cfg.rate_window - (now - calls[0])
        if record.over_limit:
            record.bans += 1
            record.banned_until = now + cfg.ban_seconds * record.bans
            log.warning(
                "apiKey %s... banned for %.0f s (call after 429)", record.api_key[:6], cfg.ban_seconds * record.bans
            )
            return HttpAnswer(
                418,
                self.envelope(trace, data_=biz_type, code="00012005", msg="API key disabled for calling on after 429"),
                {"Retry-After": str(int(cfg.ban_seconds * record.bans))},
            )
        record.over_limit = True
        return HttpAnswer(
            429,
            self.envelope(trace, data_=biz_type, code="00012005", msg="requests too frequent"),
            {"Retry-After": f"{max(retry_after, 0.001):.3f}"},
        )

    # ---- endpoints of the seed data -------------------------------------------------------------------

    def _msg_token(self, record: ApiKeyRecord, body: dict[str, Any], headers: dict[str, str]) -> str:
        token = f"{uuid.uuid4()}push"
        self.streams[token] = MsgStream(token=token, company_id=record.company_id, issued_at=self.clock())
        return token

    def _customer_info(self, record: ApiKeyRecord, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        accounts = [dict(a) for a in self.accounts_of(record.company_id)]
        return data.customer_info(record.company_id, accounts, self.config.account_list)

    def _symbols(self, record: ApiKeyRecord, body: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
        return [dict(s) for s in self.symbols.values()]

    def page(self, biz_type: str, rows: list[Any], current: int, size: int, extra: dict[str, Any] | None = None) -> Any:
        """One page of the books' ``rows`` as the interface documents it, lying as ``paging_fault`` says."""
        fault = self.config.paging_fault
        answer = self.contract.page(biz_type, rows, 1 if fault == "ignore_current" else current, size, extra)
        if fault in ("total_page_1", "total_page_0") and isinstance(answer, dict):
            for name in ("total", "totalPage"):
                if name in answer:
                    answer[name] = int(fault[-1]) if name == "totalPage" else min(answer[name], int(fault[-1]) * size)
        return answer

    # ---- message hub --------------------------------------------------------------------------

    def resume(self, stream: MsgStream) -> None:
        """Queue again, in order and ahead of new pushes, what a resumed stream may have missed."""
        cfg = self.config
        ended = stream.detached_at if stream.detached_at is not None else time.monotonic()
        cutoff = ended - cfg.redeliver_seconds
        delivered = list(stream.delivered)
        recent = [f for t, f in delivered if t >= cutoff]
        if len(recent) < cfg.redeliver_on_resume:
            recent = [f for _, f in delivered[-cfg.redeliver_on_resume :]] if cfg.redeliver_on_resume else []
        stream.outbox.extendleft(reversed(recent))

    def pnl_frame(self, company_id: int, trade_type: str) -> str | None:
        """The profit-and-loss text frame of the company's account of ``trade_type`` (1: ``f(``, 2: ``g(``):
        account figures, then one ``(positionId,profitLoss[,previewStopPrice])`` per open position."""
        prefix = {"1": "f", "2": "g"}.get(trade_type)
        if prefix is None:
            return None
        with self.lock:
            accounts = [a for a in self.accounts_of(company_id) if str(a["tradeType"]) == trade_type]
            if not accounts:
                return None
            account = accounts[0]
            positions = []
            for position_id, position in self.positions.items():
                if position["company_id"] != company_id or position["account_id"] != account["accountId"]:
                    continue
                opened = float(position["openPrice"])
                now = self.prices.get(position["symbolId"], opened)
                sign = 1 if position["direction"] == 1 else -1
                size = position["lots"] * data.CONTRACT_SIZES.get(position["symbolId"], 1)
                positions.append((position_id, sign * (now - opened) * size, position["openPrice"]))
        total = sum(p for _, p, _ in positions)
        balance = float(account["balance"])
        margin = float(account["margin"])
        net = balance + total
        ratio = f"{net / margin * 100:.2f}" if margin else "0"
        head = f"{prefix}({total:.2f},{margin:.2f},{net - margin:.2f},{ratio},{net:.2f},{balance:.2f})"
        parts = [head]
        for position_id, profit, price in positions[-200:]:
            parts.append(
                f"({position_id},{profit:.2f},{price})" if trade_type == "2" else f"({position_id},{profit:.2f})"
            )
        return ";".join(parts)

    def expire_tokens(self) -> set[str]:
        """Expire every msg token issued so far (their streams are kept, for the delivery log)."""
        expired = set()
        for stream in self.streams.values():
            if not stream.expired:
                stream.expired = True
                expired.add(stream.token)
        return expired

    def stream_for_token(self, token: str) -> MsgStream | None:
        stream = self.streams.get(token)
        if stream is None or stream.expired or self.clock() - stream.issued_at > self.config.token_ttl:
            return None
        return stream

    def publish(self, company_id: int, trade_type: str, msg_code: str, content: dict[str, Any]) -> int:
        """Queue a push on every stream of the company subscribed to ``trade_type``."""
        count = 0
        with self.lock:
            for stream in self.streams.values():
                if stream.company_id != company_id or trade_type not in stream.trade_types:
                    continue
                frame = {
                    "msgCode": msg_code,
                    "timestamp": int(self.clock() * 1000),
                    "trace": f"x-{int(self.clock() * 1000)}-{stream.next_seq}_sandbox",
                    "seqId": stream.next_seq,
                    "content": content,
                }
                stream.next_seq += 1
                stream.outbox.append(frame)
                count += 1
                if stream.wake is not None:
                    stream.wake()
        return count

    def force_ban(self, seconds: float) -> float:
        """Ban every apiKey for ``seconds`` from now, as the gateway does after a call past a 429."""
        with self.lock:
            until = self.clock() + seconds
            for record in self.keys.values():
                record.banned_until = until
                record.bans += 1
            return until

    def calls_since(self, since: float = 0.0) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"t": t, "biz": biz, "status": status, "code": code}
                for t, biz, status, code in self.call_log
                if t >= since
            ]

    def counts(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": dict(self.requests),
                "received": dict(self.received),
                "answers": dict(self.answers),
                "orders": len(self.orders),
            }
