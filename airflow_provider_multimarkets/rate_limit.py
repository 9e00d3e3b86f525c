"""A client-side limiter that keeps one process under the Open API call rate of an apiKey.

The Open API allows 100 calls per minute per apiKey; above that the gateway answers 429, and
calling on after a 429 gets the key banned (418) for 5 minutes or more. A sliding-window log
guarantees at most ``limit`` calls in any ``window`` seconds, hence in any fixed minute too.

Limiters are shared per apiKey inside a process, so several hooks with the same key (threads, or
tasks of a LocalExecutor worker) share one budget. Across workers, use an Airflow pool.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one call slot, waiting when the window is full; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._calls and now - self._calls[0] >= self.window:
                    self._calls.popleft()
                if len(self._calls) < self.limit:
                    self._calls.append(now)
                    return waited
                wait = self.window - (now - self._calls[0])
            wait = max(wait, 0.001)
            self._sleep(wait)
            waited += wait


_REGISTRY: dict[tuple[str, int, float], SlidingWindowLimiter] = {}
_REGISTRY_LOCK = threading.Lock()


#: Added to the window: the gateway counts a call when it arrives, the limiter when it is sent, so
#: network jitter could otherwise squeeze ``limit + 1`` arrivals into one server-side window.
SAFETY_MARGIN_SECONDS = 0.5


def limiter_for(
    api_key: str, limit: int, window: float = 60.0, margin: float = SAFETY_MARGIN_SECONDS
) -> SlidingWindowLimiter | None:
    """The process-wide limiter of an apiKey, or ``None`` when ``limit`` is 0 (limiting off)."""
    if limit <= 0:
        return None
    key = (hashlib.sha256(api_key.encode()).hexdigest()[:16], limit, window + margin)
    with _REGISTRY_LOCK:
        limiter = _REGISTRY.get(key)
        if limiter is None:
            limiter = _REGISTRY[key] = SlidingWindowLimiter(limit, window + margin)
        return limiter
