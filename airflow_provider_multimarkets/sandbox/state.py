"""The rules of the simulated gateway, independent of the web library.

``SandboxState.handle_http`` applies the gateway rules in the order a gateway would (headers,
apiKey, ban, rate limit, time window, signature, company) and then the endpoint's own validation.
The message hub keeps one stream per msg token, so a client that reconnects with the same token
resumes where it was (at-least-once: the last delivered pushes are sent again and carry the same
``seqId``, which is how a client recognises duplicates).
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_multimarkets.api.signing import canonical_json, string_to_sign, verify
from airflow_provider_multimarkets.exceptions import MultiMarketsSigningError
from airflow_provider_multimarkets.sandbox import data
from airflow_provider_multimarkets.sandbox.faults import FaultPlan

log = logging.getLogger("multimarkets.sandbox")

BIZ_TOKEN = "getMsgPushToken"  # noqa: S105 - a bizType, not a secret
BIZ_CUSTOMER = "customer.app.CustomerWebApiService.findCustomerInfo"
BIZ_SYMBOLS = "config.app.AppSymbolDubboService.getSymbolBaseList"
BIZ_ORDER_CROSS = "tradeapi.app.CfdMMOrderApiService.addMarketOrder"
BIZ_ORDER_ISOLATED = "tradeapi.app.OrderApiService.addMarketOrder"
BIZ_ORDER_PAGE = "tradeapi.app.OrderApiService.queryOrderPage"
BIZ_TRADE_RECORDS = "tradeapi.app.OrderApiService.queryTradeRecordPage"
BIZ_CAPITAL_FLOW = "tradeapi.app.OrderApiService.queryCapitalFlowList"
BIZ_POSITION_PAGE = "tradeapi.app.PositionApiService.queryPositionPage"
#: capital-flow business types the sandbox books (codes and names are the sandbox's: the spec lists none)
FLOW_COMMISSION, FLOW_CLOSE_PROFIT = 12, 11
FLOW_NAMES = {FLOW_COMMISSION: "Trading commission", FLOW_CLOSE_PROFIT: "Position close profit and loss"}
THIRD_PARTY_ORDER_RE = re.compile(r"^[A-Za-z0-9_]{1,255}$")
REQUIRED_HEADERS = ("companyId", "trace", "timestamp", "apiKey", "signature")
TRADE_TYPES = {"1", "2", "5", "6"}
#: ``addMarketOrder`` bizTypes per variant (the vendor's OpenAPI): 1 market open, 2 market close,
#: 10 limit pending, 11 stop pending, 12 limit open (full margin), 13/14 aggregate limit open/close
#: (isolated margin)
FULL_ORDER_BIZ_TYPES = frozenset({1, 2, 10, 11, 12})
ISOLATED_ORDER_BIZ_TYPES = frozenset({1, 2, 10, 11, 13, 14})
CLOSING_ORDER_BIZ_TYPES = frozenset({2, 14})
PENDING_ORDER_BIZ_TYPES = frozenset({10, 11})
ORDER_INTEGER_FIELDS = (
    "tradeType",
    "bizType",
    "direction",
    "symbolId",
    "requestTime",
    "accountDigits",
    "accountId",
    "positionId",
    "expireType",
    "crossLevelNum",
)
ORDER_STRING_FIELDS = (
    "requestPrice",
    "requestNum",
    "accountCurrency",
    "stopLoss",
    "takeProfit",
    "remark",
    "source",
    "thirdPartyOrder",
    "slippage",
)
ORDER_BIZ_TYPES = {
    1: "POSITION_OPEN",
    2: "POSITION_CLOSE",
    12: "ME_POSITION_LIMIT_OPEN",
    13: "ME_POSITION_LIMIT_OPEN",
    14: "ME_POSITION_LIMIT_CLOSE",
}


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
    """``canonical``: the server re-canonicalises the parsed body; ``raw``: it signs the raw text."""
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
    burst_after_subscribe: int = 0
    """Benchmark mode: right after a subscribe, send this many pre-rendered trade pushes as fast as
    the socket takes them (seqId and trace still unique), then carry on normally."""


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
    detached_at: float | None = None
    """When the last connection of this stream ended (monotonic): what it was sent just before may
    never have been read."""


class BizError(Exception):
    def __init__(self, code: str, msg: str, msg_params: str | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.msg_params = msg_params


@dataclass
class HttpAnswer:
    status: int
    envelope: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)


class SandboxState:
    def __init__(self, config: SandboxConfig | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config or SandboxConfig()
        self.clock = clock
        self.faults = FaultPlan()
        self.lock = threading.RLock()
        self.keys: dict[str, ApiKeyRecord] = {}
        self.streams: dict[str, MsgStream] = {}
        self.requests: Counter[str] = Counter()
        #: every request that reached the server, faulted ones included (``requests`` counts handled ones)
        self.received: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.orders: list[dict[str, Any]] = []
        #: open positions by positionId: account, symbol, direction, lots left, open price
        self.positions: dict[int, dict[str, Any]] = {}
        #: seeded discrepancies, for reconciliation scenarios: orders whose trade record is withheld,
        #: and trade records of fills that have no order here
        self.withheld_trade_records: set[int] = set()
        self.unmatched_trade_records: list[dict[str, Any]] = []
        #: (arrival time, bizType, HTTP status, envelope code) of every handled request, for scenarios
        #: that check the gateway's view: calls in any 60 s, calls received during a ban
        self.call_log: deque[tuple[float, str, int, str]] = deque(maxlen=200_000)
        #: the last signatures received (for secret audits in tests)
        self.seen_signatures: deque[str] = deque(maxlen=10000)
        self.rng = random.Random(self.config.seed)
        self.accounts: dict[int, list[dict[str, Any]]] = {}
        self.symbols = {s["symbolId"]: s for s in data.seed_symbols()}
        self.prices = dict(data.START_PRICES)
        self._next_order = 21257491
        self._next_position = 2023102650229
        self.on_publish: Callable[[MsgStream], None] | None = None

    # ---- setup ------------------------------------------------------------------------------

    def register_key(self, api_key: str, public_key: str, company_id: int = data.COMPANY_ID) -> None:
        with self.lock:
            self.keys[api_key] = ApiKeyRecord(api_key, public_key, company_id)

    def accounts_of(self, company_id: int) -> list[dict[str, Any]]:
        if company_id not in self.accounts:
            self.accounts[company_id] = data.seed_accounts(company_id)
        return self.accounts[company_id]

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
        """Apply the gateway rules and the endpoint, return status and envelope."""
        started = self.clock()
        with self.lock:
            self.requests[biz_type] += 1
            answer = self._handle(biz_type, {k.lower(): v for k, v in headers.items()}, raw_body, started)
            code = answer.envelope.get("code") if answer.envelope else str(answer.status)
            self.answers[f"{biz_type}:{answer.status}:{code}"] += 1
            self.call_log.append((started, biz_type, answer.status, str(code)))
        return answer

    def _gateway_error(self, trace: str, code: str, msg: str, biz_type: str) -> HttpAnswer:
        return HttpAnswer(self.config.gateway_error_status, self.envelope(trace, data_=biz_type, code=code, msg=msg))

    def _handle(self, biz_type: str, headers: dict[str, str], raw: bytes, started: float) -> HttpAnswer:
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
            body = json.loads(text) if text.strip() else {}
        except ValueError:
            return self._gateway_error(trace, "GGATEWAY_CODE_015", "request body is not JSON", biz_type)
        if not isinstance(body, dict):
            return self._gateway_error(trace, "GGATEWAY_CODE_015", "request body must be a JSON object", biz_type)
        if self.config.signature_mode == "raw":
            signed = string_to_sign(text, ts)
        else:
            try:  # a body no client could have signed (a number beyond double range, nesting too deep)
                signed = string_to_sign(canonical_json(body), ts)
            except MultiMarketsSigningError as exc:
                return self._gateway_error(trace, "GGATEWAY_CODE_015", f"illegal request body: {exc}", biz_type)
        if not verify(record.public_key, signed, headers["signature"]):
            return self._gateway_error(trace, "00012001", "signature verification failed", biz_type)
        if headers["companyid"].strip() != str(record.company_id):
            return self._gateway_error(trace, "00012004", "no permission for this company", biz_type)

        handler = self.endpoints().get(biz_type)
        if handler is None:
            return self._gateway_error(trace, "GGATEWAY_CODE_002", "invalid business type", biz_type)
        try:
            result = handler(record, body, headers)
        except BizError as exc:
            return HttpAnswer(
                200,
                self.envelope(
                    trace, data_=None, code=exc.code, msg=exc.msg, msg_params=exc.msg_params, started=started
                ),
            )
        return HttpAnswer(200, self.envelope(trace, data_=result, started=started))

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

    def endpoints(self) -> dict[str, Callable[[ApiKeyRecord, dict[str, Any], dict[str, str]], Any]]:
        return {
            BIZ_TOKEN: self._msg_token,
            BIZ_CUSTOMER: self._customer_info,
            BIZ_SYMBOLS: self._symbols,
            BIZ_ORDER_CROSS: lambda r, b, h: self._order(r, b, isolated=False),
            BIZ_ORDER_ISOLATED: lambda r, b, h: self._order(r, b, isolated=True),
            BIZ_ORDER_PAGE: self._order_page,
            BIZ_TRADE_RECORDS: self._trade_record_page,
            BIZ_CAPITAL_FLOW: self._capital_flow_page,
            BIZ_POSITION_PAGE: self._position_page,
        }

    # ---- endpoints ------------------------------------------------------------------------------

    def _msg_token(self, record: ApiKeyRecord, body: dict[str, Any], headers: dict[str, str]) -> str:
        token = f"{uuid.uuid4()}push"
        self.streams[token] = MsgStream(token=token, company_id=record.company_id, issued_at=self.clock())
        return token

    def _customer_info(self, record: ApiKeyRecord, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        return data.customer_info(record.company_id, [dict(a) for a in self.accounts_of(record.company_id)])

    def _symbols(self, record: ApiKeyRecord, body: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
        group = body.get("customerGroupId")
        if group is None or group == "":
            raise BizError("CFDWBWE000005", "customerGroupId must not be empty")
        if isinstance(group, bool) or not isinstance(group, (int, str)) or not str(group).isdigit():
            raise BizError("CFDWBWE000006", "customerGroupId has a wrong format")
        return [dict(s) for s in self.symbols.values()]

    def _order(self, record: ApiKeyRecord, body: dict[str, Any], *, isolated: bool) -> dict[str, Any]:
        """Both ``addMarketOrder`` variants, validated as the vendor's OpenAPI describes their bodies."""
        required = [
            "tradeType",
            "bizType",
            "direction",
            "symbolId",
            "requestTime",
            "requestPrice",
            "requestNum",
            "accountCurrency",
            "accountDigits",
        ]
        if isolated:
            required.append("entryType")
        for name in required:
            if body.get(name) in (None, ""):
                raise BizError("CFDWBWE000005", f"{name} must not be empty")
        integers = ORDER_INTEGER_FIELDS + (("entryType",) if isolated else ())
        for name in integers:
            value = body.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise BizError("CFDWBWE000006", f"{name} has a wrong format (an integer)")
        for name in ORDER_STRING_FIELDS:
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise BizError("CFDWBWE000006", f"{name} has a wrong format (a string)")
        if isolated and body.get("blacklist") is not None and not isinstance(body["blacklist"], bool):
            raise BizError("CFDWBWE000006", "blacklist has a wrong format (true or false)")
        if not 10**12 <= body["requestTime"] < 10**13:
            raise BizError("CFDWBWE000006", "requestTime must be a 13-digit timestamp in milliseconds")
        if body.get("expireType") is not None and body["expireType"] not in (1, 2, 3, 4):
            raise BizError("CFDWBWE000007", "expireType must be 1 (day), 2 (week), 3 (30 days) or 4 (90 days)")
        price, num = body["requestPrice"], body["requestNum"]
        if not price.isdigit():
            raise BizError("CFDWBWE000006", "requestPrice must be the price times 10^symbolDigits as an integer string")
        try:
            quantity = float(num)
        except ValueError:
            raise BizError("CFDWBWE000006", "requestNum has a wrong format") from None
        if quantity != quantity or quantity in (float("inf"), float("-inf")):
            raise BizError("CFDWBWE000006", "requestNum has a wrong format")
        expected_type = 2 if isolated else 1
        if body["tradeType"] != expected_type:
            raise BizError("CFDWBWE000007", f"tradeType must be {expected_type} for this interface")
        allowed = ISOLATED_ORDER_BIZ_TYPES if isolated else FULL_ORDER_BIZ_TYPES
        if body["bizType"] not in allowed or body["direction"] not in (1, 2):
            raise BizError("CFDWBWE000007", "parameter validation failed (bizType/direction)")
        third_party = body.get("thirdPartyOrder")
        if third_party is not None and not THIRD_PARTY_ORDER_RE.match(third_party):
            raise BizError("CFDWBWE000006", "thirdPartyOrder must be at most 255 characters of A-Z, a-z, 0-9 and _")
        source = body.get("source")
        if source is not None and not THIRD_PARTY_ORDER_RE.match(source):
            raise BizError("CFDWBWE000006", "source must be at most 255 characters of A-Z, a-z, 0-9 and _")
        if isolated and body["entryType"] not in (1, 2):
            raise BizError("CFDWBWE000007", "entryType must be 1 (quantity) or 2 (amount)")
        symbol = self.symbols.get(body["symbolId"])
        if symbol is None or symbol["tradeType"] != expected_type:
            raise BizError("CFDWBWE000013", "product not configured")
        if not symbol["inTradeTime"]:
            raise BizError("CFDWBWE000016", "outside trading hours; trading refused")
        if isolated and body["entryType"] == 2:
            # by amount: requestNum is a notional in the account currency (the sandbox ignores FX)
            notional = self.prices[symbol["symbolId"]] * data.CONTRACT_SIZES.get(symbol["symbolId"], 1)
            lots = int(quantity / notional * 100 + 1e-9) / 100
            if not 0.01 <= lots <= 100:
                raise BizError(
                    "CFDWBWE000026",
                    "amount must buy within %s-%s lots (one lot is about %s)",
                    f"0.01,100,{notional:.2f}",
                )
        else:
            lots = quantity
            if not 0.01 <= lots <= 100 or abs(round(lots * 100) - lots * 100) > 1e-6:
                raise BizError(
                    "CFDWBWE000026", "quantity must be within %s-%s lots and a multiple of %s lots", "0.01,100,0.01"
                )
        accounts = [a for a in self.accounts_of(record.company_id) if a["tradeType"] == expected_type]
        if body.get("accountId") is not None:
            accounts = [a for a in accounts if a["accountId"] == body["accountId"]]
        if not accounts:
            raise BizError("CFDWBWE000007", "account not found for this tradeType")
        account = accounts[0]
        if body["accountCurrency"] != account["currency"]:
            raise BizError("CFDWBWE000007", "accountCurrency does not match the account")
        if body["bizType"] in CLOSING_ORDER_BIZ_TYPES:
            position_id = body.get("positionId")
            if position_id in (None, ""):
                raise BizError("CFDWBWE000005", "positionId must not be empty for a closing order")
            position = self.positions.get(position_id)
            if (
                position is None
                or position["account_id"] != account["accountId"]
                or position["symbolId"] != symbol["symbolId"]
            ):
                raise BizError("CFDWBWE000007", "position not found (positionId of an open position of this account)")
            if body["direction"] == position["direction"]:
                raise BizError("CFDWBWE000007", "a closing order goes against the position's direction")
            if lots > position["lots"] + 1e-9:
                raise BizError(
                    "CFDWBWE000026", "closing quantity exceeds the position (%s lots)", f"{position['lots']:g}"
                )
        return self.place_order(record, body, symbol, account, lots)

    def place_order(
        self, record: ApiKeyRecord, body: dict[str, Any], symbol: dict[str, Any], account: dict[str, Any], lots: float
    ) -> dict[str, Any]:
        digits = symbol["symbolDigits"]
        pending = body["bizType"] in PENDING_ORDER_BIZ_TYPES
        closing = body["bizType"] in CLOSING_ORDER_BIZ_TYPES
        self._next_order += 1
        if pending:  # a pending order waits for its price: no fill, no position yet
            fill, position_id = "0", 0
        else:
            mid = self.prices[symbol["symbolId"]] * (1 + self.rng.uniform(-0.0005, 0.0005))
            self.prices[symbol["symbolId"]] = mid
            fill = f"{mid:.{digits}f}"
            if closing:
                position_id = body["positionId"]
            else:
                self._next_position += 1
                position_id = self._next_position
        position = self.positions.get(position_id) if closing else None
        order = {
            "orderId": self._next_order,
            "positionId": position_id,
            "tradeVolume": f"{lots:g}",
            "openPrice": position["openPrice"] if position else fill,
            "executePrice": fill,
            "openDirection": position["direction"] if position else body["direction"],
            "direction": body["direction"],
            "openOrClose": 2 if closing else 1,
            "symbolName": symbol["symbolName"],
            "symbolId": symbol["symbolId"],
            "stopLoss": body.get("stopLoss") or "0",
            "takeProfit": body.get("takeProfit") or "0",
            "digits": digits,
            "fee": "0",
            "interest": "0",
            "profit": "0",
            "source": body.get("source") or "OpenAPI",
        }
        if position is not None:
            sign = 1 if position["direction"] == 1 else -1
            size = lots * data.CONTRACT_SIZES.get(symbol["symbolId"], 1)
            order["profit"] = f"{sign * (float(fill) - float(position['openPrice'])) * size:.{account['digits']}f}"
            position["lots"] = round(position["lots"] - lots, 8)
            if position["lots"] <= 1e-9:
                del self.positions[position_id]
        elif not pending:
            self.positions[position_id] = {
                "order_id": self._next_order,
                "open_ms": int(self.clock() * 1000),
                "third_party_order": body.get("thirdPartyOrder"),
                "account_id": account["accountId"],
                "company_id": record.company_id,
                "symbolId": symbol["symbolId"],
                "direction": body["direction"],
                "lots": lots,
                "openPrice": fill,
            }
        now_ms = int(self.clock() * 1000)
        self.orders.append(
            {
                "request": dict(body),
                "response": order,
                "company_id": record.company_id,
                "account_id": account["accountId"],
                "created_ms": now_ms,
                "third_party_order": body.get("thirdPartyOrder"),
                "pending": pending,
            }
        )
        trade_type = str(body["tradeType"])
        if pending:  # the vendor client refreshes its pending orders on this notice
            self.publish(
                record.company_id, trade_type, "notice", {"tradeType": body["tradeType"], "updateType": 2, "show": 0}
            )
            return order
        content = self.trade_content(record.company_id, account, symbol, order, body, lots)
        delay = self.config.order_push_delay
        if delay > 0:  # the fill push arrives later than the order's answer
            timer = threading.Timer(delay, self._publish_locked, (record.company_id, trade_type, "trade", content))
            timer.daemon = True
            timer.start()
        else:
            self.publish(record.company_id, trade_type, "trade", content)
        return order

    def _publish_locked(self, company_id: int, trade_type: str, msg_code: str, content: dict[str, Any]) -> None:
        with self.lock:
            self.publish(company_id, trade_type, msg_code, content)

    @staticmethod
    def _query_body(
        body: dict[str, Any], *, required: tuple[str, ...], integers: tuple[str, ...], strings: tuple[str, ...]
    ) -> tuple[dict[str, Any], int, int]:
        """Validate a query body as the spec types it: (integer filters given, current, size)."""
        for name in required:
            if body.get(name) in (None, ""):
                raise BizError("CFDWBWE000005", f"{name} must not be empty")
        filters = {}
        for name in integers:
            value = body.get(name)
            if value in (None, ""):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise BizError("CFDWBWE000006", f"{name} has a wrong format")
            filters[name] = value
        for name in strings:
            value = body.get(name)
            if value not in (None, "") and not isinstance(value, str):
                raise BizError("CFDWBWE000006", f"{name} has a wrong format")
        pages = {}
        for name, default in (("current", 1), ("size", 20)):
            value = body.get(name, default)
            if value in (None, ""):
                value = default
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 10_000:
                raise BizError("CFDWBWE000006", f"{name} has a wrong format")
            pages[name] = value
        return filters, pages["current"], pages["size"]

    def _order_page(self, record: ApiKeyRecord, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``queryOrderPage`` (isolated margin): the orders placed here, newest first, filtered and paged."""
        filters, current, size = self._query_body(
            body,
            required=("tradeType",),
            integers=("tradeType", "accountId", "bizType", "direction", "status", "symbolId", "positionId"),
            strings=("thirdPartyOrder", "orderIds", "accountCurrency", "querySource"),
        )
        pages = {"current": current, "size": size}
        wanted_ids = {s.strip() for s in str(body.get("orderIds") or "").split(",") if s.strip()}
        rows = []
        for placed in reversed(self.orders):
            if placed["company_id"] != record.company_id:
                continue
            row = self.order_record(placed)
            if any(row.get(k) != v for k, v in filters.items()):
                continue
            if body.get("thirdPartyOrder") and row["thirdPartyOrder"] != body["thirdPartyOrder"]:
                continue
            if wanted_ids and str(row["id"]) not in wanted_ids:
                continue
            rows.append(row)
        start = (pages["current"] - 1) * pages["size"]
        return {
            "current": pages["current"],
            "size": pages["size"],
            "total": len(rows),
            "records": rows[start : start + pages["size"]],
        }

    def _filled(self, company_id: int) -> list[dict[str, Any]]:
        return [o for o in self.orders if o["company_id"] == company_id and not o.get("pending")]

    def trade_record(self, placed: dict[str, Any]) -> dict[str, Any]:
        """A fill as the documented trade record list shows it."""
        request, response = placed["request"], placed["response"]
        contract = data.CONTRACT_SIZES.get(request["symbolId"], 1)
        amount = float(response["tradeVolume"]) * contract * float(response["executePrice"] or 0)
        return {
            "symbolId": request["symbolId"],
            "orderId": response["orderId"],
            "bizType": request["bizType"],
            "symbolName": response["symbolName"],
            "direction": request["direction"],
            "requestPrice": str(request["requestPrice"]),
            "executePrice": response["executePrice"],
            "executeNum": response["tradeVolume"],
            "executeTime": placed["created_ms"],
            "commission": response["fee"],
            "profitLoss": response["profit"],
            "overnightInterest": "0",
            "accountCurrency": request.get("accountCurrency"),
            "dealId": response["orderId"] + 5000,
            "positionId": response["positionId"],
            "realExecuteNum": response["tradeVolume"],
            "executeAmount": f"{amount:.2f}",
            "source": request.get("source") or "OpenAPI",
            "thirdPartyOrder": request.get("thirdPartyOrder"),
            "accountId": placed["account_id"],
            "tradeType": request["tradeType"],
        }

    def _trade_record_page(self, record: ApiKeyRecord, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``queryTradeRecordPage`` (isolated margin): one record per fill, filtered, sorted and paged."""
        filters, current, size = self._query_body(
            body,
            required=("tradeType", "sortFieldName", "sortType"),
            integers=("tradeType", "symbolId", "direction", "orderType", "executeStartTime", "executeEndTime"),
            strings=("accountIds", "sortFieldName", "sortType", "querySource", "thirdPartyOrder"),
        )
        sort_type = str(body["sortType"]).lower()
        if sort_type not in ("asc", "desc"):
            raise BizError("CFDWBWE000006", "sortType has a wrong format (asc or desc)")
        accounts = {a.strip() for a in str(body.get("accountIds") or "").split(",") if a.strip()}
        start, end = filters.pop("executeStartTime", None), filters.pop("executeEndTime", None)
        filters.pop("orderType", None)
        rows = [
            self.trade_record(o)
            for o in self._filled(record.company_id)
            if o["response"]["orderId"] not in self.withheld_trade_records
        ]
        rows += [
            dict(r) for r in self.unmatched_trade_records if r.get("companyId", record.company_id) == record.company_id
        ]
        rows = [
            r
            for r in rows
            if all(r.get(k) == v for k, v in filters.items())
            and (not accounts or str(r["accountId"]) in accounts)
            and (start is None or r["executeTime"] >= start)
            and (end is None or r["executeTime"] < end)
            and (not body.get("thirdPartyOrder") or r["thirdPartyOrder"] == body["thirdPartyOrder"])
        ]
        field_name = str(body["sortFieldName"])
        rows.sort(key=lambda r: (r.get(field_name) is None, r.get(field_name) or 0), reverse=sort_type == "desc")
        begin = (current - 1) * size
        account = self.accounts_of(record.company_id)[0]
        return {
            "accountId": account["accountId"],
            "companyId": record.company_id,
            "customerId": data.CUSTOMER_ID,
            "customerNo": "86001308",
            "current": current,
            "size": size,
            "totalPage": (len(rows) + size - 1) // size,
            "bizTypeText": None,
            "list": rows[begin : begin + size],
        }

    def seed_discrepancy(self, kind: str, company_id: int, order_id: int | None = None) -> dict[str, Any]:
        """Make the books disagree, for reconciliation scenarios: ``missing_trade_record`` withholds the
        trade record of ``order_id`` (default: the last fill); ``unmatched_trade_record`` adds a trade
        record whose order does not exist."""
        with self.lock:
            if kind == "missing_trade_record":
                filled = self._filled(company_id)
                if order_id is None:
                    if not filled:
                        raise ValueError("no fill yet: place an order first")
                    order_id = int(filled[-1]["response"]["orderId"])
                self.withheld_trade_records.add(int(order_id))
                return {"kind": kind, "orderId": int(order_id)}
            if kind == "unmatched_trade_record":
                filled = self._filled(company_id)
                base = self.trade_record(filled[-1]) if filled else {}
                self._next_order += 1
                ghost = {
                    **base,
                    "orderId": self._next_order + 900_000,
                    "dealId": self._next_order + 905_000,
                    "executeTime": int(self.clock() * 1000),
                    "thirdPartyOrder": None,
                    "companyId": company_id,
                }
                self.unmatched_trade_records.append(ghost)
                return {"kind": kind, "orderId": ghost["orderId"]}
        raise ValueError(f"unknown discrepancy {kind!r}: missing_trade_record or unmatched_trade_record")

    def capital_flows(self, company_id: int) -> list[dict[str, Any]]:
        """The account bookings of the fills: a commission for each, the realised profit of each close."""
        flows = []
        for placed in self._filled(company_id):
            response, request = placed["response"], placed["request"]
            bookings = [(FLOW_COMMISSION, -float(response["fee"] or 0))]
            if response.get("openOrClose") == 2:
                bookings.append((FLOW_CLOSE_PROFIT, float(response["profit"] or 0)))
            for number, (business_type, amount) in enumerate(bookings):
                flows.append(
                    {
                        "remark": None,
                        "createTime": placed["created_ms"],
                        "updateTime": placed["created_ms"],
                        "subjectId": placed["account_id"],
                        "bookkeepId": response["orderId"] * 10 + number,
                        "amountIn": f"{max(amount, 0):.2f}",
                        "amountOut": f"{max(-amount, 0):.2f}",
                        "status": 1,
                        "amountAfter": None,
                        "businessType": business_type,
                        "businessType1": business_type,
                        "customerNo": "86001308",
                        "digits": str(request.get("accountDigits", 2)),
                        "currency": request.get("accountCurrency"),
                        "businessTypeName": FLOW_NAMES[business_type],
                        "businessType1Name": FLOW_NAMES[business_type],
                        "accountId": placed["account_id"],
                        "orderId": response["orderId"],
                        "dealId": response["orderId"] + 5000,
                        "tradeType": request["tradeType"],
                    }
                )
        return flows

    def _capital_flow_page(self, record: ApiKeyRecord, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """``queryCapitalFlowList`` (isolated margin): the account's bookings, newest first, paged."""
        filters, current, size = self._query_body(
            body,
            required=("tradeType",),
            integers=("tradeType", "accountId", "businessType", "status", "startTime", "endTime", "operate"),
            strings=(),
        )
        start, end = filters.pop("startTime", None), filters.pop("endTime", None)
        filters.pop("operate", None)
        rows = [
            f
            for f in reversed(self.capital_flows(record.company_id))
            if all(f.get(k) == v for k, v in filters.items())
            and (start is None or f["createTime"] >= start)
            and (end is None or f["createTime"] < end)
        ]
        begin = (current - 1) * size
        return {"total": len(rows), "size": size, "current": current, "records": rows[begin : begin + size]}

    def _position_page(self, record: ApiKeyRecord, body: dict[str, Any], headers: dict[str, str]) -> list[Any]:
        """``queryPositionPage`` (isolated margin): the open positions, newest first; the data is the page's array."""
        filters, current, size = self._query_body(
            body,
            required=("tradeType",),
            integers=("tradeType", "accountId", "status", "orderId", "dealId", "symbolId", "startTime", "endTime"),
            strings=("accountCurrency", "sortFieldName", "sortType", "querySource", "thirdPartyOrder"),
        )
        start, end = filters.pop("startTime", None), filters.pop("endTime", None)
        filters.pop("status", None)
        rows = []
        for position_id, position in sorted(self.positions.items(), reverse=True):
            if position["company_id"] != record.company_id:
                continue
            symbol = self.symbols.get(position["symbolId"], {})
            row = {
                "positionId": position_id,
                "orderId": position.get("order_id"),
                "dealId": (position.get("order_id") or 0) + 5000,
                "status": "1",
                "direction": position["direction"],
                "symbolId": position["symbolId"],
                "symbolName": symbol.get("symbolName"),
                "openPrice": position["openPrice"],
                "openNum": f"{position['lots']:g}",
                "volume": f"{position['lots']:g}",
                "openTime": position.get("open_ms"),
                "openContractSize": data.CONTRACT_SIZES.get(position["symbolId"], 1),
                "thirdPartyOrder": position.get("third_party_order"),
                "accountId": position["account_id"],
                "tradeType": 2,
            }
            if any(row.get(k) != v for k, v in filters.items()):
                continue
            if (start is not None and (row["openTime"] or 0) < start) or (
                end is not None and (row["openTime"] or 0) >= end
            ):
                continue
            rows.append(row)
        begin = (current - 1) * size
        return rows[begin : begin + size]

    def order_record(self, placed: dict[str, Any]) -> dict[str, Any]:
        """An order as the documented order list shows it (market orders fill at once here)."""
        request, response = placed["request"], placed["response"]
        return {
            "id": response["orderId"],
            "dealId": response["orderId"] + 5000,
            "bizType": request["bizType"],
            "direction": request["direction"],
            "status": 1 if placed.get("pending") else 2,
            "customerGroupId": data.CUSTOMER_GROUP_ID,
            "symbolId": request["symbolId"],
            "digits": response["digits"],
            "symbolName": response["symbolName"],
            "requestPrice": str(request["requestPrice"]),
            "requestNum": str(request["requestNum"]),
            "contractSize": data.CONTRACT_SIZES.get(request["symbolId"], 1),
            "executePrice": response["executePrice"],
            "requestTime": request["requestTime"],
            "executeTime": placed["created_ms"],
            "fee": response["fee"],
            "accountDigits": request["accountDigits"],
            "executeNum": response["tradeVolume"],
            "cancelNum": "0",
            "positionId": response["positionId"],
            "stopLoss": response["stopLoss"],
            "takeProfit": response["takeProfit"],
            "remark": request.get("remark"),
            "createTime": placed["created_ms"],
            "updateTime": placed["created_ms"],
            "source": request.get("source") or "OpenAPI",
            "thirdPartyOrder": request.get("thirdPartyOrder"),
            "tradeType": request["tradeType"],
            "accountId": placed["account_id"],
        }

    def trade_content(
        self,
        company_id: int,
        account: dict[str, Any],
        symbol: dict[str, Any],
        order: dict[str, Any],
        body: dict[str, Any],
        lots: float,
    ) -> dict[str, Any]:
        now = str(int(self.clock() * 1000))
        contract = data.CONTRACT_SIZES.get(symbol["symbolId"], 1)
        return {
            "accountId": account["accountId"],
            "companyId": company_id,
            "bizType": ORDER_BIZ_TYPES.get(body["bizType"], "POSITION_OPEN"),
            "customerId": data.CUSTOMER_ID,
            "paramMap": {
                "date": now,
                "orderType": "1",
                "symbolId": str(symbol["symbolId"]),
                "dealExecuteTime": now,
                "orderBizType": str(body["bizType"]),
                "orderId": str(order["orderId"]),
                "pendingId": "0",
                "dealId": str(order["orderId"] + 5000),
                "accountCurrency": account["currency"],
                "orderStatus": "2",
                "dealExecuteNum": f"{lots * contract:.1f}",
                "source": str(body.get("source") or "OpenAPI"),
                "dealPrice": order["executePrice"],
                "requestAmount": f"{lots:g}",
                "currency": account["currency"],
                "symbolName": symbol["symbolName"],
                "contractSize": str(contract),
                "commission": "0",
                "direction": str(body["direction"]),
                "dealAmount": f"{lots:g}",
                "accountId": str(account["accountId"]),
                "companyId": str(company_id),
                "positionId": str(order["positionId"]),
                "dealExecutePrice": order["executePrice"],
                "playType": str(body["tradeType"]),
                "orderDirection": str(body["direction"]),
                "symbolDigits": str(symbol["symbolDigits"]),
                "takeProfitMsg": "--",
                "stopLossMsg": "--",
            },
            "tradeType": body["tradeType"],
        }

    def synthetic_trade(self, company_id: int, trade_type: str) -> dict[str, Any]:
        """A trade push as if an order had been filled on another client (trade-stream mode)."""
        candidates = [s for s in self.symbols.values() if str(s["tradeType"]) == trade_type and s["inTradeTime"]]
        if not candidates:
            candidates = [s for s in self.symbols.values() if s["inTradeTime"]]
        symbol = self.rng.choice(candidates)
        account = next(
            (a for a in self.accounts_of(company_id) if str(a["tradeType"]) == trade_type),
            self.accounts_of(company_id)[0],
        )
        lots = self.rng.choice((0.01, 0.05, 0.1, 0.5, 1.0))
        direction = self.rng.choice((1, 2))
        body = {
            "bizType": 1,
            "direction": direction,
            "tradeType": int(trade_type) if trade_type.isdigit() else 2,
            "source": "H5",
        }
        digits = symbol["symbolDigits"]
        mid = self.prices[symbol["symbolId"]] * (1 + self.rng.uniform(-0.0005, 0.0005))
        self.prices[symbol["symbolId"]] = mid
        self._next_order += 1
        self._next_position += 1
        order = {"orderId": self._next_order, "positionId": self._next_position, "executePrice": f"{mid:.{digits}f}"}
        return self.trade_content(company_id, account, symbol, order, body, lots)

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
