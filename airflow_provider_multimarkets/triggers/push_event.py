"""``MultiMarketsPushEventTrigger``: a DAG run per matching push, with Airflow 3's ``AssetWatcher``.

Event-driven scheduling (``Asset(..., watchers=[AssetWatcher(name, trigger)])``) needs Airflow
3.0 or later (``BaseEventTrigger`` and ``AssetWatcher`` arrived in 3.0.0). On Airflow 2 this
module imports, and building the trigger raises a :class:`MultiMarketsConfigError` that says so.

The trigger is long-lived. It fetches its own msg token with the hook's signed call
(:meth:`~airflow_provider_multimarkets.hooks.multimarkets.MultiMarketsHook.aget_msg_token`: the
shared call budget of the apiKey, off the event loop) and listens with the one message-socket
client (:class:`~airflow_provider_multimarkets.messaging.client.MultiMarketsMsgClient`: its
frame kinds, reconnect rules and push log). A refused or expired token is replaced by a new one.

**At-least-once.** Every push is written to the trigger's journal (a push log) and flushed before
its event is yielded. A triggerer can die between the yield and the moment Airflow stores the
event, so a trigger that starts again first yields again the journal's pushes of the last
``replay_seconds`` (marked ``"replayed": true``). The token is kept beside the journal (mode 0600)
so that a restarted trigger resumes the same message stream and receives what the platform
queued for it meanwhile. Duplicates are possible and carry the same ``identity``
(:func:`~airflow_provider_multimarkets.messaging.identity.event_identity`): de-duplicate on it downstream.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
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

CLASSPATH = "airflow_provider_multimarkets.triggers.push_event.MultiMarketsPushEventTrigger"
#: a token refused again within this many seconds of being fetched counts as the same failure
TOKEN_REFUSAL_WINDOW = 60.0
MAX_TOKEN_REFUSALS = 3
MAX_OUTAGE_BACKOFF = 300.0


class MultiMarketsPushEventTrigger(BaseEventTrigger):
    """One ``TriggerEvent`` per matching push, for ``AssetWatcher`` (Airflow 3.0+).

    :param multimarkets_conn_id: the connection (keys for the token, ``msg_ws_url``/``app_id``).
    :param trade_types: ``tradeTypes`` to subscribe, e.g. ``"2"`` (isolated margin) or ``"1,2"``.
    :param msg_codes: push kinds that make events (``["trade"]``); ``None``: every push.
    :param biz_types: ``content.bizType`` values, e.g. ``["POSITION_OPEN", "POSITION_CLOSE",
        "POSITION_OPEN_FAIL"]``; ``None``: all.
    :param final_only: only pushes after which the order no longer changes (default ``True``).
    :param symbol_ids: only these ``paramMap.symbolId`` values; ``account_ids``: these accounts.
    :param state_dir: where the journal and the token are kept; default
        ``$MULTIMARKETS_PUSH_DIR/events`` (``$AIRFLOW_HOME/multimarkets-pushes/events``). Put it
        on a volume every triggerer host mounts if you run several triggerers.
    :param replay_seconds: after a restart, pushes of the journal this recent are yielded again.
    :param replay_max: at most this many pushes are yielded again.
    :param max_event_bytes: a push's content larger than this is left out of its event.
    :param journal_max_bytes: the journal is cut to its last ``journal_keep`` pushes beyond this size.
    :param journal_keep: pushes kept when the journal is cut (and recognised as duplicates).
    :param cycle_pushes: the socket is re-opened (same token) after this many pushes, to cut the journal.
    :param ping_interval: seconds between application pings.
    :param max_reconnects: reconnects in a row without a push before an outage is reported;
        the trigger then waits (backing off up to 5 minutes) and starts again: it never gives up.
    :param reconnect_backoff: first reconnect delay in seconds.
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
        for name in ("replay_max", "max_event_bytes", "journal_max_bytes", "journal_keep", "cycle_pushes"):
            if getattr(self, name) <= 0:
                raise MultiMarketsConfigError(f"MultiMarketsPushEventTrigger: {name} must be positive.")
        self._client: Any = None
        self.tokens_fetched = 0
        self.events_yielded = 0

    def __repr__(self) -> str:  # never the token
        return (
            f"<MultiMarketsPushEventTrigger conn_id={self.multimarkets_conn_id!r} trade_types={self.trade_types!r} "
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
            },
        )

    # ---- files ---------------------------------------------------------------------------------------

    def paths(self) -> tuple[str, str]:
        """This watcher's journal and token files (named after its connection, trade types and filter)."""
        from airflow_provider_multimarkets.messaging.push_filter import watcher_key
        from airflow_provider_multimarkets.storage.paths import default_push_dir

        directory = self.state_dir or os.path.join(default_push_dir(), "events")
        key = watcher_key([self.multimarkets_conn_id, self.trade_types, self.filter.as_json()])
        base = os.path.join(directory, f"{key}")
        return f"{base}.jsonl", f"{base}.token"

    # ---- run -----------------------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_multimarkets.messaging.push_filter import replay_tail
        from airflow_provider_multimarkets.storage.journal import compact_journal, load_token, read_lines

        journal, token_path = self.paths()
        await asyncio.to_thread(
            compact_journal, journal, max_bytes=self.journal_max_bytes, keep_lines=self.journal_keep
        )
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

        token = await asyncio.to_thread(load_token, token_path)
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
            if error_type == "MultiMarketsConfigError":
                raise MultiMarketsConfigError(message)
            if error_type == "MultiMarketsMsgAuthError":
                recent = fetched_at is not None and time.monotonic() - fetched_at < TOKEN_REFUSAL_WINDOW
                refusals = refusals + 1 if recent else 1
                if refusals > MAX_TOKEN_REFUSALS:
                    raise MultiMarketsMsgError(
                        f"The message WebSocket refused {refusals} msg tokens in a row, each within "
                        f"{TOKEN_REFUSAL_WINDOW:g} s of fetching it: {message} Check the connection's app_id and "
                        "the apiKey's permissions."
                    )
                self.log.warning(
                    "MultiMarkets push watcher: the message WebSocket refused its msg token; fetching a new one "
                    "(refusal %d in a row). Detail: %s",
                    refusals,
                    message,
                )
                token, fetched_at = await self._new_token(token_path), time.monotonic()
                continue
            outages += 1
            from airflow_provider_multimarkets.api.retry import backoff_delay

            delay = backoff_delay(outages - 1, max(self.reconnect_backoff, 1.0), MAX_OUTAGE_BACKOFF)
            self.log.error(
                "MultiMarkets push watcher: %s (after %.0f s). Starting again in %.0f s; pushes the platform "
                "queues for the msg token meanwhile are received then.",
                message or error_type,
                time.monotonic() - started,
                delay,
            )
            await asyncio.sleep(delay)

    async def _listen(
        self, token: str, journal: str, max_messages: int, outcome: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """The pushes of one client run, as the push log counts them; ``outcome`` gets its result."""
        from airflow_provider_multimarkets.messaging.client import MultiMarketsMsgClient, SubscriptionSpec

        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        spec = SubscriptionSpec(
            token=token,
            multimarkets_conn_id=self.multimarkets_conn_id,
            trade_types=self.trade_types,
            output_path=journal,
            max_messages=max_messages,
            ping_interval=self.ping_interval,
            max_reconnects=self.max_reconnects,
            reconnect_backoff=self.reconnect_backoff,
        )
        client = MultiMarketsMsgClient(spec, on_push=queue.put_nowait, log=self.log)
        self._client = client
        run = asyncio.ensure_future(client.subscribe())
        try:
            while True:
                if not queue.empty():
                    yield queue.get_nowait()
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
                    yield getter.result()
            outcome.update(run.result())
        finally:
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
            self._client = None
            await client.close()

    async def _new_token(self, token_path: str) -> str:
        """A new msg token (signed call within the shared budget), saved for a restart; retried on
        failures other than configuration, backing off up to 5 minutes."""
        from airflow_provider_multimarkets.api.retry import backoff_delay
        from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
        from airflow_provider_multimarkets.storage.journal import save_token

        attempt = 0
        while True:
            hook = MultiMarketsHook(self.multimarkets_conn_id)
            try:
                token = await hook.aget_msg_token()
            except MultiMarketsConfigError:
                raise
            except MultiMarketsError as exc:
                delay = backoff_delay(attempt, 5.0, MAX_OUTAGE_BACKOFF)
                attempt += 1
                self.log.error(
                    "MultiMarkets push watcher: could not fetch a msg token: %s Trying again in %.0f s.", exc, delay
                )
                await asyncio.sleep(delay)
                continue
            finally:
                await asyncio.to_thread(hook.close)
            await asyncio.to_thread(save_token, token_path, token)
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
