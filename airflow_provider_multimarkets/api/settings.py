"""The settings of a ``multimarkets`` Airflow connection, read and validated in one place.

Pure logic: it takes the connection's host, port, login, password and extra dict, so it is tested
without Airflow. Every error names the connection field and the fix, and never echoes the secret.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_multimarkets.api.signing import KEY_ORDERS, SIGN_CHARSETS, CanonicalOptions, sign_charset
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError

PRODUCTION_BASE_URL = "https://api.multimarkets.org/openapi-c"
PRE_BASE_URL = "https://prewppc-3.cmfbl.com/openapi-c"
OPENAPI_PATH = "/openapi-c"
DEFAULT_RECV_WINDOW_MS = 5000
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0  # the server gives up on a request after 15 s
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_BACKOFF = 1.0
DEFAULT_RATE_LIMIT_PER_MINUTE = 100
DEFAULT_LANG = "en-US"
DEFAULT_RATE_LIMIT_MAX_WAIT = 120.0
MAX_TIMEOUT = 600.0
MAX_RETRIES = 10
#: Every call ends within this many seconds, whatever the server does (slow headers, a dripping
#: body): the gateway itself gives up after 15 s; the rest is for the transfer.
DEFAULT_CALL_DEADLINE = 45.0
#: Answers larger than this (after decompression) are refused: no documented answer comes near it.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_LANG_RE = re.compile(r"^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*$")
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]+$")
DEFAULT_BAN_SECONDS = 300.0
#: Where the apiKey's call budget is shared: ``host`` (all processes of a host), ``redis`` (all
#: hosts, named by ``rate_limit_redis_conn_id``), ``process`` (this process only).
RATE_LIMIT_STORES = ("host", "redis", "process")
RATE_LIMIT_FALLBACKS = ("fail", "host")

#: Extra keys this provider reads; any other key is ignored with a warning, never sent as a header.
KNOWN_EXTRAS = frozenset(
    {
        "company_id",
        "lang",
        "recv_window",
        "timeout",
        "verify",
        "max_retries",
        "retry_backoff",
        "call_deadline",
        "max_response_bytes",
        "rate_limit_per_minute",
        "rate_limit_window",
        "rate_limit_store",
        "rate_limit_dir",
        "rate_limit_redis_conn_id",
        "rate_limit_max_wait",
        "rate_limit_fallback",
        "rate_limit_hosts",
        "ban_seconds",
        "msg_ws_url",
        "msg_ws_compression",
        "app_id",
        "device",
        "sign_sort_nested",
        "sign_key_order",
        "sign_charset",
        "idempotency_key",
    }
)


#: What each extra means, for the connection page of the docs (generated from this table and the
#: defaults of :class:`ConnectionSettings`, so it cannot drift: the docs build fails on an extra of
#: :data:`KNOWN_EXTRAS` that has no entry here). A value is ``(default shown, meaning)``; a default
#: of ``None`` is read from :class:`ConnectionSettings`.
EXTRA_DOCS: dict[str, tuple[str | None, str]] = {
    "company_id": ("required", "The ``companyId`` header: your platform company id (439 on the PRE test platform)."),
    "lang": (None, "The ``lang`` header (``en-US``, ``zh-CN``, ...); an empty string: not sent."),
    "recv_window": (None, "The ``recvWindow`` header, in ms: how long a signed request stays valid."),
    "timeout": (None, "Seconds: one number (the read timeout; connect at most 10) or ``[connect, read]``."),
    "verify": (
        None,
        "TLS verification of the gateway and the message socket, or the path of a CA bundle "
        "(it must exist on every worker and the triggerer).",
    ),
    "call_deadline": (
        None,
        "Seconds in which a call ends, retries included, whatever the server does (slow headers, a "
        "dripping body); an answer still arriving when it passes is not retried. Waits for the shared "
        "budget do not count (``rate_limit_max_wait`` bounds them). The gateway itself gives up after 15 s.",
    ),
    "max_response_bytes": (None, "The largest answer read, counted after decompression; a larger one is refused."),
    "max_retries": (None, "Retries of *safe* failures (idempotent calls on 5xx, 429 and network errors), at most 10."),
    "retry_backoff": (None, "The first back-off in seconds (exponential, jittered, at most 30 s)."),
    "rate_limit_per_minute": (
        None,
        "The apiKey's call budget, shared by every process that uses the key; "
        "``0`` turns counting off (the ban breaker stays).",
    ),
    "rate_limit_window": (None, "The budget's window in seconds (the gateway counts per minute)."),
    "rate_limit_redis_conn_id": (
        "none",
        "An Airflow Redis connection every host reaches: the budget and the ban "
        "state then live in Redis, shared by all hosts.",
    ),
    "rate_limit_store": (
        None,
        "``host_file`` (a file store per host; ``host`` works too), ``redis`` (implied by "
        "``rate_limit_redis_conn_id``) or ``process`` (this process only).",
    ),
    "rate_limit_dir": (
        "``$MULTIMARKETS_BUDGET_DIR``, else ``$AIRFLOW_HOME/multimarkets-budget``",
        "The host store's directory; every Airflow process of the host must be able to write it.",
    ),
    "rate_limit_max_wait": (
        None,
        "The longest one call waits for budget or a ban, in seconds; a longer wait "
        "fails at once, naming when to call again.",
    ),
    "rate_limit_fallback": (
        None,
        "Redis unreachable: ``no_fallback`` (no call sent, a clear error; ``fail`` works too) or ``host_file`` "
        "(this host's share of the budget in a host store, with a warning; ``host`` works too).",
    ),
    "rate_limit_hosts": (
        "the hosts Redis saw",
        "How many hosts share the apiKey: a host that falls back from Redis uses ``1/rate_limit_hosts`` of "
        "the budget. Unset: the hosts Redis saw using the key in the last hour (one call per window if it "
        "never saw any).",
    ),
    "ban_seconds": (None, "How long a 418 without ``Retry-After`` blocks the key (the documented first ban)."),
    "msg_ws_url": (
        "from the host",
        "The message WebSocket, e.g. ``wss://pre-api-test.cmfbl.com/openapi-c/openMsg/{appId}``.",
    ),
    "msg_ws_compression": (
        None,
        "Per-message deflate on the message WebSocket: ``disabled`` (``none`` works too) or ``deflate``.",
    ),
    "app_id": ("the company id", "Fills ``{appId}`` in ``msg_ws_url``."),
    "device": (None, "The ``device`` field of the message socket's frames."),
    "sign_sort_nested": (None, "Sort the keys of nested objects when signing (an open question of the docs)."),
    "sign_key_order": (
        None,
        "``java_compare`` (``java`` works too: case-sensitive, Java ``String.compareTo``) or ``case_insensitive``.",
    ),
    "sign_charset": (
        None,
        "The charset of the signed bytes: ``UTF-8``, ``GBK`` or ``ISO-8859-1``, the gateway JVM's default "
        "(an open question of the docs); the body is always sent as UTF-8.",
    ),
    "idempotency_key": (
        None,
        "Send the ``idempotency-key`` header when a call gives a key "
        "(``hook.call(..., idempotency_key=...)``); ``false`` never sends it.",
    ),
}


#: ``msg_ws_compression``: pushes are small JSON frames; "none" spares the triggerer the inflate work
#: (about a third of what receiving a push costs) and a zlib window per connection.
MSG_WS_COMPRESSIONS = ("none", "deflate")


@dataclass(frozen=True)
class ConnectionSettings:
    base_url: str
    api_key: str
    secret_key: str = field(repr=False)
    company_id: int
    lang: str | None = DEFAULT_LANG
    recv_window: int = DEFAULT_RECV_WINDOW_MS
    timeout: tuple[float, float] = (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
    verify: bool | str = True
    max_retries: int = DEFAULT_MAX_RETRIES
    call_deadline: float = DEFAULT_CALL_DEADLINE
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE
    rate_limit_window: float = 60.0
    rate_limit_store: str = "host"
    rate_limit_dir: str | None = None
    rate_limit_redis_conn_id: str | None = None
    rate_limit_max_wait: float = DEFAULT_RATE_LIMIT_MAX_WAIT
    rate_limit_fallback: str = "fail"
    #: hosts that share the apiKey; a host that falls back from Redis uses 1/hosts of the budget
    rate_limit_hosts: int | None = None
    ban_seconds: float = DEFAULT_BAN_SECONDS
    msg_ws_url: str | None = None
    #: per-message deflate on the message WebSocket: "none" (default) or "deflate"
    msg_ws_compression: str = "none"
    app_id: str | None = None
    device: int = 1
    canonical: CanonicalOptions = field(default_factory=CanonicalOptions)
    #: the charset of the signed bytes (the vendor's Java demo signs with the JVM's default charset)
    sign_charset: str = "UTF-8"
    #: send the ``idempotency-key`` header when a call gives a key (extra ``idempotency_key``)
    idempotency_key: bool = True
    unknown_extras: tuple[str, ...] = ()

    def url_for(self, biz_type: str) -> str:
        return f"{self.base_url}/global/{biz_type}"

    def ws_url(self) -> str:
        """The message WebSocket URL with ``{appId}`` filled in (see the docs' open questions, ``concepts/signing``)."""
        app_id = self.app_id or str(self.company_id)
        if self.msg_ws_url:
            url = self.msg_ws_url
            if "{appId}" in url or "{app_id}" in url:
                return url.replace("{appId}", app_id).replace("{app_id}", app_id)
            return url
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, f"{parts.path}/openMsg/{app_id}", "", ""))


