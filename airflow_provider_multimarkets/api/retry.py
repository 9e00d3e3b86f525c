"""The one place that decides whether a failed Open API call is retried, and after how long.

Rules ("never double-trade"):

* A request that provably never left this machine (connection refused, DNS failure, connect
  timeout) is retried for every call, orders included.
* A request that may have reached the server (read timeout, connection dropped mid-answer, HTTP
  5xx) is retried only when the call is idempotent. Order placement (``idempotent=False``) is
  never retried on those.
* HTTP 429 and 418 first block the apiKey for every process that shares its call budget
  (``budget.CallBudget.record``: until Retry-After, else one window for a 429 and ``ban_seconds``
  for a 418). An idempotent call is then retried once the block ends, if it ends within
  ``rate_limit_max_wait``; otherwise ``CallBudget.acquire`` fails at once, naming the end, and no
  call is sent into the block. Order placement is not retried on them.
* Never retried: other 4xx, error envelopes, bodies that are not an envelope, configuration and
  TLS errors, and an answer that was still arriving when the call's deadline passed.
* The call's deadline (``call_deadline``) is one for all its tries: every exchange and back-off
  sleep counts against it (a wait for the shared budget does not: it is bounded by
  ``rate_limit_max_wait`` and sends nothing). A retry is not started when its back-off would end
  past the deadline (:meth:`RetryPolicy.fits`).

Backoff is exponential with jitter, bounded; a ``Retry-After`` header wins when present.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from airflow_provider_multimarkets.exceptions import (
    MultiMarketsBannedError,
    MultiMarketsError,
    MultiMarketsRateLimitError,
    MultiMarketsTransportError,
)

MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 120.0


def retryable_error(exc: BaseException, *, idempotent: bool) -> bool:
    """Whether ``exc`` may be retried for a call that is (or is not) idempotent."""
    if not isinstance(exc, MultiMarketsError):
        return False
    if isinstance(exc, MultiMarketsTransportError):
        if exc.permanent or exc.deadline_hit:
            return False
        return idempotent or not exc.maybe_sent
    if isinstance(exc, (MultiMarketsBannedError, MultiMarketsRateLimitError)):
        return idempotent  # the wait is the shared block's (budget.CallBudget.acquire)
    status = exc.http_status
    if status is not None and 500 <= status < 600:
        return idempotent
    return False


def backoff_delay(
    attempt: int, base: float, cap: float = MAX_BACKOFF_SECONDS, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": ``base * 2**attempt`` capped at ``cap``, then between
    half of that and all of it, so that retries of many processes stay spread out. The one backoff
    rule of the provider: HTTP retries and message WebSocket reconnects."""
    ceiling = min(cap, base * (2 ** min(attempt, 64)))
    return ceiling / 2 + rand() * ceiling / 2


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    backoff: float = 1.0
    max_backoff: float = MAX_BACKOFF_SECONDS
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS

    def delay(self, attempt: int, exc: BaseException, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.max_retry_after)
        return backoff_delay(attempt, self.backoff, self.max_backoff, rand)

    @staticmethod
    def fits(delay: float, remaining: float) -> bool:
        """Whether a retry after ``delay`` seconds still has time within the call's deadline (``remaining`` s):
        at least a second, or a tenth of what is left, for the exchange itself."""
        return delay + max(1.0, 0.1 * remaining) <= remaining
