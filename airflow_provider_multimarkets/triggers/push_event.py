"""``MultiMarketsPushEventTrigger``: a DAG run per matching push, with Airflow 3's ``AssetWatcher``.

Event-driven scheduling (``Asset(..., watchers=[AssetWatcher(name, trigger)])``) needs Airflow
3.0 or later (``BaseEventTrigger`` and ``AssetWatcher`` arrived in 3.0.0). On Airflow 2 this
module imports, and building the trigger raises a :class:`MultiMarketsConfigError` that says so.

The trigger is long-lived. It fetches its own msg token with the hook's signed call
(:meth:`~airflow_provider_multimarkets.hooks.multimarkets.MultiMarketsHook.aget_msg_token`: the
shared call budget of the apiKey, off the event loop) and listens with the one message-socket
client (:class:`~airflow_provider_multimarkets.messaging.client.MultiMarketsMsgClient`: its
frame kinds, reconnect rules and push log). A refused or expired token is replaced by a new one.
It never gives up on its own: a missing connection, an outage, a token file it cannot read or a
state directory it cannot write are logged as one clear line each time, and it tries again,
backing off up to 5 minutes.

**Airflow 3.3+: one stream per connection and trade types, its state in Airflow.** Watchers of
the same connection and trade types return the same :meth:`shared_stream_key`: the triggerer
runs one poll for them (one login, one socket, one token) and each applies its own filter
(:meth:`filter_shared_stream`). The poll is :class:`PushStreamProducer` in **ack mode**: a push
some watcher's filter matches is written to the stream's state in the asset state store before
it is handed out, and counts as done only once Airflow stored the events derived from it. The
state (:mod:`~airflow_provider_multimarkets.messaging.stream_state`: the token, encrypted with
Airflow's Fernet key; the pushes not yet confirmed; digests of those confirmed; the holder's
lease) is kept in the state store of every watched asset, so a watcher moved to any triggerer
on any host resumes the same stream with the same token, receives what the platform queued
meanwhile, and hands out again only the pushes whose events were not confirmed stored. The
journal files in ``state_dir`` are then a local cache.

**Airflow 3.0-3.2: at-least-once from ``state_dir``.** Every push is written to the trigger's
journal (a push log) and flushed before its event is yielded. A triggerer can die between the
yield and the moment Airflow stores the event, so a trigger that starts again first yields again
the journal's pushes of the last ``replay_seconds`` (marked ``"replayed": true``). The token is
kept beside the journal (mode 0600) so that a restarted trigger resumes the same message stream
and receives what the platform queued for it meanwhile. Either way duplicates are possible and
carry the same ``identity``
(:func:`~airflow_provider_multimarkets.messaging.identity.event_identity`): de-duplicate on it downstream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Hashable, Sequence
from typing import Any

from airflow_provider_multimarkets.exceptions import (
    MultiMarketsConfigError,
    MultiMarketsError,
    MultiMarketsMsgError,
)
from airflow_provider_multimarkets.messaging.push_filter import DEFAULT_MAX_EVENT_BYTES, PushEventFilter

try:
    from airflow.triggers.base import BaseEventTrigger, TriggerEvent

    EVENT_SCHEDULING = True
except ImportError:  # Airflow 2.x: no event-driven scheduling
    from airflow.triggers.base import BaseTrigger as BaseEventTrigger  # type: ignore[assignment]
    from airflow.triggers.base import TriggerEvent

    EVENT_SCHEDULING = False

try:  # Airflow 3.3+: shared streams in ack mode
    from airflow.triggers.shared_stream import SharedStreamProducer

    SHARED_STREAMS = True
except ImportError:
    SharedStreamProducer = object  # type: ignore[assignment,misc]
    SHARED_STREAMS = False

CLASSPATH = "airflow_provider_multimarkets.triggers.push_event.MultiMarketsPushEventTrigger"
#: a token refused again within this many seconds of being fetched counts as the same failure
TOKEN_REFUSAL_WINDOW = 60.0
MAX_TOKEN_REFUSALS = 3
MAX_OUTAGE_BACKOFF = 300.0
#: the key of a watcher's stream document in the asset state store (with the stream's key appended)
STATE_KEY_PREFIX = "multimarkets.stream."
#: every watched asset gets a copy of the stream's state at least this often (the first watcher's each write)
MIRROR_SECONDS = 60.0


async def _sleep(seconds: float) -> None:
    """The watcher's back-off waits (one name, so tests can record them instead of waiting)."""
    await asyncio.sleep(seconds)


