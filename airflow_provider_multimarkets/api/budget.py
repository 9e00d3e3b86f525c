"""One call budget per apiKey, shared by every process (and, with Redis, every host) that uses it.

The Open API allows 100 calls per minute per apiKey. Above that the gateway answers 429, and a key
that calls on after a 429 is banned (418) for 5 minutes or more, for every DAG that uses it. Every
Airflow 3 task runs in its own process, so a limiter inside one process never sees the others.
Here the budget lives in a store that all of them share:

* ``HostStore`` (the default, zero configuration): a SQLite file per apiKey in a directory on the
  host, guarded by a file lock. Every process on the host that sees the directory shares it.
* ``RedisStore``: a sorted set per apiKey in Redis, checked and taken by one atomic Lua script.
  Every host that reaches the Redis server shares it.
* ``ProcessStore``: in memory, one process only (tests, benchmarks, ``rate_limit_store: process``).

The algorithm and the two shared stores are ``pyrate-limiter``'s sliding-window log buckets
(``SQLiteBucket`` with its file lock, ``RedisBucket`` with its Lua script): at most ``limit``
calls start in any ``window`` seconds. What is written here is the glue: choosing the store, the
wait loop with its bound, and the shared *block* (the ban breaker). Once any process sees a 429
or a 418, it writes until when the key is blocked; every process reads that before each call and
sends nothing until then. A wait longer than ``max_wait`` fails at once, naming the time to call
again, so Airflow's own task retries take over.

Pure logic: no Airflow import. Times are wall-clock epoch seconds, the same on every process of a
host and, with NTP (which the gateway's ``recvWindow`` already demands), across hosts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_multimarkets.api.settings import DEFAULT_BAN_SECONDS, DEFAULT_RATE_LIMIT_MAX_WAIT
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsBannedError,
    MultiMarketsBudgetError,
    MultiMarketsConfigError,
    MultiMarketsError,
    MultiMarketsRateLimitError,
)
from airflow_provider_multimarkets.storage.files import write_atomic

if TYPE_CHECKING:
    from pyrate_limiter import AbstractBucket

#: Added to the window: the gateway counts a call when it arrives, the budget when it is admitted,
#: so a worker that is slow between the two (a busy host, a GC pause, network jitter) could
#: otherwise squeeze ``limit + 1`` arrivals into one server-side window. 1 s costs under 2% of the
#: throughput of a 60 s window.
SAFETY_MARGIN_SECONDS = 1.0
#: A 429 without a usable Retry-After blocks the key for one whole window: calling on after a 429
#: is what gets a key banned, so the safe guess is the longest the gateway could need.
#: A 418 without one blocks it for ``ban_seconds`` (the documented first ban: 5 minutes).
#: (Both defaults are the connection settings' own, defined once in :mod:`.settings`.)
DEFAULT_MAX_WAIT_SECONDS = DEFAULT_RATE_LIMIT_MAX_WAIT
#: No Retry-After blocks a key longer than this (documented bans are 5, 10, 15 ... minutes); a
#: bogus far-future value must not stop every DAG for days.
MAX_BLOCK_SECONDS = 3600.0
#: The gateway's "too frequent" business code, sent with 429/418 and possibly with HTTP 200.
TOO_FREQUENT_CODE = "00012005"
_LEAK_EVERY = 25


def key_id(api_key: str) -> str:
    """A stable, non-secret name for an apiKey's budget (file and Redis key names)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:24]


def utc_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Block:
    """The apiKey may not be used before ``until`` (epoch seconds): the gateway answered ``status``."""

    until: float
    status: int

    def to_json(self) -> str:
        return json.dumps({"until": self.until, "status": self.status})

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Block | None:
        if not text:
            return None
        try:
            raw = json.loads(text)
            return cls(until=float(raw["until"]), status=int(raw["status"]))
        except (ValueError, KeyError, TypeError):
            return None


class BudgetStore(Protocol):
    """Where a budget and its block live. Each method is one short, atomic operation."""

    description: str

    def take(self, now_ms: int) -> int:
        """Take one call slot: 0 when taken, else the milliseconds until one frees up."""

    def read_block(self) -> Block | None: ...

    def write_block(self, block: Block) -> None:
        """Record a block, keeping whichever of the stored and the new one ends later."""

    def close(self) -> None: ...


def _rates(limit: int, window: float) -> list[Any]:
    from pyrate_limiter import Rate

    return [Rate(limit, max(1, round(window * 1000)))]