def check_hook_overrides(values: Mapping[str, Any], where: str) -> None:
    """Check the hook's keyword arguments (an operator's ``hook_params``) as the extras they override,
    with an error that names ``hook_params`` and the key."""
    checks: dict[str, Callable[[Mapping[str, Any]], Any]] = {
        "timeout": _timeout,
        "max_retries": lambda v: _as_int(v, "max_retries", DEFAULT_MAX_RETRIES, 0, maximum=MAX_RETRIES),
        "retry_backoff": lambda v: _as_float(v, "retry_backoff", DEFAULT_RETRY_BACKOFF, 0.0),
        "rate_limit_per_minute": lambda v: _as_int(v, "rate_limit_per_minute", DEFAULT_RATE_LIMIT_PER_MINUTE, 0),
    }
    for key, check in checks.items():
        if values.get(key) is None:
            continue
        try:
            check(values)
        except MultiMarketsConfigError as exc:
            text = str(exc).replace(f"MultiMarkets connection field '{key}'", f"hook_params[{key!r}]")
            text = text.replace(f"Set extra '{key}'", f"Set hook_params[{key!r}]")
            raise MultiMarketsConfigError(f"{where}: {text}") from None


def _fail(field_name: str, problem: str, fix: str) -> MultiMarketsConfigError:
    return MultiMarketsConfigError(f"MultiMarkets connection field '{field_name}' {problem}. {fix}")


