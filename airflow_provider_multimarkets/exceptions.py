"""Typed errors raised by the MultiMarkets provider.

Every failure the provider can meet is a subclass of :class:`MultiMarketsError`, itself an
``AirflowException``, so a task fails with a message that names the cause and the fix. No
exception text ever contains the secretKey, a signature or a token.
"""

from __future__ import annotations

from typing import Any

try:  # Airflow 3.x
    from airflow.sdk.exceptions import AirflowException
except ImportError:  # pragma: no cover - Airflow 2.x, or no Airflow at all (pure-logic tests)
    try:
        from airflow.exceptions import AirflowException  # type: ignore[no-redef]
    except ImportError:

        class AirflowException(Exception):  # type: ignore[no-redef]
            """Stand-in used only when Airflow is not installed."""


class MultiMarketsError(AirflowException):
    """Base class of every error raised by this provider."""

    http_status: int | None = None


class MultiMarketsConfigError(MultiMarketsError, ValueError):
    """The Airflow connection or an operator argument is missing or malformed."""


class MultiMarketsSigningError(MultiMarketsError, ValueError):
    """The request body cannot be canonicalised and signed."""


class MultiMarketsTransportError(MultiMarketsError):
    """The request did not get an HTTP answer (refused, DNS, timeout, connection dropped).

    ``maybe_sent`` tells whether the request may have reached the server: ``False`` only when the
    connection was never established (refused, DNS, connect timeout). ``permanent`` marks
    failures that a retry cannot fix (TLS verification, invalid URL).
    """

    def __init__(self, message: str, *, maybe_sent: bool, url: str = "", permanent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent
        self.url = url
        self.permanent = permanent


class MultiMarketsHTTPError(MultiMarketsError):
    """A non-200 HTTP answer without a usable API envelope."""

    def __init__(self, message: str, *, http_status: int, body_excerpt: str = "") -> None:
        super().__init__(message)
        self.http_status = http_status
        self.body_excerpt = body_excerpt


class MultiMarketsRateLimitError(MultiMarketsHTTPError):
    """HTTP 429: more than the allowed calls per minute for this apiKey."""

    def __init__(self, message: str, *, retry_after: float | None, body_excerpt: str = "") -> None:
        super().__init__(message, http_status=429, body_excerpt=body_excerpt)
        self.retry_after = retry_after


class MultiMarketsBannedError(MultiMarketsHTTPError):
    """HTTP 418: the apiKey kept calling after a 429 and is disabled for 5 minutes or more.

    ``retry_after`` is the server's Retry-After in seconds when it sent one; ``ban_ends_at`` (epoch
    seconds) is set when the error comes from the shared ban breaker, before any call was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        body_excerpt: str = "",
        retry_after: float | None = None,
        ban_ends_at: float | None = None,
    ) -> None:
        super().__init__(message, http_status=418, body_excerpt=body_excerpt)
        self.retry_after = retry_after
        self.ban_ends_at = ban_ends_at


class MultiMarketsBudgetError(MultiMarketsError):
    """The shared call budget's store (Redis, or the host directory) cannot be used; no call was sent."""

    def __init__(self, message: str, *, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause


class MultiMarketsOrderError(MultiMarketsError):
    """An order task could not finish; the message says whether the order exists and how to find it.

    ``placed`` is ``False`` only when the order provably does not exist, ``True`` when it was found,
    ``None`` when it may exist. ``third_party_order`` is the client order id to look for.
    """

    def __init__(
        self,
        message: str,
        *,
        third_party_order: str,
        placed: bool | None = None,
        order_ids: list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.third_party_order = third_party_order
        self.placed = placed
        self.order_ids = order_ids or []


class MultiMarketsResponseError(MultiMarketsError):
    """The answer is not a usable envelope: empty, HTML, truncated JSON, not an object, no code."""

    def __init__(self, message: str, *, http_status: int | None = None, body_excerpt: str = "") -> None:
        super().__init__(message)
        self.http_status = http_status
        self.body_excerpt = body_excerpt


class MultiMarketsApiError(MultiMarketsError):
    """The API answered with an error envelope (``code`` other than ``"0"`` or ``ok`` false).

    ``concurrent_duplicate`` is true for :class:`MultiMarketsConcurrentDuplicateError` only."""

    concurrent_duplicate = False

    def __init__(
        self,
        message: str,
        *,
        code: str,
        msg: str,
        trace: str,
        http_status: int | None,
        biz_type: str = "",
        biz_code: str = "",
        msg_params: Any = None,
        data: Any = None,
        meaning: str = "",
        hint: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.msg = msg
        self.trace = trace
        self.http_status = http_status
        self.biz_type = biz_type
        self.biz_code = biz_code
        self.msg_params = msg_params
        self.data = data
        self.meaning = meaning
        self.hint = hint


class MultiMarketsConcurrentDuplicateError(MultiMarketsApiError):
    """``GATEWAY_CODE_018`` ("request frequency too fast, please try again later"): a request with the
    same ``idempotency-key``, bizType, version, group and companyId was still being processed, so the
    gateway refused this one without running it. This request did nothing (an order was not placed
    by it); the first request decides, and its answer is cached for 24 h under the key: look the
    order up (or call again with the same key once the first has finished)."""

    concurrent_duplicate = True
    #: this request was refused before the interface ran it
    placed = False


class MultiMarketsMsgError(MultiMarketsError):
    """A failure on the message WebSocket (connection, protocol or subscription)."""


class MultiMarketsMsgAuthError(MultiMarketsMsgError):
    """The message WebSocket rejected the token (unknown, expired or already used elsewhere)."""


class MultiMarketsPagingError(MultiMarketsError):
    """A paged query did not add up: its total changed while paging, the records that arrived
    disagree with the total, or it has more pages than allowed. Nothing partial should be kept."""
