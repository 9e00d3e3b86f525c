"""Turning an HTTP answer of the Open API gateway into ``data`` or a typed error.

Pure logic (no Airflow, no ``requests``): it works on the status code, the ``Retry-After`` header
and the body bytes, so every shape of answer can be tested without a server.

Success means HTTP 200, a JSON object, ``code == "0"`` and ``ok`` not false. The envelope fields
are those of the endpoint examples: ``code``, ``msg``, ``bizCode``, ``tm``, ``trace``,
``msgParams``, ``data``, ``ok``, ``fail``; the generic ``message`` of the request page is read
when ``msg`` is absent.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any

from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsBannedError,
    MultiMarketsConcurrentDuplicateError,
    MultiMarketsError,
    MultiMarketsHTTPError,
    MultiMarketsRateLimitError,
    MultiMarketsResponseError,
)

SUCCESS_CODE = "0"
EXCERPT_CHARS = 160


@dataclass(frozen=True)
class GatewayCode:
    meaning: str
    hint: str


#: Open API gateway codes (https://docs.multimarkets.org/client-api/open-api/readme/request, "error codes") with what to do about each.
GATEWAY_CODES: dict[str, GatewayCode] = {
    "00012001": GatewayCode(
        "signature verification failed",
        "Check that the connection's 'secretKey (RSA private key)' field (its password) holds the privateKey "
        "issued with this apiKey (the 'apiKey' field), and that "
        "no proxy rewrites the request body.",
    ),
    "00012002": GatewayCode(
        "request outside the time window (timestamp/recvWindow)",
        "The worker clock is off or recv_window is too small: sync the clock (NTP) or raise the "
        "connection's 'recvWindow (ms)' field (extra 'recv_window', default 5000).",
    ),
    "00012003": GatewayCode(
        "API_KEY does not exist",
        "Check the connection login (apiKey), and that host points to the environment (PRE or "
        "production) that issued it.",
    ),
    "00012004": GatewayCode(
        "no permission for this API",
        "First check the connection's Company ID (extra 'company_id'): the gateway answers this when the "
        "companyId does not belong to the apiKey. Otherwise enable the permission this call needs (read-only, "
        "trade, contract trade) for the apiKey in API Management.",
    ),
    "00012005": GatewayCode(
        "requests too frequent",
        "The Open API allows 100 calls per minute per apiKey, across every host that uses it. If this "
        "repeats, something outside the shared budget uses the key: give every host the same Redis "
        "('rate_limit_redis_conn_id'), or lower 'rate_limit_per_minute'.",
    ),
    "00012006": GatewayCode(
        "API key expired",
        "A key without an IP whitelist expires after 90 days: create a new key, or bind IPs to it to "
        "make it long-lived, and update the connection.",
    ),
    "00012007": GatewayCode(
        "IP address not allowed",
        "Bind this worker's egress IP to the apiKey (API Management, IP whitelist) or run the task "
        "from a whitelisted host.",
    ),
}

_CONCURRENT_DUPLICATE = GatewayCode(
    "a concurrent duplicate was refused (idempotency-key)",
    "A request with the same idempotency-key, bizType, version, group and companyId was still being processed, "
    "so the gateway refused this one without running it: it did nothing (an order was not placed by it). The first "
    "request decides: look the result up, or send the same key again once it has finished (its answer is cached "
    "for 24 h).",
)
#: the code of the documented idempotency cache (the white-label docs of the same gateway write
#: ``GATEWAY_CODE_018``; the Client/Manager API code lists spell that family ``GGATEWAY_CODE_...``)
CONCURRENT_DUPLICATE_CODES = ("GATEWAY_CODE_018", "GGATEWAY_CODE_018")
for _code in CONCURRENT_DUPLICATE_CODES:
    GATEWAY_CODES[_code] = _CONCURRENT_DUPLICATE


def excerpt(body: bytes) -> str:
    """A short, single-line, printable start of a body, for error messages."""
    text = body[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds < 0:  # NaN or in the past
        return 0.0
    return seconds


def _describe_non_json(body: bytes) -> str:
    stripped = body.strip()
    if not stripped:
        return "an empty body"
    if stripped[:1] == b"<":
        return "an HTML page"
    if stripped[:1] in (b"{", b"["):
        return "truncated or invalid JSON"
    return "a body that is not JSON"


def decode_json(body: bytes) -> Any:
    """JSON value of a body, or :class:`ValueError`."""
    return json.loads(body.decode("utf-8"))


def parse_response(
    status: int,
    body: bytes,
    *,
    retry_after: str | None = None,
    biz_type: str = "",
    url: str = "",
) -> Any:
    """Return the envelope's ``data`` for a successful answer, else raise a :class:`MultiMarketsError`."""
    try:
        return _parse(status, body, retry_after, biz_type, url)
    except MultiMarketsError:
        raise
    except Exception as exc:  # pragma: no cover - defensive: parsing must only raise our errors
        raise MultiMarketsResponseError(
            f"Unreadable answer to {biz_type or 'the request'} (HTTP {status}): {type(exc).__name__}.",
            http_status=status,
            body_excerpt=excerpt(body if isinstance(body, bytes) else b""),
        ) from None


