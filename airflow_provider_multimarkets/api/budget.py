"""One call budget per apiKey, shared by every process (and, with Redis, every host) that uses it.

The Open API allows 100 calls per minute per apiKey. Above that the gateway answers 429, and a key
that calls on after a 429 is banned (418) for 5 minutes or more, for every DAG that uses it. Every
Airflow 3 task runs in its own process, so a limiter inside one process never sees the others.
Here the budget lives in a store that all of them share:

* ``HostStore`` (the default, zero configuration): a SQLite file per apiKey in a directory on the
  host, guarded by a file lock. Every process on the host that sees the directory shares it. Every
  wait for its lock or its database is bounded by ``rate_limit_max_wait``; a file that cannot be
  read is a :class:`MultiMarketsBudgetError` naming the file to delete.
* ``RedisStore``: a sorted set per apiKey in Redis, checked and taken by one atomic Lua script.
  Every host that reaches the Redis server shares it. A Redis that restarted (its scripts are
  gone: ``NoScriptError``) is used again at once: the scripts are loaded again, and a Redis that
  lost the key's data counts as full for one window (the gateway may still count the calls it
  forgot), then releases calls at the budget's pace.
* ``FallbackStore`` (``rate_limit_fallback: host``): Redis while it answers; while it does not,
  this host's share of the key's budget (``host_share``) in a host store, with the ban state kept
  on the host and merged into Redis once it answers again.
* ``ProcessStore``: in memory, one process only (tests, benchmarks, ``rate_limit_store: process``).

The algorithm and the two shared stores are ``pyrate-limiter``'s sliding-window log buckets
(``SQLiteBucket``, ``RedisBucket`` with its Lua script): at most ``limit`` calls start in any
``window`` seconds. What is written here is the glue: choosing the store, the wait loop with its
bound, and the shared *block* (the ban breaker). Once any process sees a 429 or a 418, it writes
until when the key is blocked (a 429: the gateway's whole window, not only its ``Retry-After``,
which is the time until one slot frees) and fills the budget so that, when the block ends,
waiting processes are let through one at a time at the budget's pace. Every process reads the
block before each call and sends nothing into it. A wait longer than ``max_wait`` fails at once,
naming the time to call again, so Airflow's own task retries take over.

Pure logic: no Airflow import. Times are wall-clock epoch seconds, the same on every process of a
host and, with NTP (which the gateway's ``recvWindow`` already demands), across hosts. A clock
stepped back never makes a call wait longer than the block or the window it would have waited.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
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
    MultiMarketsBudgetWaitError,
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
#: A stored time this far after now can only come from a clock that was stepped back.
CLOCK_TOLERANCE_SECONDS = 2.0
#: While Redis does not answer, a fallback store tries it again this often.
REDIS_RETRY_SECONDS = 5.0
#: Redis socket timeouts: an unreachable Redis is an error within seconds, never a hang.
REDIS_SOCKET_TIMEOUT = 2.0
#: Hosts that took budget from Redis within this long count for a fallback host's share.
HOSTS_SEEN_SECONDS = 3600.0
_LEAK_EVERY = 25
#: Member names of the pacing entries (one per call of the budget): written again, never added twice.
_PACE_PREFIX = "pace:"


def key_id(api_key: str) -> str:
    """A stable, non-secret name for an apiKey's budget (file and Redis key names)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:24]