def normalize_base_url(host: str | None, port: int | None = None) -> str:
    """``{host}`` as the Open API base URL: scheme added, ``/openapi-c`` added when no path."""
    raw = (host or "").strip()
    if not raw:
        return PRODUCTION_BASE_URL
    if re.search(r"\s", raw):
        raise _fail("host", "contains white space", "Enter a URL such as " + PRE_BASE_URL)
    if "://" not in raw:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/|^https?:?//?|^//", raw, re.IGNORECASE):
            raise _fail("host", f"has a malformed scheme ({raw.split('/')[0]!r})", "Write it as https://HOST/openapi-c")
        raw = "https://" + raw
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a malformed port or IPv6 literal
    except ValueError as exc:
        raise _fail("host", f"is not a valid URL ({exc})", "Enter a URL such as " + PRE_BASE_URL) from None
    if parts.username is not None or parts.password is not None:
        raise _fail(
            "host",
            "contains a user name or password (user:password@host)",
            "Remove them from the 'Open API base URL' field: the apiKey goes in the 'apiKey' field and the "
            "secretKey in the 'secretKey (RSA private key)' field; nothing else is ever sent as credentials",
        )
    if parts.scheme not in ("http", "https"):
        raise _fail("host", f"has the scheme {parts.scheme!r}", "Use https:// (or http:// for a local sandbox)")
    try:
        netloc_port = parts.port
    except ValueError:
        raise _fail("host", "has a port that is not a number", "Write it as https://HOST[:PORT]/openapi-c") from None
    if not parts.hostname:
        raise _fail("host", "has no host name", "Enter a URL such as " + PRE_BASE_URL)
    if not parts.hostname.startswith("[") and ":" not in parts.hostname:
        labels = parts.hostname.split(".")
        if len(parts.hostname) > 253 or any(not 0 < len(label) <= 63 for label in labels):
            raise _fail(
                "host",
                f"has a host name that is not valid DNS ({parts.hostname[:80]!r}: each dot-separated label must "
                "be 1 to 63 characters)",
                "Enter a URL such as " + PRE_BASE_URL,
            )
    if parts.query or parts.fragment:
        raise _fail("host", "contains a query or fragment", "Enter only the base URL, such as " + PRE_BASE_URL)
    netloc = parts.netloc
    if port and netloc_port is None:
        netloc = f"{netloc}:{int(port)}"
    path = parts.path.rstrip("/")
    if path.endswith("/global") or "/global/" in path:
        raise _fail(
            "host",
            "includes the '/global' part of the request path",
            "Enter only the base URL ending in /openapi-c; the provider appends /global/{bizType}",
        )
    if not path:
        path = OPENAPI_PATH
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def _as_int(
    extra: Mapping[str, Any], key: str, default: int, minimum: int, unit: str = "", *, maximum: int | None = None
) -> int:
    value = extra.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise _fail(key, f"must be a whole number{unit}, got a boolean", f"Set extra '{key}' to a number")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise _fail(
            key, f"must be a whole number{unit}, got {value!r}", f"Set extra '{key}' to a number such as {default}"
        ) from None
    if number < minimum:
        raise _fail(key, f"must be at least {minimum}, got {number}", f"Set extra '{key}' to {default} or more")
    if maximum is not None and number > maximum:
        raise _fail(key, f"must be at most {maximum}, got {number}", f"Set extra '{key}' to e.g. {default}")
    return number