class _BucketStore:
    """Shared by the three stores: take a slot from a pyrate-limiter bucket, leak it now and then."""

    bucket: AbstractBucket | None
    description: str

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._takes = 0

    def take(self, now_ms: int) -> int:
        if self.bucket is None:  # limiting off: only the block applies
            return 0
        from pyrate_limiter import RateItem

        item = RateItem("call", now_ms)
        with self._lock:
            self._takes += 1
            if self._takes % _LEAK_EVERY == 1:
                self.bucket.leak(now_ms)
            if self.bucket.put(item):
                return 0
            wait = self.bucket.waiting(item)
        return max(int(wait), 1)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.bucket is not None:
            self.bucket.close()


class ProcessStore(_BucketStore):
    """In memory: one process only."""

    def __init__(self, limit: int, window: float) -> None:
        super().__init__()
        from pyrate_limiter import InMemoryBucket

        self.bucket = InMemoryBucket(_rates(limit, window)) if limit > 0 else None
        self._block: Block | None = None
        self.description = "this process only (rate_limit_store: process)"

    def read_block(self) -> Block | None:
        return self._block

    def write_block(self, block: Block) -> None:
        with self._lock:
            if self._block is None or block.until > self._block.until:
                self._block = block


class HostStore(_BucketStore):
    """A SQLite file per apiKey in ``directory``, shared by every process of the host."""

    def __init__(self, directory: str, api_key: str, limit: int, window: float) -> None:
        super().__init__()
        self.directory = directory
        name = key_id(api_key)
        self.db_path = os.path.join(directory, f"{name}.sqlite")
        self.block_path = os.path.join(directory, f"{name}.block")
        self.description = f"host store {directory}"
        try:
            os.makedirs(directory, exist_ok=True)
            probe = os.path.join(directory, f".probe-{os.getpid()}-{threading.get_ident()}")
            with open(probe, "w"):
                pass
            os.unlink(probe)
            from pyrate_limiter import SQLiteBucket

            self.bucket = SQLiteBucket.init_from_file(
                _rates(max(limit, 1), window),
                table="calls",
                db_path=self.db_path,
                create_new_table=True,
                use_file_lock=True,
            )
        except (OSError, Exception) as exc:
            if isinstance(exc, MultiMarketsError):
                raise
            raise MultiMarketsConfigError(
                f"MultiMarkets connection field 'rate_limit_dir' names {directory!r}, where the shared call "
                f"budget cannot be kept ({type(exc).__name__}: {exc}). No call was sent. Set the extra "
                "'rate_limit_dir' (or the environment variable MULTIMARKETS_BUDGET_DIR) to a directory that "
                "every Airflow process on this host can write."
            ) from None
        self._file_lock = self.bucket.lock  # the bucket's cross-process file lock
        if limit <= 0:
            self.bucket = None  # the file still holds the block; no calls are counted

    def read_block(self) -> Block | None:
        try:
            with open(self.block_path, encoding="utf-8") as handle:
                return Block.from_json(handle.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MultiMarketsBudgetError(
                f"Cannot read the shared ban state {self.block_path} ({type(exc).__name__}). No call was sent. "
                "Check the permissions of 'rate_limit_dir'."
            ) from None

    def write_block(self, block: Block) -> None:
        with self._lock, self._file_lock:
            current = self.read_block()
            if current is not None and current.until >= block.until:
                return
            write_atomic(self.block_path, block.to_json())

    def close(self) -> None:
        if self.bucket is not None:
            self.bucket.close()


_REDIS_WRITE_BLOCK = """
local current = redis.call('HGET', KEYS[1], 'until')
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'until', ARGV[1], 'status', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return 1
"""


def _redis_put_script() -> str:
    """pyrate-limiter's atomic check-and-insert, counting every call since the window's start.

    Its script counts ``ZCOUNT key window_start now``: calls stamped later than ``now`` are left out.
    Processes stamp a call just before their script runs, so one whose script runs after a later-
    stamped call of another process would not see that call, and both could take the last slot
    (measured: 11 calls in one 1-second window of 10). The upper bound is lifted here, as the
    library's SQLite bucket already counts (``item_timestamp >= start``).
    """
    from pyrate_limiter.buckets.redis_bucket import LuaScript

    bounded = "redis.call('ZCOUNT', bucket, window_start, now)"
    if bounded not in LuaScript.PUT_ITEM:  # pragma: no cover - a pyrate-limiter release changed its script
        raise RuntimeError("pyrate-limiter's Redis script changed; review budget._redis_put_script")
    return LuaScript.PUT_ITEM.replace(bounded, "redis.call('ZCOUNT', bucket, window_start, '+inf')")


class RedisStore(_BucketStore):
    """A sorted set per apiKey in Redis (pyrate-limiter's atomic Lua script), shared by every host."""

    def __init__(self, client: Any, api_key: str, limit: int, window: float, *, description: str) -> None:
        super().__init__()
        from pyrate_limiter import RedisBucket

        self.client = client
        name = key_id(api_key)
        self.block_key = f"multimarkets:block:{name}"
        self.description = description
        with self._redis_errors():
            self.bucket = (
                RedisBucket(
                    _rates(limit, window),
                    client,
                    f"multimarkets:budget:{name}",
                    client.script_load(_redis_put_script()),
                )
                if limit > 0
                else None
            )
            self._write_block = client.register_script(_REDIS_WRITE_BLOCK)
            client.ping()

    @contextmanager
    def _redis_errors(self) -> Iterator[None]:
        try:
            yield
        except MultiMarketsError:
            raise
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            raise MultiMarketsBudgetError(
                f"The shared call budget in Redis ({self.description}) is unreachable ({type(exc).__name__}). "
                "No call was sent: calls that no store coordinates could get the apiKey banned. Fix the Redis "
                "server or connection, or set the extra 'rate_limit_fallback' to 'host' to fall back to the "
                "per-host budget with a warning.",
                cause=type(exc).__name__,
            ) from None

    def take(self, now_ms: int) -> int:
        with self._redis_errors():
            return super().take(now_ms)

    def read_block(self) -> Block | None:
        with self._redis_errors():
            until, status = self.client.hmget(self.block_key, "until", "status")
        if until is None:
            return None
        try:
            return Block(until=float(until), status=int(status or 418))
        except ValueError:
            return None

    def write_block(self, block: Block) -> None:
        with self._redis_errors():
            self._write_block(keys=[self.block_key], args=[repr(block.until), block.status])

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: S110 - closing a dead connection is not an error
            pass


def _is_redis_error(exc: BaseException) -> bool:
    try:
        import redis
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (redis.RedisError, OSError))