def _token_refused(log: Any, what: str, refusals: int, fetched_at: float | None, message: str) -> int:
    """A msg token refused by the WebSocket: the count of refusals in a row (each within
    ``TOKEN_REFUSAL_WINDOW`` of fetching its token), logged; above ``MAX_TOKEN_REFUSALS`` a clear error."""
    recent = fetched_at is not None and time.monotonic() - fetched_at < TOKEN_REFUSAL_WINDOW
    refusals = refusals + 1 if recent else 1
    if refusals > MAX_TOKEN_REFUSALS:
        raise MultiMarketsMsgError(
            f"The message WebSocket refused {refusals} msg tokens in a row, each within "
            f"{TOKEN_REFUSAL_WINDOW:g} s of fetching it: {message} Check the connection's app_id and "
            "the apiKey's permissions."
        )
    log.warning(
        "MultiMarkets push %s: the message WebSocket refused its msg token; fetching a new one "
        "(refusal %d in a row). Detail: %s",
        what,
        refusals,
        message,
    )
    return refusals


class MultiMarketsPushEventTrigger(BaseEventTrigger):
    """One ``TriggerEvent`` per matching push, for ``AssetWatcher`` (Airflow 3.0+).

    :param multimarkets_conn_id: the connection (keys for the token, ``msg_ws_url``/``app_id``).
    :param trade_types: ``tradeTypes`` to subscribe, e.g. ``"2"`` (isolated margin) or ``"1,2"``.
    :param msg_codes: push kinds that make events (``["trade"]``); ``None``: every push.
    :param biz_types: ``content.bizType`` values, e.g. ``["POSITION_OPEN", "POSITION_CLOSE",
        "POSITION_OPEN_FAIL"]``; ``None``: all.
    :param final_only: only pushes after which the order no longer changes (default ``True``).
    :param symbol_ids: only these ``paramMap.symbolId`` values; ``account_ids``: these accounts.
    :param state_dir: where the journal (and on Airflow 3.0-3.2 the token) is kept; default
        ``$MULTIMARKETS_PUSH_DIR/events`` (``$AIRFLOW_HOME/multimarkets-pushes/events``). On 3.0-3.2
        put it on a volume every triggerer host mounts if you run several triggerers; on 3.3+ the
        journal is a cache and the state lives in Airflow.
    :param replay_seconds: (3.0-3.2) after a restart, pushes of the journal this recent are yielded again.
    :param replay_max: (3.0-3.2) at most this many pushes are yielded again.
    :param max_event_bytes: a push's content larger than this is left out of its event.
    :param journal_max_bytes: the journal is cut to its last ``journal_keep`` pushes beyond this size.
    :param journal_keep: pushes kept when the journal is cut (and recognised as duplicates).
    :param cycle_pushes: the socket is re-opened (same token) after this many pushes, to cut the journal.
    :param ping_interval: seconds between application pings.
    :param max_reconnects: reconnects in a row without a push before an outage is reported;
        the trigger then waits (backing off up to 5 minutes) and starts again: it never gives up.
    :param reconnect_backoff: first reconnect delay in seconds.
    :param shared_stream: (3.3+) share one stream with the other watchers of the connection and
        trade types, its state in the asset state store, in ack mode (default). ``False``: this
        watcher runs alone, as on 3.0-3.2.
    :param lease_seconds: (3.3+) a triggerer that finds the stream renewed by another within this
        long waits (at most this long) to tell a live holder from a dead one.
    :param cohort_wait: (3.3+) a stream that starts again waits at most this long for the watchers
        it served before it hands anything out.
    :param dedupe_seconds: (3.3+) pushes whose events were stored are recognised this long (at most
        1,000 of them) when the platform sends them again.
    """

    def __init__(
        self,
        *,
        multimarkets_conn_id: str = "multimarkets_default",
        trade_types: str = "2",
        msg_codes: list[str] | str | None = ("trade",),  # type: ignore[assignment]
        biz_types: list[str] | str | None = None,
        final_only: bool = True,
        symbol_ids: list[Any] | str | int | None = None,
        account_ids: list[Any] | str | int | None = None,
        state_dir: str | None = None,
        replay_seconds: float = 30.0,
        replay_max: int = 1000,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        journal_max_bytes: int = 64 * 1024 * 1024,
        journal_keep: int = 10_000,
        cycle_pushes: int = 50_000,
        ping_interval: float = 15.0,
        max_reconnects: int = 5,
        reconnect_backoff: float = 1.0,
        shared_stream: bool = True,
        lease_seconds: float = 20.0,
        cohort_wait: float = 30.0,
        dedupe_seconds: float = 600.0,
    ) -> None:
        if not EVENT_SCHEDULING:
            from airflow_provider_multimarkets._compat import airflow_version

            raise MultiMarketsConfigError(
                "MultiMarketsPushEventTrigger is for event-driven scheduling (AssetWatcher), which needs "
                f"Airflow 3.0 or later; this is Airflow {airflow_version()}. On Airflow 2, schedule "
                "MultiMarketsMsgSubscribeOperator instead."
            )
        super().__init__()
        self.multimarkets_conn_id = multimarkets_conn_id
        self.trade_types = str(trade_types)
        self.filter = PushEventFilter.of(
            msg_codes=msg_codes,
            biz_types=biz_types,
            final_only=final_only,
            symbol_ids=symbol_ids,
            account_ids=account_ids,
        )
        self.state_dir = state_dir
        self.replay_seconds = float(replay_seconds)
        self.replay_max = int(replay_max)
        self.max_event_bytes = int(max_event_bytes)
        self.journal_max_bytes = int(journal_max_bytes)
        self.journal_keep = int(journal_keep)
        self.cycle_pushes = int(cycle_pushes)
        self.ping_interval = float(ping_interval)
        self.max_reconnects = int(max_reconnects)
        self.reconnect_backoff = float(reconnect_backoff)
        self.shared_stream = bool(shared_stream)
        self.lease_seconds = float(lease_seconds)
        self.cohort_wait = float(cohort_wait)
        self.dedupe_seconds = float(dedupe_seconds)
        for name in ("replay_max", "max_event_bytes", "journal_max_bytes", "journal_keep", "cycle_pushes"):
            if getattr(self, name) <= 0:
                raise MultiMarketsConfigError(f"MultiMarketsPushEventTrigger: {name} must be positive.")
        for name in ("lease_seconds", "cohort_wait", "dedupe_seconds"):
            if not 0 <= getattr(self, name) <= 86400:
                raise MultiMarketsConfigError(f"MultiMarketsPushEventTrigger: {name} must be 0 to 86400 seconds.")
        self._client: Any = None
        self.tokens_fetched = 0
        self.events_yielded = 0

    def __repr__(self) -> str:  # never the token
        return (
            f"<MultiMarketsPushEventTrigger conn_id={self.multimarkets_conn_id!r} trade_types={self.trade_types!r}"
            f"filter={self.filter.as_json()!r}>"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "multimarkets_conn_id": self.multimarkets_conn_id,
                "trade_types": self.trade_types,
                **self.filter.as_json(),
                "state_dir": self.state_dir,
                "replay_seconds": self.replay_seconds,
                "replay_max": self.replay_max,
                "max_event_bytes": self.max_event_bytes,
                "journal_max_bytes": self.journal_max_bytes,
                "journal_keep": self.journal_keep,
                "cycle_pushes": self.cycle_pushes,
                "ping_interval": self.ping_interval,
                "max_reconnects": self.max_reconnects,
                "reconnect_backoff": self.reconnect_backoff,
                "shared_stream": self.shared_stream,
                "lease_seconds": self.lease_seconds,
                "cohort_wait": self.cohort_wait,
                "dedupe_seconds": self.dedupe_seconds,
            },
        )

    # ---- files ---------------------------------------------------------------------------------------

    def paths(self) -> tuple[str, str]:
        """This watcher's journal and token files (named after its connection, trade types and filter)."""
        from airflow_provider_multimarkets.messaging.push_filter import watcher_key

        key = watcher_key([self.multimarkets_conn_id, self.trade_types, self.filter.as_json()])
        base = os.path.join(_state_dir(self.state_dir), f"{key}")
        return f"{base}.jsonl", f"{base}.token"

    # ---- Airflow 3.3+: one shared stream, its state in the asset state store ------------------------

    def shared_stream_key(self) -> Hashable | None:
        """Watchers of one connection and trade types share one stream (3.3+, with an asset state store)."""
        if not (SHARED_STREAMS and self.shared_stream) or self.asset_state_store is None:
            return None
        return ("multimarkets-push", self.multimarkets_conn_id, self.trade_types)

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> Any:
        """Ack mode: the one poll of the stream (:class:`PushStreamProducer`)."""
        return PushStreamProducer(kwargs)

    def watcher_id(self) -> str:
        """This watcher within its stream: its filter and the assets it watches."""
        from airflow_provider_multimarkets.messaging.push_filter import watcher_key

        return watcher_key([self.filter.as_json(), _asset_names(self.asset_state_store)])

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        group = _group(stream_key(self.multimarkets_conn_id, self.trade_types))
        token = object()
        group.join(token, self.filter, _accessors(self.asset_state_store), self.watcher_id())
        try:
            async for frame, replayed in shared_stream:
                if self.filter.matches(frame):
                    yield self._event(frame, replayed=replayed)
        finally:
            group.leave(token)

    # ---- run (Airflow 3.0-3.2, or shared_stream=False) -----------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_multimarkets.messaging.push_filter import replay_tail
        from airflow_provider_multimarkets.storage.journal import compact_journal, read_lines

        journal, token_path = self.paths()
        if self.shared_stream:
            self.log.info(
                "MultiMarkets push watcher runs alone, at-least-once from its journal %s: %s",
                journal,
                _why_not_shared(getattr(self, "asset_state_store", None)),
            )
        await asyncio.to_thread(_compact_quietly, journal, self.journal_max_bytes, self.journal_keep, self.log)
        replay = await asyncio.to_thread(
            lambda: replay_tail(read_lines(journal), seconds=self.replay_seconds, max_pushes=self.replay_max)
        )
        matching = [frame for frame in replay if self.filter.matches(frame)]
        if matching:
            self.log.info(
                "MultiMarkets push watcher started again: yielding again %d push(es) of the last %g s of its "
                "journal (at-least-once; duplicates carry the same identity).",
                len(matching),
                self.replay_seconds,
            )
        for frame in matching:
            yield self._event(frame, replayed=True)

        token = await asyncio.to_thread(_read_token, token_path, self.log)
        fetched_at = None
        if token is None:
            token, fetched_at = await self._new_token(token_path), time.monotonic()
        refusals = 0
        outages = 0
        while True:
            started = time.monotonic()
            held = await asyncio.to_thread(lambda: sum(1 for _ in read_lines(journal)))
            outcome: dict[str, Any] = {}
            async for frame in self._listen(token, journal, held + self.cycle_pushes, outcome):
                outages = 0
                if self.filter.matches(frame):
                    yield self._event(frame)
            status, error_type = outcome.get("status"), outcome.get("error_type")
            if status == "success":  # a cycle is over: cut the journal, go on with the same token
                await asyncio.to_thread(
                    compact_journal, journal, max_bytes=self.journal_max_bytes, keep_lines=self.journal_keep
                )
                continue
            message = str(outcome.get("message", ""))
            if error_type == "MultiMarketsMsgAuthError":
                refusals = _token_refused(self.log, "watcher", refusals, fetched_at, message)
                token, fetched_at = await self._new_token(token_path), time.monotonic()
                continue
            outages += 1
            await _outage(self.log, outages, self.reconnect_backoff, message or str(error_type), started)

    async def _listen(
        self, token: str, journal: str, max_messages: int, outcome: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """The pushes of one client run, as the push log counts them; ``outcome`` gets its result."""
        spec = _spec(
            token,
            self.multimarkets_conn_id,
            self.trade_types,
            journal,
            max_messages,
            self.ping_interval,
            self.max_reconnects,
            self.reconnect_backoff,
        )
        async for batch in _client_pushes(spec, outcome, self.log, self):
            for frame in batch:
                yield frame

    async def _new_token(self, token_path: str) -> str:
        """A new msg token (signed call within the shared budget), saved for a restart; retried on
        every failure (a missing connection included: it may be created later), backing off up to
        5 minutes, one clear line per attempt. A token that cannot be saved is used all the same."""
        from airflow_provider_multimarkets.storage.journal import save_token

        token = await fetch_token(self.multimarkets_conn_id, self.log)
        try:
            await asyncio.to_thread(save_token, token_path, token)
        except OSError as exc:
            self.log.error(
                "MultiMarkets push watcher: cannot save its msg token in %s (%s: %s). Going on with it; a watcher "
                "started again will fetch a new one and miss the pushes queued for this one meanwhile. Make "
                "state_dir writable by the triggerer.",
                token_path,
                type(exc).__name__,
                exc.strerror or exc,
            )
        self.tokens_fetched += 1
        self.log.info("MultiMarkets push watcher: fetched a msg token (%d so far).", self.tokens_fetched)
        return token

    def _event(self, frame: dict[str, Any], *, replayed: bool = False) -> TriggerEvent:
        from airflow_provider_multimarkets.messaging.push_filter import event_payload

        self.events_yielded += 1
        return TriggerEvent(event_payload(frame, replayed=replayed, max_bytes=self.max_event_bytes))

    async def cleanup(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()


# ---- what the standalone run and the shared stream have in common --------------------------------------


def _state_dir(state_dir: str | None) -> str:
    from airflow_provider_multimarkets.storage.paths import default_push_dir

    return state_dir or os.path.join(default_push_dir(), "events")


def _why_not_shared(asset_state_store: Any) -> str:
    """Why a watcher with ``shared_stream=True`` runs alone (the log line of :meth:`MultiMarketsPushEventTrigger.run`)."""
    from airflow_provider_multimarkets._compat import airflow_version

    if not SHARED_STREAMS:
        return (
            f"shared streams in ack mode and the asset state store need Airflow 3.3+, this is Airflow "
            f"{airflow_version()}; pushes of the last replay_seconds are yielded again after a restart, and the "
            "token is kept beside the journal."
        )
    if asset_state_store is None:
        return "the triggerer gave it no asset state store (it is not run by an AssetWatcher)."
    return "the triggerer runs it on its own."  # pragma: no cover - Airflow decides when to share


def _compact_quietly(journal: str, max_bytes: int, keep: int, log: Any) -> None:
    from airflow_provider_multimarkets.storage.journal import compact_journal

    try:
        compact_journal(journal, max_bytes=max_bytes, keep_lines=keep)
    except OSError as exc:
        log.error("MultiMarkets push watcher: cannot compact its journal %s (%s); going on.", journal, exc)


def _read_token(path: str, log: Any) -> str | None:
    """The saved token; a file that is not one (not UTF-8, unreadable) is reported and replaced."""
    from airflow_provider_multimarkets.storage.journal import load_token

    try:
        return load_token(path)
    except ValueError as exc:
        log.error(
            "MultiMarkets push watcher: the saved msg token %s cannot be used (%s). Fetching a new one, which "
            "replaces the file; pushes queued for the old token meanwhile are not received.",
            path,
            exc,
        )
        return None


async def _outage(log: Any, outages: int, base: float, message: str, started: float) -> None:
    from airflow_provider_multimarkets.api.retry import backoff_delay

    delay = backoff_delay(outages - 1, max(base, 1.0), MAX_OUTAGE_BACKOFF)
    log.error(
        "MultiMarkets push watcher: %s (after %.0f s). Starting again in %.0f s; pushes the platform "
        "queues for the msg token meanwhile are received then.",
        message,
        time.monotonic() - started,
        delay,
    )
    await _sleep(delay)


async def fetch_token(conn_id: str, log: Any) -> str:
    """A new msg token with the hook's signed call; every failure (a missing or malformed connection
    too) is one clear line and a retry, backing off up to 5 minutes: a watcher never gives up."""
    from airflow_provider_multimarkets.api.retry import backoff_delay
    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

    attempt = 0
    while True:
        hook = MultiMarketsHook(conn_id)
        try:
            return await hook.aget_msg_token()
        except MultiMarketsError as exc:
            delay = backoff_delay(attempt, 5.0, MAX_OUTAGE_BACKOFF)
            attempt += 1
            log.error(
                "MultiMarkets push watcher: could not fetch a msg token (attempt %d): %s Trying again in %.0f s.",
                attempt,
                exc,
                delay,
            )
            await _sleep(delay)
        finally:
            await asyncio.to_thread(hook.close)


def _spec(
    token: str,
    conn_id: str,
    trade_types: str,
    journal: str,
    max_messages: int,
    ping_interval: float,
    max_reconnects: int,
    reconnect_backoff: float,
) -> Any:
    from airflow_provider_multimarkets.messaging.client import SubscriptionSpec

    return SubscriptionSpec(
        token=token,
        multimarkets_conn_id=conn_id,
        trade_types=trade_types,
        output_path=journal,
        max_messages=max_messages,
        ping_interval=ping_interval,
        max_reconnects=max_reconnects,
        reconnect_backoff=reconnect_backoff,
    )


async def _client_pushes(
    spec: Any, outcome: dict[str, Any], log: Any, holder: Any
) -> AsyncIterator[list[dict[str, Any]]]:
    """The pushes of one client run, in the batches they arrived in (as the push log counts them);
    ``outcome`` gets the run's result. ``holder._client`` is the live client (for cleanup)."""
    from airflow_provider_multimarkets.messaging.client import MultiMarketsMsgClient

    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    client = MultiMarketsMsgClient(spec, on_push=queue.put_nowait, log=log)
    holder._client = client
    run = asyncio.ensure_future(client.subscribe())
    try:
        while True:
            if not queue.empty():
                batch = []
                while not queue.empty():
                    batch.append(queue.get_nowait())
                yield batch
                continue
            if run.done():
                break
            getter = asyncio.ensure_future(queue.get())
            try:
                await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()
                    await asyncio.gather(getter, return_exceptions=True)
            if not getter.cancelled():
                batch = [getter.result()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                yield batch
        outcome.update(run.result())
    finally:
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        holder._client = None
        await client.close()


# ---- Airflow 3.3+: the shared stream -------------------------------------------------------------------


def stream_key(conn_id: str, trade_types: str) -> str:
    """The name of one stream (a connection and its trade types) in files and in the state store."""
    from airflow_provider_multimarkets.messaging.push_filter import watcher_key

    return watcher_key(["stream", conn_id, str(trade_types)])


def _accessors(store: Any) -> list[Any]:
    """The per-asset accessors of a trigger's injected asset state store (one per watched asset)."""
    if store is None:
        return []
    found = [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
    return found or ([store] if hasattr(store, "aset") else [])


def _asset_names(store: Any) -> list[str]:
    return sorted([*getattr(store, "_by_name", {}), *getattr(store, "_by_uri", {})]) if store is not None else []


class _Watcher:
    __slots__ = ("accessors", "filter", "watcher_id")

    def __init__(self, push_filter: PushEventFilter, accessors: list[Any], watcher_id: str) -> None:
        self.filter = push_filter
        self.accessors = accessors
        self.watcher_id = watcher_id


class _Group:
    """The watchers of one stream in this triggerer: their filters and their assets' state stores."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.watchers: dict[object, _Watcher] = {}
        self.changed = asyncio.Event()

    def join(self, token: object, push_filter: PushEventFilter, accessors: list[Any], watcher_id: str) -> None:
        self.watchers[token] = _Watcher(push_filter, accessors, watcher_id)
        self.changed.set()

    def leave(self, token: object) -> None:
        self.watchers.pop(token, None)
        self.changed.set()

    def matches(self, frame: dict[str, Any]) -> bool:
        return any(w.filter.matches(frame) for w in self.watchers.values())

    def accessors(self) -> list[Any]:
        return [a for w in self.watchers.values() for a in w.accessors]

    def primary(self) -> list[Any]:
        """The assets of the stream's first watcher (by watcher id): where every write goes."""
        if not self.watchers:
            return []
        return min(self.watchers.values(), key=lambda w: w.watcher_id).accessors[:1]

    def watcher_ids(self) -> set[str]:
        return {w.watcher_id for w in self.watchers.values()}

    async def wait_change(self, timeout: float) -> None:
        self.changed.clear()
        try:
            await asyncio.wait_for(self.changed.wait(), timeout=max(timeout, 0.0))
        except asyncio.TimeoutError:
            pass


_GROUPS: dict[str, _Group] = {}


def _group(key: str) -> _Group:
    """The watchers of stream ``key`` in this process (the triggerer's one event loop)."""
    group = _GROUPS.get(key)
    if group is None or group.loop is not asyncio.get_running_loop():
        group = _GROUPS[key] = _Group()
    return group


def _protect(token: str) -> str:
    """The token as stored: encrypted with Airflow's Fernet key (``[core] fernet_key``) when one is set."""
    try:
        from airflow.models.crypto import get_fernet

        fernet = get_fernet()
        if getattr(fernet, "is_encrypted", False):
            return "fernet:" + fernet.encrypt(token.encode()).decode()
    except Exception:  # noqa: S110 - no usable key: stored as Airflow stores connections without one
        pass
    return "plain:" + token


def _unprotect(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    kind, _, value = text.partition(":")
    if kind == "plain":
        return value or None
    if kind == "fernet":
        try:
            from airflow.models.crypto import get_fernet

            return get_fernet().decrypt(value.encode()).decode()
        except Exception:
            return None
    return None


class PushStreamProducer(SharedStreamProducer):  # type: ignore[misc]
    """The one poll of a shared push stream, in ack mode (Airflow 3.3+).

    It resumes the stream its watchers' assets record (or fetches a token for a new one), hands out
    first the pushes that were not confirmed stored, then every new push some watcher's filter
    matches, each written to the stream's state before it is handed out; :meth:`advance` moves a
    push from pending to acked once Airflow stored the events derived from it. The state is written
    to the asset state store of every watcher of the stream, with the holder's lease renewed every
    ``lease_seconds / 4``.
    """

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.conn_id = str(kwargs.get("multimarkets_conn_id") or "multimarkets_default")
        self.trade_types = str(kwargs.get("trade_types") or "2")
        self.key = stream_key(self.conn_id, self.trade_types)
        self.state_key = STATE_KEY_PREFIX + self.key
        self.state_dir = kwargs.get("state_dir")
        self.ping_interval = float(kwargs.get("ping_interval") or 15.0)
        self.max_reconnects = int(kwargs.get("max_reconnects") or 5)
        self.reconnect_backoff = float(kwargs.get("reconnect_backoff") or 1.0)
        self.cycle_pushes = int(kwargs.get("cycle_pushes") or 50_000)
        self.journal_max_bytes = int(kwargs.get("journal_max_bytes") or 64 * 1024 * 1024)
        self.journal_keep = int(kwargs.get("journal_keep") or 10_000)
        self.lease = float(kwargs.get("lease_seconds", 20.0))
        self.cohort_wait = float(kwargs.get("cohort_wait", 30.0))
        self.dedupe_seconds = float(kwargs.get("dedupe_seconds", 600.0))
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.log = logging.getLogger("airflow_provider_multimarkets.triggers.push_event.stream")
        self.group = _group(self.key)
        self.state: Any = None
        self._client: Any = None
        self._renewer: asyncio.Task[None] | None = None
        self._write_lock: asyncio.Lock | None = None
        self._write_errors = 0
        self._last_accessors: list[Any] = []
        self._mirrored_at = 0.0
        self.replayed = 0
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return f"<PushStreamProducer conn_id={self.conn_id!r} trade_types={self.trade_types!r} holder={self.holder!r}>"

    # ---- the state in the asset state store ---------------------------------------------------------

    async def _read_docs(self, accessors: Sequence[Any]) -> list[Any]:
        async def read(accessor: Any) -> Any:
            try:
                return await accessor.aget(self.state_key)
            except Exception as exc:
                self.log.error("MultiMarkets push stream: cannot read its state from %r (%s).", accessor, exc)
                return None

        return list(await asyncio.gather(*(read(a) for a in accessors)))

    async def write(self, *, everywhere: bool = False) -> None:
        """Write the stream's state (and renew the lease): to the state store of the stream's first
        watcher's asset each time (one call of the triggerer to the API server), and to every watched
        asset when ``everywhere`` (a new or resumed stream, a new token) and at least every
        ``MIRROR_SECONDS``, so that any of them holds a copy when the watchers move."""
        state = self.state
        if state is None:
            return
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        async with self._write_lock:
            state.renewed_at = time.time()
            state.version += 1
            state.watchers = self.group.watcher_ids() or state.watchers
            doc = state.to_json(_protect(state.token))
            if everywhere or time.monotonic() - self._mirrored_at >= MIRROR_SECONDS:
                accessors = self.group.accessors() or self._last_accessors
                self._last_accessors = accessors
                self._mirrored_at = time.monotonic()
            else:
                accessors = self.group.primary() or self._last_accessors[:1]
            results = await asyncio.gather(*(a.aset(self.state_key, doc) for a in accessors), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                self._write_errors += 1
                if self._write_errors in (1, 10, 100) or self._write_errors % 1000 == 0:
                    self.log.error(
                        "MultiMarkets push stream: cannot write its state to the asset state store (%d of %d "
                        "assets; %s). Going on: the local journal still holds every push; a triggerer that takes "
                        "the stream over may hand out again pushes already stored.",
                        len(failed),
                        len(accessors),
                        failed[0],
                    )

    async def _renew_lease(self) -> None:
        while True:
            await asyncio.sleep(max(self.lease / 3, 1.0))
            await self.write()

    # ---- which stream -------------------------------------------------------------------------------

    async def _wait_for_watchers(self) -> list[Any]:
        """Wait (bounded) for the first watcher, then for every watcher the stream served before."""
        from airflow_provider_multimarkets.messaging.stream_state import newest

        deadline = time.monotonic() + self.cohort_wait
        while not self.group.watchers and time.monotonic() < deadline:
            await self.group.wait_change(deadline - time.monotonic())
        docs = newest(await self._read_docs(self.group.accessors()))
        expected: set[str] = set()
        for doc in docs[:1]:
            expected |= {str(w) for w in doc.get("watchers") or ()}
        while not expected <= self.group.watcher_ids() and time.monotonic() < deadline:
            await self.group.wait_change(deadline - time.monotonic())
        missing = expected - self.group.watcher_ids()
        if missing:
            self.log.info(
                "MultiMarkets push stream: starting without %d watcher(s) it served before (not started within "
                "cohort_wait=%g s); they join later.",
                len(missing),
                self.cohort_wait,
            )
        if len(docs) and expected:
            docs = newest(await self._read_docs(self.group.accessors()))
        return docs

    async def _take_over(self, docs: list[Any]) -> Any:
        """The stream recorded by the watchers' assets, unless another live triggerer holds it."""
        from airflow_provider_multimarkets.messaging.identity import event_identity
        from airflow_provider_multimarkets.messaging.stream_state import StreamState, newest

        for doc in docs:
            token = _unprotect(doc.get("token"))
            if token is None:
                self.log.error(
                    "MultiMarkets push stream: the recorded stream %s has no token this triggerer can read (a "
                    "different [core] fernet_key?); fetching a new one.",
                    doc.get("sid"),
                )
                continue
            try:
                state = StreamState.from_json(doc, token, event_identity)
            except ValueError as exc:
                self.log.error("MultiMarkets push stream: ignoring its recorded state (%s).", exc)
                continue
            if state.lease_live(time.time(), self.lease):
                renewed = state.renewed_at
                deadline = time.monotonic() + self.lease
                while time.monotonic() < deadline:  # a dead holder stops renewing; a live one renews
                    await asyncio.sleep(min(2.0, max(self.lease / 8, 0.1)))
                    # the holder renews in the first watcher's asset (the same watchers: the same first one)
                    fresh = [
                        d
                        for d in newest(await self._read_docs(self.group.primary() or self.group.accessors()))
                        if d.get("sid") == state.sid
                    ]
                    if fresh and float(fresh[0].get("renewed_at") or 0) > renewed:
                        break
                else:
                    renewed = -1.0
                if renewed >= 0:
                    self.log.warning(
                        "MultiMarkets push stream: stream %s is held by another live triggerer (%s); this "
                        "triggerer's watchers open a stream of their own (its own token), so the two do not take "
                        "each other's session.",
                        state.sid,
                        state.holder,
                    )
                    continue
            previous = state.holder
            state.holder = self.holder
            state.released = False
            state.dedupe_seconds = self.dedupe_seconds
            self.log.info(
                "MultiMarkets push stream: resuming stream %s (same token; held before by %s): %d push(es) not "
                "confirmed stored are handed out again, %d confirmed ones are recognised if sent again.",
                state.sid,
                previous or "nobody",
                len(state.pending),
                len(state.acked),
            )
            return state
        return None

    async def _new_stream(self) -> Any:
        from airflow_provider_multimarkets.messaging.stream_state import StreamState, new_stream_id

        token = await fetch_token(self.conn_id, self.log)
        self.tokens_fetched += 1
        state = StreamState(
            sid=new_stream_id(),
            token=token,
            fetched_at=time.time(),
            holder=self.holder,
            dedupe_seconds=self.dedupe_seconds,
        )
        self.log.info("MultiMarkets push stream: new stream %s with a new msg token.", state.sid)
        return state

    def _journal(self) -> str:
        directory = _state_dir(self.state_dir)
        try:
            os.makedirs(directory, exist_ok=True)
            if not os.access(directory, os.W_OK):
                raise PermissionError(f"{directory} is not writable")
        except OSError as exc:
            fallback = os.path.join(tempfile.gettempdir(), f"multimarkets-events-{os.getuid()}")
            os.makedirs(fallback, exist_ok=True)
            self.log.error(
                "MultiMarkets push stream: state_dir %s cannot be written (%s); keeping the journal cache in %s "
                "instead. On Airflow 3.3 the stream's state is in the asset state store, so nothing is lost; make "
                "state_dir writable by the triggerer.",
                directory,
                exc,
                fallback,
            )
            directory = fallback
        return os.path.join(directory, f"{self.key}.{self.state.sid}.jsonl")

    # ---- the stream -----------------------------------------------------------------------------------

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:  # type: ignore[override]
        from airflow_provider_multimarkets.messaging.identity import event_identity
        from airflow_provider_multimarkets.storage.journal import compact_journal, read_lines

        docs = await self._wait_for_watchers()
        self.state = await self._take_over(docs) or await self._new_stream()
        state = self.state
        await self.write(everywhere=True)
        self._renewer = asyncio.create_task(self._renew_lease(), name=f"multimarkets-stream-lease[{state.sid}]")
        for identity, frame in list(state.pending.items()):  # received, not confirmed stored: handed out again
            self.replayed += 1
            yield (frame, True), (identity, frame.get("timestamp"))
        journal = self._journal()
        refusals, outages, fetched_at = 0, 0, time.monotonic()
        while True:
            started = time.monotonic()
            await asyncio.to_thread(_compact_quietly, journal, self.journal_max_bytes, self.journal_keep, self.log)
            held = await asyncio.to_thread(lambda: sum(1 for _ in read_lines(journal)))
            outcome: dict[str, Any] = {}
            spec = _spec(
                state.token,
                self.conn_id,
                self.trade_types,
                journal,
                held + self.cycle_pushes,
                self.ping_interval,
                self.max_reconnects,
                self.reconnect_backoff,
            )
            async for batch in _client_pushes(spec, outcome, self.log, self):
                outages = 0
                fresh = []
                for frame in batch:
                    identity = event_identity(frame)
                    if state.known(identity) or not self.group.matches(frame):
                        continue  # sent again after a reconnect, or no watcher wants it
                    state.add_pending(identity, frame)
                    fresh.append((frame, identity))
                if not fresh:
                    continue
                await self.write()  # what is handed out is in the state store first
                for frame, identity in fresh:
                    yield (frame, False), (identity, frame.get("timestamp"))
            status, error_type = outcome.get("status"), outcome.get("error_type")
            if status == "success":
                await asyncio.to_thread(
                    compact_journal, journal, max_bytes=self.journal_max_bytes, keep_lines=self.journal_keep
                )
                continue
            message = str(outcome.get("message", ""))
            if error_type == "MultiMarketsMsgAuthError":
                refusals = _token_refused(self.log, "stream", refusals, fetched_at, message)
                state.token, state.fetched_at = await fetch_token(self.conn_id, self.log), time.time()
                self.tokens_fetched += 1
                fetched_at = time.monotonic()
                await self.write(everywhere=True)
                continue
            outages += 1
            await _outage(self.log, outages, self.reconnect_backoff, message or str(error_type), started)

    async def advance(self, batch: Sequence[Any]) -> None:
        """Airflow stored the events of these pushes: acked (recognised if sent again), no longer pending.

        A push whose events were not all confirmed (an ack timeout, a watcher that failed) stays
        pending: it is handed out again when the stream starts again."""
        state = self.state
        if state is None:
            return
        for item in batch:
            identity, timestamp = item.broker_payload
            outcome = item.outcome
            if outcome.is_clean:
                state.ack(identity, timestamp if isinstance(timestamp, int) else None)
            elif outcome.rejected and not outcome.failed:
                state.drop(identity)
            else:
                self.log.warning(
                    "MultiMarkets push stream: the events of push %s were not confirmed stored (%d failed, %d "
                    "accepted); it stays pending and is handed out again when the stream starts again.",
                    identity,
                    outcome.failed,
                    outcome.acked,
                )
        await self.write()

    async def aclose(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        if self.state is not None:  # a stream stopped in order: its lease is released at once
            try:
                self.state.released = True
                self.state.version += 1
                doc = self.state.to_json(_protect(self.state.token))
                accessors = self.group.primary() or self._last_accessors[:1]
                await asyncio.gather(*(a.aset(self.state_key, doc) for a in accessors), return_exceptions=True)
            except Exception as exc:  # best effort: the lease then simply expires
                self.log.debug("MultiMarkets push stream: lease not released (%s).", exc)


__all__ = ["MultiMarketsPushEventTrigger", "PushStreamProducer", "fetch_token", "stream_key"]