def _as_float(extra: Mapping[str, Any], key: str, default: float, minimum: float, maximum: float = 86400.0) -> float:
    value = extra.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(str(value).strip())
    except ValueError:
        raise _fail(
            key, f"must be a number, got {value!r}", f"Set extra '{key}' to a number such as {default:g}"
        ) from None
    if not number >= minimum:
        raise _fail(key, f"must be at least {minimum:g}, got {number:g}", f"Set extra '{key}' to {default:g} or more")
    if number > maximum:
        raise _fail(key, f"must be at most {maximum:g}, got {number:g}", f"Set extra '{key}' to e.g. {default:g}")
    return number


def _as_bool(extra: Mapping[str, Any], key: str, default: bool) -> bool:
    value = extra.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise _fail(key, f"must be true or false, got {value!r}", f"Set extra '{key}' to true or false")


def _as_text(extra: Mapping[str, Any], key: str) -> str | None:
    value = extra.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, got {type(value).__name__}", f"Set extra '{key}' to a text value")
    return value.strip()


#: Spellings of at least 5 characters for the short choices. Airflow hands every string value of a
#: connection's extra to its secret masker when it fetches the connection, and a value shorter than 5
#: characters makes it log "Skipping masking for a secret as it's too short" in every task (none of
#: these is a secret): write ``"rate_limit_fallback": "host_file"`` rather than ``"host"``.
CHOICE_SPELLINGS = {
    "host_file": "host",
    "no_fallback": "fail",
    "disabled": "none",
    "java_compare": "java",
}