class CallBudget:
    """The call budget of one apiKey: ``acquire()`` before every call, ``record()`` after a failure.

    :param store: where the budget and the block live (``HostStore``, ``RedisStore``, ``ProcessStore``).
    :param max_wait: the longest one call may wait, for budget or for a block. A longer wait fails
        at once: ``MultiMarketsBannedError`` (418) or ``MultiMarketsRateLimitError`` (429 / budget),
        naming when to call again.
    :param window: the budget's window in seconds (with the safety margin), for a 429 without
        Retry-After.
    :param ban_seconds: how long a 418 without Retry-After blocks the key.
    :param log: called once, with a message, the first time this budget made a call wait.
    """

    def __init__(
        self,
        store: BudgetStore,
        *,
        limit: int,
        window: float,
        max_wait: float = DEFAULT_MAX_WAIT_SECONDS,
        ban_seconds: float = DEFAULT_BAN_SECONDS,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.limit = limit
        self.window = window
        self.max_wait = max_wait
        self.ban_seconds = ban_seconds
        # looked up at call time, so tests can replace this module's ``time``
        self._clock = clock or (lambda: time.time())
        self._sleep = sleep or (lambda seconds: time.sleep(seconds))
        self._log = log
        self.waits = 0
        self.waited = 0.0

    def now(self) -> float:
        return self._clock()

    def __repr__(self) -> str:
        return f"<CallBudget {self.limit}/{self.window:g}s {self.store.description}>"

    # ---- taking budget ---------------------------------------------------------------------------

    def _step(self, waited: float) -> float:
        """One look at the store: 0.0 when a slot was taken, else the seconds to wait; raises past max_wait."""
        now = self._clock()
        block = self.store.read_block()
        if block is not None and block.until > now:
            wait = block.until - now + random.uniform(0.01, 0.1)
            if waited + wait > self.max_wait:
                raise self.blocked_error(block, now, waited)
            return wait
        wait_ms = self.store.take(int(now * 1000))
        if wait_ms <= 0:
            return 0.0
        wait = wait_ms / 1000 + random.uniform(0.005, 0.05)
        if waited + wait > self.max_wait:
            raise MultiMarketsRateLimitError(
                f"The apiKey's shared call budget ({self.limit} calls per {self.window:g} s, {self.store.description}) "
                f"has no free call for {wait:.1f} s; this call already waited {waited:.1f} s and may wait "
                f"{self.max_wait:g} s in all (extra 'rate_limit_max_wait'). No call was sent. Call again after "
                f"{utc_text(now + wait)}, spread the work over time, or raise 'rate_limit_max_wait'.",
                retry_after=wait,
            )
        return wait

    def acquire(self) -> float:
        """Take one unit of budget, waiting for it (and for any shared block); returns the seconds waited."""
        waited = 0.0
        while (wait := self._step(waited)) > 0:
            self._sleep(wait)
            waited += wait
        self._note_wait(waited)
        return waited

    async def aacquire(self) -> float:
        """The same from a coroutine (a trigger): store operations run in a thread, waits are ``asyncio.sleep``."""
        waited = 0.0
        while (wait := await asyncio.to_thread(self._step, waited)) > 0:
            await asyncio.sleep(wait)
            waited += wait
        self._note_wait(waited)
        return waited

    def _note_wait(self, waited: float) -> None:
        if waited <= 0:
            return
        self.waits += 1
        self.waited += waited
        if self.waits == 1 and self._log is not None:
            self._log(
                f"Waited {waited:.1f} s for the apiKey's shared call budget ({self.limit} calls per "
                f"{self.window:g} s, {self.store.description}). Later waits of this task are not logged."
            )

    # ---- the ban breaker -------------------------------------------------------------------------

    def record(self, exc: BaseException) -> Block | None:
        """After a failed call: a 429, a 418 or a "too frequent" envelope blocks the key for everyone."""
        now = self._clock()
        raw = getattr(exc, "retry_after", None)
        retry_after = float(raw) if isinstance(raw, (int, float)) and math.isfinite(raw) and raw > 0 else None
        if retry_after is not None:
            retry_after = min(retry_after, MAX_BLOCK_SECONDS)
        if isinstance(exc, MultiMarketsBannedError):
            block = Block(now + (retry_after or self.ban_seconds), 418)
        elif isinstance(exc, MultiMarketsRateLimitError) and exc.http_status == 429:
            block = Block(now + (retry_after or self.window), 429)
        elif isinstance(exc, MultiMarketsApiError) and exc.code == TOO_FREQUENT_CODE:
            block = Block(now + self.window, 429)
        else:
            return None
        self.store.write_block(block)
        return block

    def blocked_error(self, block: Block, now: float, waited: float) -> MultiMarketsError:
        left = block.until - now
        when = utc_text(block.until)
        if block.status == 418:
            return MultiMarketsBannedError(
                f"The apiKey is banned by the MultiMarkets gateway (HTTP 418) until about {when} ({left:.0f} s "
                f"from now), longer than this call may wait ({self.max_wait:g} s, extra 'rate_limit_max_wait'). "
                "No call was sent: calling into a ban prolongs it. Airflow's task retries take over; give the "
                "task a retry_delay past the ban's end.",
                retry_after=left,
                ban_ends_at=block.until,
            )
        return MultiMarketsRateLimitError(
            f"The apiKey is rate-limited by the MultiMarkets gateway (HTTP 429) until about {when} ({left:.0f} s "
            f"from now), longer than this call may wait ({self.max_wait:g} s, extra 'rate_limit_max_wait'; "
            f"already waited {waited:.1f} s). No call was sent. Call again after {when}.",
            retry_after=left,
        )

    def close(self) -> None:
        self.store.close()


def default_budget_dir() -> str:
    """``$MULTIMARKETS_BUDGET_DIR``, else ``$AIRFLOW_HOME/multimarkets-budget`` (``~/airflow`` by default)."""
    from airflow_provider_multimarkets.storage.paths import local_dir

    return local_dir("MULTIMARKETS_BUDGET_DIR", "multimarkets-budget")


__all__ = [
    "DEFAULT_BAN_SECONDS",
    "DEFAULT_MAX_WAIT_SECONDS",
    "SAFETY_MARGIN_SECONDS",
    "Block",
    "BudgetStore",
    "CallBudget",
    "HostStore",
    "ProcessStore",
    "RedisStore",
    "default_budget_dir",
    "key_id",
]