def utc_text(epoch: float) -> str:
    if not math.isfinite(epoch):
        return "an unknown time"
    return datetime.fromtimestamp(max(0.0, min(epoch, 32503680000.0)), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def host_id(directory: str | None = None) -> str:
    """This host as the budget counts hosts: its name and, when given, its host-store directory
    (two workers of one machine with their own ``rate_limit_dir`` stand for two hosts)."""
    name = socket.gethostname() or "localhost"
    return f"{name}:{os.path.abspath(directory)}" if directory else name


def host_share(limit: int, hosts: int | None) -> int:
    """Calls per window one host may make while it cannot reach Redis: ``limit // hosts``, so that
    every host that falls back together never adds up to more than the key allows; a host that
    has never learned how many hosts there are (``rate_limit_hosts`` unset, Redis never reached)
    takes one call per window, the only share that is safe for any number of hosts."""
    if limit <= 0:
        return 0
    if not hosts or hosts < 1:
        return 1
    return max(1, limit // hosts)


@dataclass(frozen=True)
class Block:
    """The apiKey may not be used before ``until`` (epoch seconds): the gateway answered ``status``.

    ``set_at`` is when the block was recorded; a ``set_at`` later than now means the clock was
    stepped back, and the block is moved back with it (it never grows).
    """

    until: float
    status: int
    set_at: float | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {"until": self.until, "status": self.status}
        if self.set_at is not None:
            data["set_at"] = self.set_at
        return json.dumps(data)

    @classmethod
    def parse(cls, until: Any, status: Any, set_at: Any = None, *, now: float | None = None) -> Block:
        """A block from stored values; ``ValueError`` naming the problem when they are not one."""
        try:
            until_f = float(until)
            status_i = int(status) if status not in (None, b"", "") else 418
            set_f = float(set_at) if set_at not in (None, b"", "") else None
        except (TypeError, ValueError, OverflowError):
            raise ValueError("its values are not numbers") from None
        if not math.isfinite(until_f) or (set_f is not None and not math.isfinite(set_f)):
            raise ValueError("its time is not finite")
        if status_i not in (418, 429):
            raise ValueError(f"its status {status_i} is neither 418 nor 429")
        now = time.time() if now is None else now
        if set_f is None and until_f - now > MAX_BLOCK_SECONDS + 3600:
            raise ValueError("it ends further ahead than any block this provider writes")
        if set_f is not None and until_f - set_f > MAX_BLOCK_SECONDS + 3600:
            raise ValueError("it lasts longer than any block this provider writes")
        return cls(until=until_f, status=status_i, set_at=set_f)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Block | None:
        """A block from its JSON text; ``None`` for no text; ``ValueError`` when the text is not a block."""
        if not text:
            return None
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("it is not JSON") from None
        if not isinstance(raw, dict) or "until" not in raw:
            raise ValueError("it has no 'until'")
        return cls.parse(raw.get("until"), raw.get("status"), raw.get("set_at"))

    def stepped_back(self, now: float) -> Block | None:
        """The block moved back to ``now`` when the clock was stepped back since it was set, else ``None``."""
        if self.set_at is None or self.set_at <= now + CLOCK_TOLERANCE_SECONDS:
            return None
        return Block(until=now + max(0.0, self.until - self.set_at), status=self.status, set_at=now)


class BudgetStore(Protocol):
    """Where a budget and its block live. Each method is one short, atomic operation."""

    description: str

    def take(self, now_ms: int) -> int:
        """Take one call slot: 0 when taken, else the milliseconds until one frees up."""

    def read_block(self) -> Block | None: ...

    def write_block(self, block: Block, *, pace_from_ms: int | None = None, replace: Block | None = None) -> None:
        """Record a block, keeping whichever of the stored and the new one ends later (``replace``: put
        ``block`` in place of that stored one, for a clock stepped back). ``pace_from_ms``: fill the
        budget so that from then on one call is admitted per ``window / limit``."""

    def unstep(self, now_ms: int, shift_ms: int | None = None) -> None:
        """Calls stamped after ``now_ms`` (the clock was stepped back) are moved back by ``shift_ms``
        (the step, when a block tells it), else stamped ``now_ms``."""

    def close(self) -> None: ...


def _rates(limit: int, window: float) -> list[Any]:
    from pyrate_limiter import Rate

    return [Rate(limit, max(1, round(window * 1000)))]


class _BucketStore:
    """Shared by the stores: take a slot from a pyrate-limiter bucket, leak it now and then, pace it."""

    bucket: AbstractBucket | None
    description: str

    def __init__(self, limit: int = 0, window: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._takes = 0
        self.limit = limit
        self.window_ms = max(1, round(window * 1000))

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

    def pace_stamps(self, first_free_ms: int) -> list[int]:
        """Stamps of ``limit`` entries that leave the window one per ``window / limit``, the first
        at ``first_free_ms``: the budget's own pace, whatever the store held before."""
        if self.limit <= 0:
            return []
        step = self.window_ms / self.limit
        return [int(first_free_ms - self.window_ms + i * step) - 1 for i in range(self.limit)]

    def close(self) -> None:
        if self.bucket is not None:
            self.bucket.close()


class ProcessStore(_BucketStore):
    """In memory: one process only."""

    def __init__(self, limit: int, window: float) -> None:
        super().__init__(limit, window)
        from pyrate_limiter import InMemoryBucket

        self.bucket = InMemoryBucket(_rates(limit, window)) if limit > 0 else None
        self._block: Block | None = None
        self.description = "this process only (rate_limit_store: process)"

    def read_block(self) -> Block | None:
        return self._block

    def write_block(self, block: Block, *, pace_from_ms: int | None = None, replace: Block | None = None) -> None:
        with self._lock:
            if replace is not None:
                if self._block == replace:
                    self._block = block
                return
            if self._block is not None and block.until <= self._block.until:
                return
            self._block = block
            if pace_from_ms is not None and self.bucket is not None:
                from pyrate_limiter import RateItem

                items = [i for i in self.bucket.items if not i.name.startswith(_PACE_PREFIX)]  # type: ignore[attr-defined]
                items += [RateItem(f"{_PACE_PREFIX}{n}", ts) for n, ts in enumerate(self.pace_stamps(pace_from_ms))]
                items.sort(key=lambda i: i.timestamp)
                self.bucket.items[:] = items  # type: ignore[attr-defined]

    def unstep(self, now_ms: int, shift_ms: int | None = None) -> None:
        if self.bucket is None:
            return
        with self._lock:
            for item in self.bucket.items:  # type: ignore[attr-defined]
                if item.timestamp > now_ms:
                    item.timestamp = item.timestamp - shift_ms if shift_ms else now_ms
            self.bucket.items.sort(key=lambda i: i.timestamp)  # type: ignore[attr-defined]


class HostStore(_BucketStore):
    """A SQLite file per apiKey in ``directory``, shared by every process of the host.

    :param lock_timeout: the longest one operation waits for the file lock or for the database
        (another process holding it: stopped, hung, or in a long transaction): the call's
        ``rate_limit_max_wait``. Past it the operation fails with a :class:`MultiMarketsBudgetError`.
    :param name: the file's name (default: the apiKey's :func:`key_id`); the fallback of a Redis
        budget keeps its own file, with the host's share as its limit.
    """

    def __init__(
        self,
        directory: str,
        api_key: str,
        limit: int,
        window: float,
        *,
        lock_timeout: float = DEFAULT_MAX_WAIT_SECONDS,
        name: str | None = None,
    ) -> None:
        super().__init__(limit, window)
        self.directory = directory
        base = key_id(api_key)
        self.db_path = os.path.join(directory, f"{name or base}.sqlite")
        self.lock_path = f"{self.db_path}.lock"
        self.block_path = os.path.join(directory, f"{base}.block")
        self.description = f"host store {directory}"
        self.lock_timeout = max(0.0, float(lock_timeout))
        self.bucket = None
        try:
            os.makedirs(directory, exist_ok=True)
            probe = os.path.join(directory, f".probe-{os.getpid()}-{threading.get_ident()}")
            with open(probe, "w"):
                pass
            os.unlink(probe)
        except OSError as exc:
            raise MultiMarketsConfigError(
                f"MultiMarkets connection field 'rate_limit_dir' names {directory!r}, where the shared call "
                f"budget cannot be kept ({type(exc).__name__}: {exc}). No call was sent. Set the extra "
                "'rate_limit_dir' (or the environment variable MULTIMARKETS_BUDGET_DIR) to a directory that "
                "every Airflow process on this host can write."
            ) from None
        from filelock import FileLock
        from pyrate_limiter import SQLiteBucket

        #: the cross-process file lock; every acquire waits at most ``lock_timeout``
        self._file_lock = FileLock(self.lock_path, timeout=self.lock_timeout)
        with self._host_errors(self.db_path):
            with self._file_lock:
                conn = sqlite3.connect(
                    self.db_path, isolation_level="DEFERRED", check_same_thread=False, timeout=self.lock_timeout
                )
                try:
                    conn.execute("PRAGMA journal_mode=WAL;")
                    conn.execute("PRAGMA synchronous=NORMAL;")
                    conn.execute("CREATE TABLE IF NOT EXISTS 'calls' (name VARCHAR, item_timestamp INTEGER)")
                    conn.execute(
                        "CREATE INDEX IF NOT EXISTS 'idx_calls_rate_item_timestamp' ON 'calls' (item_timestamp)"
                    )
                    conn.commit()
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
            self._bucket = SQLiteBucket(_rates(max(limit, 1), window), conn, table="calls", lock=self._file_lock)
        if limit > 0:
            self.bucket = self._bucket  # limit 0: the file still holds the block; no calls are counted

    @contextmanager
    def _host_errors(self, path: str) -> Iterator[None]:
        """Lock waits past ``lock_timeout`` and unreadable files as a :class:`MultiMarketsBudgetError`."""
        from filelock import Timeout

        try:
            yield
        except MultiMarketsError:
            raise
        except Timeout:
            raise MultiMarketsBudgetError(
                f"Another process has held the lock {self.lock_path} of the apiKey's shared call budget for "
                f"{self.lock_timeout:g} s (the extra 'rate_limit_max_wait'): a stopped or hung Airflow process of "
                f"this host. No call was sent. Find it with `fuser {self.lock_path}` and end it; the lock is "
                "released when it exits.",
                cause="lock timeout",
            ) from None
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise MultiMarketsBudgetError(
                    f"The apiKey's shared call budget {self.db_path} stayed locked by another process for "
                    f"{self.lock_timeout:g} s (the extra 'rate_limit_max_wait'; sqlite3: {text}). No call was sent. "
                    f"Find the process with `fuser {self.db_path}` and end it.",
                    cause="database locked",
                ) from None
            raise self._corrupt(path, f"sqlite3: {text}") from None
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(path, f"sqlite3: {exc}") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._corrupt(path, str(exc)) from None
        except OSError as exc:
            raise MultiMarketsBudgetError(
                f"Cannot use {path}, part of the apiKey's shared call budget ({type(exc).__name__}: {exc}). No call "
                "was sent. Check the permissions of 'rate_limit_dir' (every Airflow process of the host must be "
                f"able to read and write it), or delete {path}.",
                cause=type(exc).__name__,
            ) from None

    def _corrupt(self, path: str, why: str) -> MultiMarketsBudgetError:
        holds = (
            "it only records until when the gateway blocks the apiKey (a 429 or a 418 records it again)"
            if path == self.block_path
            else f"it only holds the call times of the last window (delete {path}-wal and {path}-shm with it)"
        )
        return MultiMarketsBudgetError(
            f"The shared call budget's file {path} is corrupt or not one of its files ({why}). No call was sent. "
            f"Delete {path}: {holds}.",
            cause="corrupt file",
        )

    def take(self, now_ms: int) -> int:
        with self._host_errors(self.db_path):
            return super().take(now_ms)

    def read_block(self) -> Block | None:
        with self._host_errors(self.block_path):
            try:
                with open(self.block_path, "rb") as handle:
                    raw = handle.read(4096)
            except FileNotFoundError:
                return None
            return Block.from_json(raw.decode("utf-8"))

    def write_block(self, block: Block, *, pace_from_ms: int | None = None, replace: Block | None = None) -> None:
        with self._host_errors(self.block_path), self._lock, self._file_lock:
            try:
                current = self.read_block()
            except MultiMarketsBudgetError:
                current = None  # a corrupt block is replaced by the one just met
            if replace is not None:
                if current != replace:
                    return
            elif current is not None and current.until >= block.until:
                return
            write_atomic(self.block_path, block.to_json())
            if pace_from_ms is not None and self.bucket is not None:
                with self._host_errors(self.db_path):
                    self._conn.execute("DELETE FROM calls WHERE name LIKE ?", (f"{_PACE_PREFIX}%",))
                    self._conn.executemany(
                        "INSERT INTO calls (name, item_timestamp) VALUES (?, ?)",
                        [(f"{_PACE_PREFIX}{n}", ts) for n, ts in enumerate(self.pace_stamps(pace_from_ms))],
                    )
                    self._conn.commit()

    def unstep(self, now_ms: int, shift_ms: int | None = None) -> None:
        if self.bucket is None:
            return
        with self._host_errors(self.db_path), self._lock, self._file_lock:
            if shift_ms:
                self._conn.execute(
                    "UPDATE calls SET item_timestamp = item_timestamp - ? WHERE item_timestamp > ?", (shift_ms, now_ms)
                )
            else:
                self._conn.execute("UPDATE calls SET item_timestamp = ? WHERE item_timestamp > ?", (now_ms, now_ms))
            self._conn.commit()

    def start_paced(self, now_ms: int) -> bool:
        """Fill this store so that its first call is one window from now, then one per ``window / limit``
        (a host falling back from Redis: the gateway's window may be full of calls it cannot see).
        Done once for all processes of the host: not when pacing entries of the last window exist."""
        if self.bucket is None:
            return False
        with self._host_errors(self.db_path), self._lock, self._file_lock:
            row = self._conn.execute(
                "SELECT COUNT(*) FROM calls WHERE name LIKE ? AND item_timestamp > ?",
                (f"{_PACE_PREFIX}%", now_ms - self.window_ms),
            ).fetchone()
            if row and row[0]:
                return False
            self._conn.execute("DELETE FROM calls WHERE name LIKE ?", (f"{_PACE_PREFIX}%",))
            self._conn.executemany(
                "INSERT INTO calls (name, item_timestamp) VALUES (?, ?)",
                [(f"{_PACE_PREFIX}{n}", ts) for n, ts in enumerate(self.pace_stamps(now_ms + self.window_ms))],
            )
            self._conn.commit()
            return True

    def recent_calls(self, now_ms: int) -> list[tuple[int, int]]:
        """``(rowid, stamp)`` of the calls this store admitted in the last window (not its pacing entries)."""
        with self._host_errors(self.db_path):
            rows = self._conn.execute(
                "SELECT rowid, item_timestamp FROM calls WHERE name = 'call' AND item_timestamp > ?",
                (now_ms - self.window_ms,),
            ).fetchall()
        return [(int(r), int(t)) for r, t in rows]

    def close(self) -> None:
        try:
            self._bucket.close()
        except Exception:  # noqa: S110 - closing is best effort
            pass


_REDIS_WRITE_BLOCK = """
local current = redis.call('HGET', KEYS[1], 'until')
if ARGV[4] ~= '' then
  if current ~= ARGV[4] then return 0 end
elseif current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'until', ARGV[1], 'status', ARGV[2], 'set_at', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
local count = tonumber(ARGV[6])
if ARGV[5] ~= '' and count > 0 then
  local first, step, window = tonumber(ARGV[5]), tonumber(ARGV[7]), tonumber(ARGV[8])
  for i = 0, count - 1 do
    redis.call('ZADD', KEYS[2], math.floor(first - window + i * step) - 1, 'pace:' .. i)
  end
end
return 1
"""

#: The key's epoch: a value written once, with the budget. A Redis that lost it (restarted empty,
#: flushed, evicted) lost the calls it counted too; a host that knew the epoch then takes the whole
#: budget for one window, since the gateway may still count calls Redis forgot.
_REDIS_EPOCH = """
local current = redis.call('GET', KEYS[1])
if current then return {current, 0} end
redis.call('SET', KEYS[1], ARGV[1])
local count = tonumber(ARGV[4])
if ARGV[2] ~= '' and count > 0 then
  local first, step, window = tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[6])
  for i = 0, count - 1 do
    redis.call('ZADD', KEYS[2], math.floor(first - window + i * step) - 1, 'pace:' .. i)
  end
  return {ARGV[1], 1}
end
return {ARGV[1], 0}
"""

_REDIS_UNSTEP = """
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
local shift = tonumber(ARGV[2])
for i = 1, #later, 2 do
  local score = ARGV[1]
  if shift > 0 then score = tonumber(later[i + 1]) - shift end
  redis.call('ZADD', KEYS[1], score, later[i])
end
return #later / 2
"""


def _redis_put_script() -> str:
    """pyrate-limiter's atomic check-and-insert, counting every call since the window's start.

    Its script counts ``ZCOUNT key window_start now``: calls stamped later than ``now`` are left out.
    Processes stamp a call just before their script runs, so one whose script runs after a later-
    stamped call of another process would not see that call, and both could take the last slot
    (measured: 11 calls in one 1-second window of 10). The upper bound is lifted here, as the
    library's SQLite bucket already counts (``item_timestamp >= start``); the pacing entries,
    stamped ahead of now, count the same way.
    """
    from pyrate_limiter.buckets.redis_bucket import LuaScript

    bounded = "redis.call('ZCOUNT', bucket, window_start, now)"
    if bounded not in LuaScript.PUT_ITEM:  # pragma: no cover - a pyrate-limiter release changed its script
        raise RuntimeError("pyrate-limiter's Redis script changed; review budget._redis_put_script")
    return LuaScript.PUT_ITEM.replace(bounded, "redis.call('ZCOUNT', bucket, window_start, '+inf')")


class RedisStore(_BucketStore):
    """A sorted set per apiKey in Redis (pyrate-limiter's atomic Lua script), shared by every host.

    :param client: a ``redis.Redis`` client (the hook builds it with the Redis provider's ``RedisHook``).
    :param cache_dir: a host directory where the key's epoch and the number of hosts seen are kept,
        so that a Redis that restarted empty is recognised, and a host that falls back knows its share.
    :param host: this host's name for the count of hosts (:func:`host_id`).
    """

    def __init__(
        self,
        client: Any,
        api_key: str,
        limit: int,
        window: float,
        *,
        description: str,
        cache_dir: str | None = None,
        host: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(limit, window)
        from pyrate_limiter import RedisBucket

        self.client = client
        name = key_id(api_key)
        self.block_key = f"multimarkets:block:{name}"
        self.bucket_key = f"multimarkets:budget:{name}"
        self.epoch_key = f"multimarkets:epoch:{name}"
        self.hosts_key = f"multimarkets:hosts:{name}"
        self.description = description
        self.cache_path = os.path.join(cache_dir, f"{name}.redis.json") if cache_dir else None
        self.host = host or host_id(cache_dir)
        self._log = log
        self._hosts_at = 0.0
        self.hosts_seen: int | None = None
        self.restarts_seen = 0
        self.paced_after_restart = 0
        cache = self._read_cache()
        self.epoch: str | None = cache.get("epoch") if isinstance(cache.get("epoch"), str) else None
        if isinstance(cache.get("hosts"), int) and cache["hosts"] > 0:
            self.hosts_seen = cache["hosts"]
        with self._redis_errors():
            self.bucket = (
                RedisBucket(_rates(limit, window), client, self.bucket_key, client.script_load(_redis_put_script()))
                if limit > 0
                else None
            )
            self._write_block = client.register_script(_REDIS_WRITE_BLOCK)
            self._epoch_script = client.register_script(_REDIS_EPOCH)
            self._unstep_script = client.register_script(_REDIS_UNSTEP)
            client.ping()
            self._check_epoch(int(time.time() * 1000))
            self._note_host(time.time())

    # ---- the host cache: what a host remembers of Redis ---------------------------------------------

    def _read_cache(self) -> dict[str, Any]:
        if self.cache_path is None:
            return {}
        try:
            with open(self.cache_path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_cache(self) -> None:
        if self.cache_path is None:
            return
        cached = self._read_cache()  # another process of the host may have seen more hosts lately
        at = cached.get("at")
        if (
            isinstance(cached.get("hosts"), int)
            and isinstance(at, (int, float))
            and time.time() - at < HOSTS_SEEN_SECONDS
            and cached["hosts"] > (self.hosts_seen or 0)
        ):
            self.hosts_seen = cached["hosts"]
        try:
            write_atomic(
                self.cache_path, json.dumps({"epoch": self.epoch, "hosts": self.hosts_seen, "at": time.time()})
            )
        except OSError:
            pass  # a cache: without it, a restart of Redis is recognised by this process only

    def _check_epoch(self, now_ms: int) -> None:
        """Record the key's epoch; when Redis lost it, treat the budget as full for one window (one host does).

        The calls Redis forgot may all have been made just before it lost them, and the gateway still
        counts them: any call before one window has passed could be the one above the limit, and a
        call released while an earlier one's 429 is still on its way back would be a second call into
        a full window (a ban). So the whole budget is taken until one window after now; then calls go
        on at the budget's own rate, into a window the gateway has emptied.
        """
        epoch, paced = self._epoch_script(
            keys=[self.epoch_key, self.bucket_key],
            args=[
                uuid.uuid4().hex,
                self.epoch or "",
                now_ms + self.window_ms + 1,  # every pacing entry stamped now: all free one window from now
                self.limit if self.bucket is not None else 0,
                0,
                self.window_ms,
            ],
        )
        epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        if int(paced):
            self.paced_after_restart += 1
            if self._log is not None:
                self._log(
                    f"The shared call budget in Redis ({self.description}) lost its data (Redis restarted empty or "
                    "was flushed): the gateway may still count calls Redis forgot, so no call is let through for one "
                    f"window ({self.window_ms / 1000:g} s); then calls go on at the budget's rate ({self.limit} per window)."
                )
        if epoch != self.epoch:
            self.epoch = epoch
            self._write_cache()

    def _note_host(self, now: float) -> None:
        """Count this host among those using the key (for the share of a host that falls back)."""
        if now - self._hosts_at < 60.0:
            return
        self._hosts_at = now
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(self.hosts_key, {self.host: now})
        pipe.zremrangebyscore(self.hosts_key, 0, now - HOSTS_SEEN_SECONDS)
        pipe.zcard(self.hosts_key)
        pipe.expire(self.hosts_key, int(HOSTS_SEEN_SECONDS) * 2)
        hosts = int(pipe.execute()[2])
        if hosts != self.hosts_seen:
            self.hosts_seen = hosts
            self._write_cache()

    def _restarted(self, now_ms: int) -> None:
        """Redis lost its scripts (it restarted, or SCRIPT FLUSH): load them again, check its data."""
        self.restarts_seen += 1
        if self.bucket is not None:
            self.bucket.script_hash = self.client.script_load(_redis_put_script())  # type: ignore[attr-defined]
        self._check_epoch(now_ms)

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
                "server or connection; with the extra 'rate_limit_fallback' set to 'host', this host would go on "
                "with its share of the budget instead.",
                cause=type(exc).__name__,
            ) from None

    def _retry_on_restart(self, operation: Callable[[], Any], now_ms: int) -> Any:
        from redis.exceptions import NoScriptError

        with self._redis_errors():
            try:
                return operation()
            except NoScriptError:
                self._restarted(now_ms)
                return operation()

    def take(self, now_ms: int) -> int:
        def operation() -> int:
            self._note_host(now_ms / 1000)
            return super(RedisStore, self).take(now_ms)

        return int(self._retry_on_restart(operation, now_ms))

    def read_block(self) -> Block | None:
        with self._redis_errors():
            until, status, set_at = self.client.hmget(self.block_key, "until", "status", "set_at")
        if until is None:
            return None
        try:
            return Block.parse(until, status, set_at)
        except ValueError as exc:
            raise MultiMarketsBudgetError(
                f"The shared ban state in Redis ({self.description}, key {self.block_key}) is not one this provider "
                f"writes ({exc}). No call was sent. Delete it: redis-cli DEL {self.block_key} (it only records until "
                "when the gateway blocks the apiKey; a 429 or a 418 records it again).",
                cause="corrupt block",
            ) from None

    def write_block(self, block: Block, *, pace_from_ms: int | None = None, replace: Block | None = None) -> None:
        pace = pace_from_ms is not None and self.bucket is not None
        args = [
            repr(block.until),
            block.status,
            repr(block.set_at if block.set_at is not None else time.time()),
            repr(replace.until) if replace is not None else "",
            pace_from_ms if pace else "",
            self.limit if pace else 0,
            self.window_ms / max(self.limit, 1),
            self.window_ms,
        ]
        self._retry_on_restart(
            lambda: self._write_block(keys=[self.block_key, self.bucket_key], args=args),
            int(time.time() * 1000),
        )

    def unstep(self, now_ms: int, shift_ms: int | None = None) -> None:
        if self.bucket is None:
            return
        self._retry_on_restart(
            lambda: self._unstep_script(keys=[self.bucket_key], args=[now_ms, shift_ms or 0]), now_ms
        )

    def merge_calls(self, calls: list[tuple[int, int]]) -> None:
        """Count in Redis the calls a host made while it could not reach it (named by host and row:
        every process of the host merging the same rows adds them once)."""
        if self.bucket is None or not calls:
            return
        mapping = {f"fb:{self.host}:{rowid}": stamp for rowid, stamp in calls}
        self._retry_on_restart(lambda: self.client.zadd(self.bucket_key, mapping), int(time.time() * 1000))

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


class FallbackStore:
    """Redis while it answers; while it does not, this host's share of the key's budget.

    ``rate_limit_fallback: host``. Every operation, a call already waiting included, goes to Redis
    first; when Redis does not answer, to a host store whose limit is :func:`host_share` of the
    key's, so that hosts falling back together never exceed what the key allows. The block last
    read from Redis is copied to the host, every block met meanwhile is kept on the host, and once
    Redis answers again (tried every ``retry_seconds``) the host's block is written into Redis
    (the later end wins) and Redis is used again.

    :param connect: builds the :class:`RedisStore`; raises :class:`MultiMarketsBudgetError` while
        Redis is unreachable.
    :param fallback: builds the host store, given the share (calls per window) it may use.
    :param hosts: ``rate_limit_hosts``, else ``None`` (then the number of hosts Redis has seen).
    """

    def __init__(
        self,
        connect: Callable[[], RedisStore],
        fallback: Callable[[int], HostStore],
        *,
        limit: int,
        hosts: int | None = None,
        description: str,
        log: Callable[[str], None] | None = None,
        retry_seconds: float = REDIS_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._fallback_factory = fallback
        self._fallback: HostStore | None = None
        self.limit = limit
        self.hosts = hosts
        self._log = log
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._lock = threading.RLock()
        self.redis: RedisStore | None = None
        self._retry_at = 0.0
        self._last_redis_block: Block | None = None
        self._hosts_seen: int | None = None
        self.falls = 0
        self.share: int | None = None
        self.redis_description = description
        self.description = description
        self._try_redis()

    def _try_redis(self) -> bool:
        try:
            store = self._connect()
        except MultiMarketsBudgetError as exc:
            self._retry_at = self._clock() + self.retry_seconds
            if self.redis is None and self._fallback is None:
                self._fall_back(exc.cause or "unreachable")
            return False
        self._hosts_seen = store.hosts_seen
        if self._fallback is not None:  # Redis is back: the host's calls and ban state go into it
            try:
                block = self._fallback.read_block()
                calls = self._fallback.recent_calls(int(time.time() * 1000))
            except MultiMarketsBudgetError:
                block, calls = None, []
            try:
                store.merge_calls(calls)
                if block is not None and block.until > time.time():
                    store.write_block(block)
            except MultiMarketsBudgetError:
                self._retry_at = self._clock() + self.retry_seconds
                return False
            if self._log is not None:
                self._log(
                    f"The shared call budget in Redis ({self.redis_description}) answers again: calls are coordinated "
                    "there again" + (f" (the host's block until {utc_text(block.until)} merged)." if block else ".")
                )
        self.redis = store
        self.description = store.description
        return True

    def _fall_back(self, cause: str) -> HostStore:
        seen = [n for n in (self._hosts_seen, self.redis.hosts_seen if self.redis else None) if n]
        if self.redis is not None:
            cached = self.redis._read_cache().get("hosts")  # what every process of this host saw last
            if isinstance(cached, int) and cached > 0:
                seen.append(cached)
        hosts = self.hosts or (max(seen) if seen else None)
        self.share = host_share(self.limit, hosts)
        if self._fallback is None:
            self._fallback = self._fallback_factory(self.share)
        # The gateway's window may still be full of calls this host cannot see: the share starts one
        # window from now and is spent at its pace, so that hosts falling back together stay within it.
        self._fallback.start_paced(int(time.time() * 1000))
        if self._last_redis_block is not None and self._last_redis_block.until > time.time():
            self._fallback.write_block(self._last_redis_block)
        self.falls += 1
        self.redis = None
        self.description = f"{self._fallback.description}, this host's share while Redis is unreachable"
        if self._log is not None:
            how = (
                f"'rate_limit_hosts' {self.hosts}"
                if self.hosts
                else f"{hosts} host(s) seen using the key"
                if hosts
                else "the number of hosts is unknown: set the extra 'rate_limit_hosts'"
            )
            self._log(
                f"The shared call budget in Redis ({self.redis_description}) is unreachable ({cause}). Falling back "
                f"to this host's share of the budget (rate_limit_fallback: host): {self.share} of {self.limit} calls "
                f"per window ({how}), the first one window from now, until Redis answers again; blocks met meanwhile "
                "are kept on this host and merged into Redis then."
            )
        return self._fallback

    def _store(self) -> BudgetStore:
        if self.redis is None and self._clock() >= self._retry_at:
            self._try_redis()
        if self.redis is not None:
            return self.redis
        assert self._fallback is not None
        return self._fallback

    def _run(self, operation: Callable[[BudgetStore], Any]) -> Any:
        with self._lock:
            store = self._store()
            if store is self.redis:
                try:
                    return operation(store)
                except MultiMarketsBudgetError as exc:
                    if exc.cause in ("corrupt block",):
                        raise
                    self._retry_at = self._clock() + self.retry_seconds
                    store = self._fall_back(exc.cause or "unreachable")
            return operation(store)

    def take(self, now_ms: int) -> int:
        return int(self._run(lambda store: store.take(now_ms)))

    def read_block(self) -> Block | None:
        def operation(store: BudgetStore) -> Block | None:
            block = store.read_block()
            if store is self.redis:
                self._last_redis_block = block
            return block

        result: Block | None = self._run(operation)
        return result

    def write_block(self, block: Block, *, pace_from_ms: int | None = None, replace: Block | None = None) -> None:
        self._run(lambda store: store.write_block(block, pace_from_ms=pace_from_ms, replace=replace))

    def unstep(self, now_ms: int, shift_ms: int | None = None) -> None:
        self._run(lambda store: store.unstep(now_ms, shift_ms))

    def close(self) -> None:
        for store in (self.redis, self._fallback):
            if store is not None:
                store.close()


_warned_kubernetes = False


def kubernetes_warning(environ: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """Once per process: the warning that a host store shares nothing on the KubernetesExecutor
    (every task its own pod), when ``KUBERNETES_SERVICE_HOST`` says this runs in a pod."""
    global _warned_kubernetes
    env = os.environ if environ is None else environ
    if _warned_kubernetes or not env.get("KUBERNETES_SERVICE_HOST"):
        return None
    _warned_kubernetes = True
    return (
        "This process runs in a Kubernetes pod (KUBERNETES_SERVICE_HOST is set) and the apiKey's call budget is "
        "kept in a host store, which no other pod sees: with the KubernetesExecutor every task is its own pod, so "
        "the budget coordinates nothing and parallel tasks can get the key banned. Set the connection extra "
        "'rate_limit_redis_conn_id' to an Airflow Redis connection that every pod reaches."
    )


class CallBudget:
    """The call budget of one apiKey: ``acquire()`` before every call, ``record()`` after a failure.

    :param store: where the budget and the block live (``HostStore``, ``RedisStore``, ``FallbackStore``,
        ``ProcessStore``).
    :param max_wait: the longest one call may wait, for budget or for a block. A longer wait fails
        at once, naming when to call again: ``MultiMarketsBannedError`` / ``MultiMarketsRateLimitError``
        for a block the gateway set (418 / 429), :class:`MultiMarketsBudgetWaitError` when the
        budget itself has no free call. Each carries ``call_sent = False``.
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

    def _current_block(self, now: float) -> Block | None:
        block = self.store.read_block()
        if block is None:
            return None
        moved = block.stepped_back(now)
        if moved is not None:  # the clock was stepped back since the block was set: move it (and the
            # budget's entries stamped after now) back by the same step, so the wait does not grow
            assert block.set_at is not None
            self.store.unstep(int(now * 1000), int((block.set_at - now) * 1000))
            self.store.write_block(moved, replace=block)
            return moved
        return block

    def _step(self, waited: float) -> float:
        """One look at the store: 0.0 when a slot was taken, else the seconds to wait; raises past max_wait."""
        now = self._clock()
        block = self._current_block(now)
        if block is not None and block.until > now:
            wait = block.until - now + random.uniform(0.01, 0.1)
            if waited + wait > self.max_wait:
                raise self.blocked_error(block, now, waited)
            return wait
        now_ms = int(now * 1000)
        wait_ms = self.store.take(now_ms)
        if wait_ms > (self.window + CLOCK_TOLERANCE_SECONDS) * 1000:
            # only calls stamped after now make a wait longer than the window: the clock was stepped back
            self.store.unstep(now_ms)
            wait_ms = self.store.take(now_ms)
        if wait_ms <= 0:
            return 0.0
        wait = wait_ms / 1000 + random.uniform(0.005, 0.05)
        if waited + wait > self.max_wait:
            raise MultiMarketsBudgetWaitError(
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
        """After a failed call: a 429, a 418 or a "too frequent" envelope blocks the key for everyone.

        A 429 blocks the key for the gateway's whole window (its Retry-After is only the time until
        one slot frees, and the window is still full), a 418 for its Retry-After or ``ban_seconds``.
        Either way the budget is filled so that, when the block ends, waiting processes are let
        through at the budget's pace, one at a time, never together.
        """
        now = self._clock()
        raw = getattr(exc, "retry_after", None)
        retry_after = float(raw) if isinstance(raw, (int, float)) and math.isfinite(raw) and raw > 0 else None
        if retry_after is not None:
            retry_after = min(retry_after, MAX_BLOCK_SECONDS)
        if isinstance(exc, MultiMarketsBannedError):
            block = Block(now + (retry_after or self.ban_seconds), 418, set_at=now)
        elif (isinstance(exc, MultiMarketsRateLimitError) and exc.http_status == 429) or (
            isinstance(exc, MultiMarketsApiError) and exc.code == TOO_FREQUENT_CODE
        ):
            block = Block(now + max(retry_after or 0.0, self.window), 429, set_at=now)
        else:
            return None
        self.store.write_block(block, pace_from_ms=int(block.until * 1000))
        return block

    def blocked_error(self, block: Block, now: float, waited: float) -> MultiMarketsError:
        left = block.until - now
        when = utc_text(block.until)
        error: MultiMarketsError
        if block.status == 418:
            error = MultiMarketsBannedError(
                f"The apiKey is banned by the MultiMarkets gateway (HTTP 418) until about {when} ({left:.0f} s "
                f"from now), longer than this call may wait ({self.max_wait:g} s, extra 'rate_limit_max_wait'). "
                "No call was sent: calling into a ban prolongs it. Airflow's task retries take over; give the "
                "task a retry_delay past the ban's end.",
                retry_after=left,
                ban_ends_at=block.until,
            )
        else:
            error = MultiMarketsRateLimitError(
                f"The apiKey is rate-limited by the MultiMarkets gateway (HTTP 429) until about {when} ({left:.0f} s "
                f"from now), longer than this call may wait ({self.max_wait:g} s, extra 'rate_limit_max_wait'; "
                f"already waited {waited:.1f} s). No call was sent. Call again after {when}.",
                retry_after=left,
            )
        error.call_sent = False  # the shared breaker refused to send this call
        return error

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
    "FallbackStore",
    "HostStore",
    "ProcessStore",
    "RedisStore",
    "default_budget_dir",
    "host_id",
    "host_share",
    "key_id",
    "kubernetes_warning",
]