def _choice(extra: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = _as_text(extra, key)
    if value is None:
        return default
    chosen = CHOICE_SPELLINGS.get(value.lower(), value.lower())
    if chosen not in choices:
        spelled = [next((long for long, short in CHOICE_SPELLINGS.items() if short == c), c) for c in choices]
        raise _fail(key, f"must be one of {', '.join(spelled)}, got {value!r}", f"Set extra '{key}' to {default!r}")
    return chosen


def _timeout(extra: Mapping[str, Any]) -> tuple[float, float]:
    value = extra.get("timeout")
    if value is None or value == "":
        return (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
    items = value if isinstance(value, (list, tuple)) else [value]
    try:
        numbers = [float(str(v).strip()) for v in items]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or not all(0 < n <= MAX_TIMEOUT for n in numbers):
        raise _fail(
            "timeout",
            f"must be seconds > 0 and at most {MAX_TIMEOUT:g}, or [connect, read], got {value!r}",
            f"Set extra 'timeout' to e.g. {DEFAULT_READ_TIMEOUT:g} or [{DEFAULT_CONNECT_TIMEOUT:g}, {DEFAULT_READ_TIMEOUT:g}]",
        )
    if len(numbers) == 1:
        return (min(numbers[0], DEFAULT_CONNECT_TIMEOUT), numbers[0])
    return (numbers[0], numbers[1])


def _verify(extra: Mapping[str, Any]) -> bool | str:
    value = extra.get("verify")
    if isinstance(value, str) and value.strip().lower() not in (
        "",
        "true",
        "false",
        "1",
        "0",
        "yes",
        "no",
        "on",
        "off",
    ):
        path = value.strip()  # a CA bundle path
        if not os.path.exists(path):
            raise _fail(
                "verify",
                f"names a CA bundle {path!r} that does not exist on this machine",
                "Set it to the path of a PEM CA bundle that every worker has, or true to use the system's CAs",
            )
        return path
    return _as_bool(extra, "verify", True)


def settings_from_connection(
    *,
    host: str | None,
    port: int | None,
    login: str | None,
    password: str | None,
    extra: Mapping[str, Any] | None,
) -> ConnectionSettings:
    if extra is not None and not isinstance(extra, Mapping):
        raise MultiMarketsConfigError(
            f"The extra of the MultiMarkets connection is a JSON {type(extra).__name__}, not an object. Write it "
            'as an object, e.g. {"company_id": 439}.'
        )
    extra = dict(extra or {})
    api_key = (login or "").strip()
    if not api_key:
        raise _fail(
            "login",
            "(apiKey) is empty",
            "Put the apiKey issued in API Management in the connection's 'apiKey' field (its login)",
        )
    if re.search(r"\s", api_key):
        raise _fail("login", "(apiKey) contains white space", "Paste the apiKey without spaces or line breaks")
    if not _PRINTABLE_ASCII.fullmatch(api_key):
        raise _fail(
            "login",
            "(apiKey) contains characters that are not printable ASCII",
            "Paste the apiKey exactly as API Management shows it (hex digits)",
        )
    secret = (password or "").strip()
    if not secret:
        raise _fail(
            "password",
            "(secretKey) is empty",
            "Put the privateKey issued with the apiKey (base64 PKCS#8, starting 'MII') in the connection's "
            "'secretKey (RSA private key)' field (its password)",
        )
    company = extra.get("company_id", extra.get("companyId"))
    if company is None or str(company).strip() == "":
        raise _fail(
            "company_id",
            "is missing",
            'Fill in the Company ID field of the connection form (or add "company_id": <your company id> to the '
            "extra JSON); 439 on the PRE test platform",
        )
    if isinstance(company, bool):
        raise _fail(
            "company_id", "must be a whole number, got a boolean", 'Set "company_id" to your numeric company id'
        )
    try:
        company_id = int(str(company).strip())
    except ValueError:
        raise _fail(
            "company_id", f"must be a whole number, got {company!r}", 'Set "company_id" to your numeric company id'
        ) from None
    lang_value = extra.get("lang")  # null (as the connection form saves an empty field): the default
    lang = DEFAULT_LANG if lang_value is None else (str(lang_value).strip() or None)
    if lang is not None and not _LANG_RE.fullmatch(lang):
        raise _fail(
            "lang", f"is not a language tag ({lang[:40]!r})", "Set it to e.g. en-US or zh-CN, or leave it empty"
        )
    key_order = str(extra.get("sign_key_order") or "java").strip()
    key_order = CHOICE_SPELLINGS.get(key_order, key_order)
    if key_order not in KEY_ORDERS:
        raise _fail(
            "sign_key_order",
            f"must be one of {', '.join(KEY_ORDERS)}, got {key_order!r}",
            "Remove it to use the documented order",
        )
    charset_value = extra.get("sign_charset")
    try:
        charset = sign_charset(charset_value)
    except ValueError:
        raise _fail(
            "sign_charset",
            f"must be one of {', '.join(SIGN_CHARSETS)}, got {str(charset_value)[:40]!r}",
            "Set it to the gateway JVM's default charset, or remove it for UTF-8",
        ) from None
    ws_url = extra.get("msg_ws_url")
    if ws_url is not None and str(ws_url).strip():
        ws_url = str(ws_url).strip()
        if not ws_url.startswith(("ws://", "wss://")):
            raise _fail(
                "msg_ws_url",
                f"must start with wss:// (or ws:// for a local sandbox), got {ws_url!r}",
                "Use e.g. wss://pre-api-test.cmfbl.com/openapi-c/openMsg/{appId}",
            )
    else:
        ws_url = None
    app_id = extra.get("app_id")
    redis_conn_id = _as_text(extra, "rate_limit_redis_conn_id")
    store = _choice(extra, "rate_limit_store", RATE_LIMIT_STORES, "redis" if redis_conn_id else "host")
    if store == "redis" and not redis_conn_id:
        raise _fail(
            "rate_limit_redis_conn_id",
            "is missing while 'rate_limit_store' is 'redis'",
            "Name the Airflow Redis connection that every host can reach, or remove 'rate_limit_store'",
        )
    return ConnectionSettings(
        base_url=normalize_base_url(host, port),
        api_key=api_key,
        secret_key=secret,
        company_id=company_id,
        lang=lang,
        recv_window=_as_int(extra, "recv_window", DEFAULT_RECV_WINDOW_MS, 1, " of milliseconds"),
        timeout=_timeout(extra),
        verify=_verify(extra),
        max_retries=_as_int(extra, "max_retries", DEFAULT_MAX_RETRIES, 0, maximum=MAX_RETRIES),
        call_deadline=_as_float(extra, "call_deadline", DEFAULT_CALL_DEADLINE, 1.0, maximum=3600.0),
        max_response_bytes=_as_int(extra, "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES, 1024, maximum=2**31),
        retry_backoff=_as_float(extra, "retry_backoff", DEFAULT_RETRY_BACKOFF, 0.0),
        rate_limit_per_minute=_as_int(extra, "rate_limit_per_minute", DEFAULT_RATE_LIMIT_PER_MINUTE, 0),
        rate_limit_window=_as_float(extra, "rate_limit_window", 60.0, 0.001),
        rate_limit_store=store,
        rate_limit_dir=_as_text(extra, "rate_limit_dir"),
        rate_limit_redis_conn_id=redis_conn_id,
        rate_limit_max_wait=_as_float(extra, "rate_limit_max_wait", DEFAULT_RATE_LIMIT_MAX_WAIT, 0.0),
        rate_limit_fallback=_choice(extra, "rate_limit_fallback", RATE_LIMIT_FALLBACKS, "fail"),
        rate_limit_hosts=_as_int(extra, "rate_limit_hosts", 0, 1, " of hosts", maximum=10_000) or None,
        ban_seconds=_as_float(extra, "ban_seconds", DEFAULT_BAN_SECONDS, 1.0),
        msg_ws_url=ws_url,
        msg_ws_compression=_choice(extra, "msg_ws_compression", MSG_WS_COMPRESSIONS, "none"),
        app_id=str(app_id).strip() if app_id not in (None, "") else None,
        device=_as_int(extra, "device", 1, 1),
        canonical=CanonicalOptions(
            sort_nested=_as_bool(extra, "sign_sort_nested", True),
            key_order=key_order,
        ),
        sign_charset=charset,
        idempotency_key=_as_bool(extra, "idempotency_key", True),
        unknown_extras=tuple(sorted(k for k in extra if k not in KNOWN_EXTRAS and k != "companyId")),
    )


def missing_connection_message(conn_id: str) -> str:
    """What to do when the MultiMarkets connection ``conn_id`` does not exist."""
    return (
        f"The Airflow connection {conn_id!r} is not defined. Create it (type 'multimarkets') in the UI or with "
        f"AIRFLOW_CONN_{conn_id.upper()} set to the JSON shown on the provider's connection page "
        "(https://airflow-provider-multimarkets.readthedocs.io/en/stable/connection.html)."
    )


def settings_from_airflow_connection(
    conn: Any,
    conn_id: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    mask: Callable[[str], None] | None = None,
) -> ConnectionSettings:
    """The one path from an Airflow connection object to :class:`ConnectionSettings` (hook and triggers).

    ``overrides`` (values that are not ``None``) replace extras, as the hook's keyword arguments do;
    ``mask`` registers the secretKey (and its form without white space) with the secret masker.
    """
    raw_extra = getattr(conn, "extra", None)
    # parsed here, not with ``conn.extra_dejson``: that registers every string value of the extra with
    # the secret masker ("host", "none": "Skipping masking for a secret as it's too short" in every task,
    # and a mask request each at DEBUG); no extra of this connection type is a secret (the secretKey is
    # the password, registered below), and Airflow masks the extra's raw text when it fetches it
    if isinstance(raw_extra, dict):
        extra = raw_extra
    else:
        try:
            extra = json.loads(raw_extra) if raw_extra else {}
        except (TypeError, ValueError):
            extra = None
    blank = not raw_extra or str(raw_extra).strip() in ("", "{}")
    if not blank and (not isinstance(extra, dict) or not extra):
        raise MultiMarketsConfigError(
            f'The extra of connection {conn_id!r} is not a JSON object. Write it as e.g. {{"company_id": 439}}.'
        )
    extra = extra if isinstance(extra, dict) else {}
    secret = conn.password or ""
    if mask is not None and secret:
        mask(secret)
        compact = "".join(secret.split())
        if compact != secret:
            mask(compact)
    wanted = {k: v for k, v in (overrides or {}).items() if v is not None}
    return settings_from_connection(
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=secret,
        extra=dict(extra, **wanted) if wanted else extra,
    )