def _parse(status: int, body: bytes, retry_after: str | None, biz_type: str, url: str) -> Any:
    what = biz_type or "the request"
    if status == 429:
        wait = parse_retry_after(retry_after)
        after = f" Retry-After: {wait:g} s." if wait is not None else ""
        raise MultiMarketsRateLimitError(
            f"HTTP 429 from the MultiMarkets gateway for {what}: more than the allowed calls per "
            f"minute for this apiKey (100/min).{after} Calling on after a 429 gets the key banned "
            "(HTTP 418): every process that shares the apiKey's call budget now waits until then.",
            retry_after=wait,
            body_excerpt=excerpt(body),
        )
    if status == 418:
        ban = parse_retry_after(retry_after)
        raise MultiMarketsBannedError(
            f"HTTP 418 from the MultiMarkets gateway for {what}: the apiKey kept calling after a 429 "
            "and is disabled for at least 5 minutes (10 minutes on a repeat). Do not retry now: wait "
            "out the ban, then lower the call rate ('rate_limit_per_minute').",
            body_excerpt=excerpt(body),
            retry_after=ban,
        )

    try:
        envelope = decode_json(body)
    except ValueError:
        envelope = None
        shape = _describe_non_json(body)
    else:
        shape = "" if isinstance(envelope, dict) else f"JSON {type(envelope).__name__}, not an object"

    has_code = isinstance(envelope, dict) and "code" in envelope
    if status != 200 and not has_code:
        hint = _status_hint(status)
        raise MultiMarketsHTTPError(
            f"HTTP {status} from the MultiMarkets gateway for {what} ({shape or 'JSON without code'}). {hint}",
            http_status=status,
            body_excerpt=excerpt(body),
        )
    if not isinstance(envelope, dict):
        raise MultiMarketsResponseError(
            f"The answer to {what} (HTTP {status}) is {shape}, not an Open API envelope. Check the "
            f"connection host: requests go to {url or '{host}/global/{bizType}'}, which must be the "
            "Open API base URL ending in /openapi-c.",
            http_status=status,
            body_excerpt=excerpt(body),
        )
    if not has_code:
        raise MultiMarketsResponseError(
            f"The answer to {what} (HTTP {status}) is a JSON object without 'code', not an Open API "
            f"envelope. Check that the connection host is the Open API base URL ({url or 'host'}).",
            http_status=status,
            body_excerpt=excerpt(body),
        )
    return _check_envelope(envelope, status, what)


def _check_envelope(envelope: dict[str, Any], status: int, what: str) -> Any:
    raw_code = envelope.get("code")
    if isinstance(raw_code, bool) or not isinstance(raw_code, (str, int)):
        raise MultiMarketsResponseError(
            f"The answer to {what} has 'code' of type {type(raw_code).__name__}; the Open API sends a "
            'string such as "0". The gateway or a proxy in between is not speaking the Open API.',
            http_status=status,
            body_excerpt=excerpt(json.dumps(envelope, ensure_ascii=False).encode()),
        )
    code = str(raw_code)
    ok = envelope.get("ok")
    if status == 200 and code == SUCCESS_CODE and ok is not False:
        return envelope.get("data")

    msg = envelope.get("msg", envelope.get("message", ""))
    msg = "" if msg is None else str(msg)
    trace = str(envelope.get("trace") or "")
    params = envelope.get("msgParams")
    if params and "%s" in msg:
        msg = _fill(msg, params)
    known = GATEWAY_CODES.get(code)
    if code == SUCCESS_CODE:
        text = f"{what} returned code 0 but ok=false (HTTP {status}): {msg or 'no message'}."
    else:
        text = f"MultiMarkets API error {code} for {what}: {msg or 'no message'}"
        if known:
            same = msg.strip().lower().rstrip(".") == known.meaning.lower()
            text += f". {known.hint}" if same else f" ({known.meaning}). {known.hint}"
        else:
            text += "."
    if status != 200:
        text += f" [HTTP {status}]"
    if trace:
        text += f" [trace {trace}]"
    error_class = MultiMarketsConcurrentDuplicateError if code in CONCURRENT_DUPLICATE_CODES else MultiMarketsApiError
    raise error_class(
        text,
        code=code,
        msg=msg,
        trace=trace,
        http_status=status,
        biz_type=what,
        biz_code=str(envelope.get("bizCode") or ""),
        msg_params=params,
        data=envelope.get("data"),
        meaning=known.meaning if known else "",
        hint=known.hint if known else "",
    )


def _fill(msg: str, params: Any) -> str:
    values = (
        params.split(",") if isinstance(params, str) else [str(p) for p in params] if isinstance(params, list) else []
    )
    for value in values:
        if "%s" not in msg:
            break
        msg = msg.replace("%s", value.strip(), 1)
    return msg


def _status_hint(status: int) -> str:
    if status == 403:
        return "A 403 is a WAF rule violation: check the request rate and that this host may call the API."
    if status == 404:
        return "Check the connection host: it must be the Open API base URL ending in /openapi-c."
    if 500 <= status < 600:
        return "The platform side failed; idempotent calls are retried, orders are not."
    return "Check the connection settings and the request."
