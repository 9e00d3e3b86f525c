"""The gateway's idempotency cache, as documented for the ``idempotency-key`` request header.

The vendor's OpenAPI file ("Global Unified Request Header", ``HEAD /``) and the white-label docs
of the same gateway (docs.hyperex.io, "幂等请求") describe it; the Open API pages do not: a request
with an ``idempotency-key`` header has its answer cached for 24 hours; a later request with the
same key, bizType, version, group and companyId gets the cached answer without running the
interface again; a request that arrives while the first one is still being processed is refused
with ``GATEWAY_CODE_018`` ("request frequency too fast, please try again later").

Only answers of the interface are cached (its data or its business error); a request the gateway
refused before (signature, time window, rate limit) leaves the key free.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HEADER = "idempotency-key"
CODE_CONCURRENT = "GATEWAY_CODE_018"
MSG_CONCURRENT = "request frequency too fast, please try again later"
DEFAULT_TTL = 24 * 3600.0
#: keys kept at most (oldest dropped first): the sandbox is bounded
MAX_ENTRIES = 100_000

Key = tuple[str, str, str, str, str]


def cache_key(biz_type: str, headers: dict[str, str]) -> Key | None:
    """(key, bizType, version, group, companyId) of a request with the header (headers lower-case)."""
    value = (headers.get(HEADER) or "").strip()
    if not value:
        return None
    return (
        value,
        biz_type,
        (headers.get("version") or "").strip(),
        (headers.get("group") or "").strip(),
        (headers.get("companyid") or "").strip(),
    )


@dataclass
class IdempotencyCache:
    ttl: float = DEFAULT_TTL
    clock: Callable[[], float] = field(default=lambda: 0.0)
    answers: dict[Key, tuple[float, Any]] = field(default_factory=dict)
    in_flight: set[Key] = field(default_factory=set)
    #: requests refused as concurrent duplicates, and answers served from the cache
    refused: int = 0
    replayed: int = 0
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def begin(self, key: Key) -> tuple[str, Any]:
        """``("new", None)``: run it (the key is now in flight); ``("cached", answer)``; ``("busy", None)``."""
        with self._changed:
            now = self.clock()
            cached = self.answers.get(key)
            if cached is not None and cached[0] > now:
                self.replayed += 1
                return "cached", cached[1]
            if key in self.in_flight:
                self.refused += 1
                return "busy", None
            self.answers.pop(key, None)
            self.in_flight.add(key)
            self._changed.notify_all()
            return "new", None

    def finish(self, key: Key, answer: Any | None) -> None:
        """The first request of ``key`` is done: cache ``answer`` (``None``: nothing to cache)."""
        with self._changed:
            self.in_flight.discard(key)
            if answer is not None:
                if len(self.answers) >= MAX_ENTRIES:
                    self.answers.pop(next(iter(self.answers)))
                self.answers[key] = (self.clock() + self.ttl, answer)
            self._changed.notify_all()

    def wait_in_flight(self, count: int = 1, timeout: float = 30.0) -> bool:
        """Block until at least ``count`` keys are being processed (for tests; bounded)."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.in_flight) >= count, timeout)
