"""The message WebSocket client (hook side, async): one subscription on top of a push log.

The client logs in with the msg token, subscribes to the trade types, pings every
``ping_interval`` seconds, and records every push until a stop condition holds: ``max_messages``,
the ``deadline`` (end of the time window), or ``until_order_id`` reaching a final status. Then it
cancels the subscription and logs out.

Every push is appended to the push log (:mod:`..push_log`) and counts only once it is written
and flushed, so a process killed at any moment loses nothing already received; a client started
again on the same log restores its counts and identities and goes on. The summary is the log's
tally. Pushes sent again by the server after a reconnect are dropped as duplicates by content
identity, never by ``seqId``/``trace``. Frame kinds follow the vendor's own socket client
(:mod:`~airflow_provider_multimarkets.messaging.frames`).

Every way a connection can end is either retried, with the provider's one backoff rule
(:func:`..retry.backoff_delay`) and counted in ``reconnects`` (drops, normal closes 1000/1001,
failed or hung handshakes, a silent server), or ends the subscription with a
:class:`MultiMarketsMsgError` that names the cause: a refused token or a session ended by the
platform (:class:`MultiMarketsMsgAuthError`), a frame over ``max_frame_bytes``, a push log that
cannot be written (disk full, not writable), or no connection established at all within the window.

Connection settings are read through the hook's one path
(:func:`~airflow_provider_multimarkets.api.settings.settings_from_airflow_connection`) without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from airflow_provider_multimarkets._compat import mask_msg_token
from airflow_provider_multimarkets.api.retry import backoff_delay
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsConfigError,
    MultiMarketsError,
    MultiMarketsMsgAuthError,
    MultiMarketsMsgError,
)
from airflow_provider_multimarkets.messaging.codec import MAX_FRAME_DEPTH, bytes_loads, decode_frame, too_deep
from airflow_provider_multimarkets.messaging.frames import (
    LOGIN_ANSWER_CODE,
    NOTICE_CODE,
    NOTICE_UPDATE_TYPES,
    PNL_PREFIXES,
    TRADE_CODE,
    ack_code,
    build_frame,
    content_of,
    is_push,
    is_unknown,
    notice_update_type,
    parse_pnl_frame,
    parse_server_frame,
    session_end,
)
from airflow_provider_multimarkets.messaging.limits import CLOSE_TIMEOUT, DRAIN_SECONDS, STALL_SECONDS, WRITE_LIMIT
from airflow_provider_multimarkets.messaging.subscription import OrderCondition, SubscriptionRecorder
from airflow_provider_multimarkets.storage.files import write_atomic
from airflow_provider_multimarkets.storage.logs import open_push_log
from airflow_provider_multimarkets.storage.paths import is_object_store_url, local_path
from airflow_provider_multimarkets.storage.push_log import PushLog, PushLogError

AUTH_CLOSE_CODES = frozenset({4001, 4003})
#: seconds connection settings are reused in a process (a changed connection applies after that)
SETTINGS_TTL = 10.0
#: subscriptions of one event loop that set up and open their socket, or say goodbye, at the same
#: time: the others wait their turn, so that the loop never runs hundreds of such steps in one iteration
START_SLOTS = 16
_SETTINGS: dict[tuple[int, str], tuple[float, asyncio.Future[Any]]] = {}
_START: dict[int, asyncio.Semaphore] = {}
TOO_BIG_CLOSE_CODE = 1009
MAX_BACKOFF = 30.0
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
#: pushes staged before they are written at the latest (bounded memory, bounded batch)
MAX_STAGED = 1024


class _Idle(Exception):
    """No complete frame (data, ping, pong or close) for ``idle_timeout`` seconds: the server is hung,
    or sends a frame so slowly that it never completes."""


class _Stalled(Exception):
    """The server has not read what the client sent for :data:`STALL_SECONDS` (write buffer full)."""


@dataclass(kw_only=True)
class SubscriptionSpec:
    """What one subscription is: JSON values only, so a trigger serializes it as it is.

    :param token: the msg token from ``getMsgPushToken``.
    :param multimarkets_conn_id: the connection holding ``msg_ws_url``/``app_id`` (and ``lang``).
    :param trade_types: ``tradeTypes`` to subscribe, e.g. ``"2"`` or ``"1,2"``.
    :param deadline: Unix time (seconds) at which the time window ends.
    :param max_messages: stop after this many distinct pushes.
    :param until_order_id: stop when this order's trade push reaches a final ``orderStatus``.
    :param output_path: the push log: a JSON Lines file (or object-store URL) every push is
        appended to, and restored from when a subscription starts again.
    :param spool_path: without ``output_path``, the local file that holds the pushes anyway.
    :param inline_limit: pushes also returned in the event when there is no ``output_path``.
    :param ping_interval: seconds between application pings (the docs say 15).
    :param idle_timeout: reconnect when nothing arrives for this long (default 2 pings + 5 s).
    :param max_reconnects: give up after this many reconnects in a row that get no push.
    :param reconnect_backoff: first reconnect delay in seconds (doubles, with jitter, up to 30 s).
    :param open_timeout: seconds allowed for a handshake (never past the deadline).
    :param max_frame_bytes: largest frame accepted; a larger one ends the subscription (close 1009).
    """

    token: str
    multimarkets_conn_id: str = "multimarkets_default"
    trade_types: str = "2"
    deadline: float | None = None
    max_messages: int | None = None
    until_order_id: str | None = None
    output_path: str | None = None
    spool_path: str | None = None
    inline_limit: int = 1000
    ping_interval: float = 15.0
    idle_timeout: float | None = None
    max_reconnects: int = 5
    reconnect_backoff: float = 1.0
    open_timeout: float = 10.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES

    def __post_init__(self) -> None:
        self.trade_types = str(self.trade_types)
        self.until_order_id = None if self.until_order_id in (None, "") else str(self.until_order_id)
        self.max_frame_bytes = int(self.max_frame_bytes)

    def as_json(self) -> dict[str, Any]:
        """The arguments, as a trigger serializes them."""
        return asdict(self)


class MultiMarketsMsgClient:
    """The message WebSocket client: one subscription, from login to logout, on top of a push log.

    Used by :class:`~airflow_provider_multimarkets.triggers.msg_subscribe.MultiMarketsMsgSubscribeTrigger`
    (in the triggerer), by the push-event watcher, and by the order operator (in the worker, with
    ``on_ready``).

    The socket is websockets' own asyncio client (:mod:`..ws` chooses its TLS, proxy and limits).
    On top of it the client sends ``login`` and ``subscribe_asset``, an application ``ping``
    every ``ping_interval`` seconds (the docs ask for one every 15 s; websockets' own protocol
    pings run at the same interval and detect a dead peer), reads every frame, and writes the
    pushes to the push log.

    **The order operator's signal, ``on_ready``.** It runs once, as its own task, as soon as both
    hold on one connection: the login was answered with ``subscribe_success`` (the answer the
    vendor's H5 client waits for), and ``subscribe_asset`` was sent (it is sent right after
    ``login``, as the H5 client does). Nothing waits for an answer to ``subscribe_asset`` or for a
    ``pong``: neither the docs nor the H5 client show one. An answer that does come is logged; one
    that refuses the subscription (a ``content.code`` other than ``"0"``) ends it, since pushes
    would not come. ``on_ready`` may return an order id to wait for (``until_order_id``). A
    connection that drops while it runs neither cancels it nor loses its result. A refused login
    (``subscribe_fail``, or a close 4001) never runs it; no login answer within ``login_grace``
    seconds ends the subscription without running it, unless ``ready_without_login_answer`` is
    set (then it runs after the grace period, with a warning).

    :param spec: what to subscribe to and when to stop (:class:`SubscriptionSpec`).
    :param on_ready: the signal above (a coroutine function), or ``None``.
    :param on_push: called with every push once the push log counts it (written and flushed; or
        appended by another writer of the same log), not with those the log held when it was
        opened: the event trigger's way to turn pushes into events. It must not block.
    :param login_grace: seconds to wait for the login answer before giving up on ``on_ready``.
    :param ready_without_login_answer: run ``on_ready`` after ``login_grace`` even without an answer.
    :param handover: with ``on_ready``: end the subscription as soon as ``on_ready`` has returned
        (unless the order it returned is already final), closing the connection without
        ``cancel_subscribe_asset``/``logout``, so that another client (the order tracking trigger)
        resumes the same stream with the same token and push log. ``stop_reason``: ``handover``.
    :param log: where to log (the trigger's or the operator's logger).
    """

    def __init__(
        self,
        spec: SubscriptionSpec,
        *,
        on_ready: Callable[[], Awaitable[str | None]] | None = None,
        on_push: Callable[[dict[str, Any]], None] | None = None,
        login_grace: float = 10.0,
        ready_without_login_answer: bool = False,
        handover: bool = False,
        log: logging.Logger | logging.LoggerAdapter[Any] | Any | None = None,
    ) -> None:
        self.spec = spec
        self.log = log if log is not None else logging.getLogger(__name__)
        self._ws: Any = None
        self._push_log: PushLog | None = None
        self.on_ready = on_ready
        self.on_push = on_push
        self.login_grace = login_grace
        self.ready_without_login_answer = ready_without_login_answer
        self.handover = handover
        self._ready: asyncio.Future[str | None] | None = None
        self._ready_seen = False
        self._ready_blocked = False
        self._loads = bytes_loads()
        self._login_answered = False
        self._login_sent_at = 0.0

    def __repr__(self) -> str:
        return (
            f"<MultiMarketsMsgClient conn_id={self.spec.multimarkets_conn_id!r} trade_types={self.spec.trade_types!r}>"
        )

    # ---- connection ------------------------------------------------------------------------------

    async def _settings(self) -> Any:
        """Connection settings, through the hook's one path, at most once per connection id every
        :data:`SETTINGS_TTL` seconds in this process: a triggerer starting 500 subscriptions of one
        connection looks it up once (Airflow's lookup and our parsing cost about 6 ms on the loop
        each), and subscriptions starting together share the lookup in flight."""
        loop = asyncio.get_running_loop()
        key = (id(loop), self.spec.multimarkets_conn_id)
        now = time.monotonic()
        cached = _SETTINGS.get(key)
        if cached is None or cached[0] < now or (cached[1].done() and cached[1].exception() is not None):
            future: asyncio.Future[Any] = asyncio.ensure_future(self._look_up_settings())
            _SETTINGS[key] = cached = (now + SETTINGS_TTL, future)
        return await asyncio.shield(cached[1])

    async def _look_up_settings(self) -> Any:
        """Connection settings, looked up without blocking the triggerer's event loop (the hook's path)."""
        from airflow_provider_multimarkets.api.settings import (
            missing_connection_message,
            settings_from_airflow_connection,
        )
        from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

        getter = getattr(MultiMarketsHook, "aget_connection", None)
        try:
            if getter is not None:
                conn = await getter(self.spec.multimarkets_conn_id)
            else:  # pragma: no cover - Airflow 2.x
                from asgiref.sync import sync_to_async

                conn = await sync_to_async(MultiMarketsHook.get_connection)(self.spec.multimarkets_conn_id)
        except Exception as exc:
            if type(exc).__name__ != "AirflowNotFoundException":
                raise
            raise MultiMarketsConfigError(missing_connection_message(self.spec.multimarkets_conn_id)) from None
        return settings_from_airflow_connection(conn, self.spec.multimarkets_conn_id)

    # ---- run ---------------------------------------------------------------------------------------

    async def subscribe(self) -> dict[str, Any]:
        """Listen until a stop condition holds; the outcome as a JSON event (``status``, ``summary``,
        and ``error_type``/``message`` on failure). Every failure is in the event, never raised."""
        log_path = self.spec.output_path or self.spec.spool_path
        recorder = SubscriptionRecorder(
            log=open_push_log(log_path),
            max_messages=self.spec.max_messages,
            until=OrderCondition(self.spec.until_order_id) if self.spec.until_order_id else None,
            inline_limit=0 if self.spec.output_path else self.spec.inline_limit,
            keep_recent=self.on_ready is not None,
            secret=self.spec.token,
        )
        state = _RunState(None if not log_path or is_object_store_url(log_path) else local_path(log_path))
        try:
            # Airflow's masker recompiles one expression over every secret it holds on each
            # addition: one pattern for every token of the documented shape instead (once per process)
            mask_msg_token(self.spec.token)
            if not self.spec.token:
                raise MultiMarketsMsgAuthError(
                    "No msg token was given. Fetch one with GetMsgTokenOperator (getMsgPushToken) and pass its output."
                )
            async with _start_slot():
                settings = await self._settings()
                self._push_log = recorder.log
                try:
                    recorder.log.open()
                except PushLogError as exc:
                    raise MultiMarketsMsgError(str(exc)) from None
                if self.on_push is not None:
                    recorder.set_listener(self.on_push)
                recorder.check_limits()
                state.start(recorder)
            if recorder.restarts:
                self.log.warning(
                    "Message subscription resumed (run %d): the push log %s already holds %d pushes; going on.",
                    recorder.restarts + 1,
                    log_path,
                    recorder.messages,
                )
            try:
                await self._listen(settings, recorder, state)
            finally:
                await self._settle_ready()
            event = {"status": "success", "summary": recorder.summary(output_path=self.spec.output_path)}
        except MultiMarketsError as exc:
            event = self._error_event(type(exc).__name__, str(exc), recorder)
        except PushLogError as exc:
            event = self._error_event("MultiMarketsMsgError", str(exc), recorder)
        except Exception as exc:  # a defect of ours or of a library: still an event, never a raw exception
            self.log.error(
                "Message subscription ended by an unexpected %s: %s", type(exc).__name__, _scrub(exc, self.spec.token)
            )
            self.log.debug("Unexpected error in the message subscription", exc_info=True)
            event = self._error_event(
                "MultiMarketsMsgError",
                f"The message subscription ended by an unexpected error ({type(exc).__name__}: "
                f"{_scrub(exc, self.spec.token)}). What was written to the push log stays there; please report this.",
                recorder,
            )
        finally:
            state.save(recorder)
            self._close_log()
        return event

    def _error_event(self, error_type: str, message: str, recorder: SubscriptionRecorder) -> dict[str, Any]:
        try:
            summary = recorder.summary(output_path=self.spec.output_path)
        except Exception:  # pragma: no cover - the summary of a log that failed half-way
            summary = {"messages": recorder.messages}
        return {"status": "error", "error_type": error_type, "message": message, "summary": summary}

    async def _settle_ready(self) -> None:
        """Wait (bounded) for ``on_ready`` still in flight, so its outcome is known when the run ends."""
        self._ready_blocked = True  # a signal that has not started yet never starts now
        ready = self._ready
        if ready is not None and not ready.done():
            await asyncio.wait({ready}, timeout=120)

    def _close_log(self) -> None:
        log, self._push_log = self._push_log, None
        if log is not None:
            log.close()

    def _remaining(self) -> float | None:
        return None if self.spec.deadline is None else self.spec.deadline - time.time()

    async def _listen(self, settings: Any, recorder: SubscriptionRecorder, state: _RunState) -> None:
        from websockets.exceptions import (
            ConnectionClosed,
            InvalidHandshake,
            InvalidProxyStatus,
            InvalidStatus,
            InvalidURI,
        )

        url = settings.ws_url()
        failures = 0
        while not recorder.done:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                self._window_over(recorder, url)
                break
            before = recorder.messages
            try:
                await self._session(url, settings, recorder, state)
            except MultiMarketsError:
                raise
            except PushLogError as exc:
                raise MultiMarketsMsgError(str(exc)) from None
            except InvalidURI as exc:
                raise MultiMarketsMsgError(
                    f"The message WebSocket URL {url!r} is invalid ({exc}). Fix the connection extra 'msg_ws_url'."
                ) from None
            except InvalidProxyStatus as exc:
                status = exc.response.status_code
                if status == 407:
                    raise MultiMarketsMsgError(
                        "The proxy for the message WebSocket asks for credentials (HTTP 407). Put them in the proxy "
                        "URL (https_proxy=http://user:password@host:port) or add the platform's host to no_proxy."
                    ) from None
                reason = f"the proxy refused CONNECT (HTTP {status})"
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise MultiMarketsMsgAuthError(
                        f"The message WebSocket refused the connection (HTTP {status}). Fetch a new msg token with "
                        "GetMsgTokenOperator and check the connection's app_id."
                    ) from None
                if status == 404:
                    raise MultiMarketsMsgError(
                        f"No message WebSocket at {url} (HTTP 404). Check the connection extras 'msg_ws_url' and 'app_id'."
                    ) from None
                reason = f"handshake answered HTTP {status}"
            except InvalidHandshake as exc:  # a server restarting, a proxy answering garbage
                reason = f"handshake failed ({type(exc).__name__}: {_cause(exc)})"
            except ConnectionClosed as exc:
                reason = self._closed(exc)
            except _Idle:
                reason = f"no complete frame for {self._idle_timeout():g} s (idle_timeout): the server is not answering"
            except _Stalled:
                reason = (
                    f"the server has not read what the client sent for {STALL_SECONDS:g} s (its write buffer is over "
                    f"{WRITE_LIMIT // 1024} KiB): a proxy or gateway that stopped reading"
                )
            except (OSError, asyncio.TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} (handshake timed out)"
            else:
                continue  # the session ended because a stop condition holds
            if recorder.done:
                break
            recorder.last_error = reason
            failures = 0 if recorder.messages > before else failures + 1
            if failures > self.spec.max_reconnects:
                raise MultiMarketsMsgError(
                    f"The message WebSocket {url} failed {failures} times in a row without delivering a push "
                    f"(last: {reason}). Check the connection extra 'msg_ws_url' and that the platform is up."
                )
            delay = backoff_delay(max(failures - 1, 0), self.spec.reconnect_backoff, MAX_BACKOFF)
            recorder.reconnects += 1
            state.save(recorder)
            remaining = self._remaining()
            if remaining is not None and remaining <= delay:
                await _pause(max(remaining, 0))
                self._window_over(recorder, url)
                break
            self.log.warning(
                "Message WebSocket: %s; reconnecting in %.2f s (reconnect %d).", reason, delay, recorder.reconnects
            )
            await _pause(delay)

    def _closed(self, exc: Any) -> str:
        """How a connection ended (websockets' ``ConnectionClosed``): raise when it must not be retried,
        else the reason, for ``last_error``. A close frame is read as that close whenever it came."""
        rcvd, sent = exc.rcvd, exc.sent
        if rcvd is not None and rcvd.code in AUTH_CLOSE_CODES:
            raise MultiMarketsMsgAuthError(_auth_message(rcvd.reason))
        for frame in (sent, rcvd):
            if frame is not None and frame.code == TOO_BIG_CLOSE_CODE:
                if "fragment" in (frame.reason or ""):
                    raise MultiMarketsMsgError(
                        "The message WebSocket sent a message in more fragments than websockets accepts "
                        "(WEBSOCKETS_MAX_FRAGMENTS, 4096 by default), so the connection was closed (1009). A gateway "
                        "does not do this: check what sits between the triggerer and the platform."
                    ) from None
                raise MultiMarketsMsgError(
                    f"The message WebSocket sent a frame larger than max_frame_bytes={self.spec.max_frame_bytes}, so "
                    "the connection was closed (1009): it would come again after a reconnect. Raise the "
                    "operator's max_frame_bytes."
                ) from None
        if rcvd is not None:
            return f"the server closed the connection ({rcvd.code}{': ' + rcvd.reason[:200] if rcvd.reason else ''})"
        if sent is not None:
            return f"the client closed the connection ({sent.code}{': ' + sent.reason[:200] if sent.reason else ''})"
        return "the connection dropped without a close frame"

    def _window_over(self, recorder: SubscriptionRecorder, url: str) -> None:
        """The window ended: fine, unless no connection was ever established in it."""
        if recorder.connections == 0:
            raise MultiMarketsMsgError(
                f"No connection to the message WebSocket {url} was established within the window "
                f"(last: {recorder.last_error or 'none'}), so nothing could be received. Check the connection "
                "extra 'msg_ws_url' and that the platform is up."
            )
        recorder.finish("window")

    def _idle_timeout(self) -> float:
        return self.spec.idle_timeout if self.spec.idle_timeout is not None else 2 * self.spec.ping_interval + 5

    async def _session(self, url: str, settings: Any, recorder: SubscriptionRecorder, state: _RunState) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed
        from websockets.uri import parse_uri

        from airflow_provider_multimarkets.messaging.ws import connect_arguments

        lang = settings.lang or "en-US"
        seq = 0

        def next_frame(msg_type: str, data: dict[str, Any] | None = None) -> str:
            nonlocal seq
            seq += 1
            return build_frame(msg_type, self.spec.token, seq, lang=lang, device=settings.device, data=data)

        remaining = self._remaining()
        open_timeout = (
            self.spec.open_timeout if remaining is None else max(0.05, min(self.spec.open_timeout, remaining))
        )
        arguments = connect_arguments(
            parse_uri(url),
            verify=settings.verify,
            compression=settings.msg_ws_compression,
            open_timeout=open_timeout,
            max_size=self.spec.max_frame_bytes,
            # websockets' protocol pings: any WebSocket server answers them, so a quiet but live
            # gateway is never idle, and a dead one is found even when it answers no application ping
            ping_interval=self.spec.ping_interval,
            ping_timeout=self._idle_timeout(),
        )
        async with _start_slot():
            ws = await connect(url, **arguments)
            recorder.connections += 1
            state.save(recorder)  # a small file write: within the slot too
        self._ws = ws
        self._login_answered = False
        graceful = True
        try:
            try:
                await self._send(ws, next_frame("login"))
                self._login_sent_at = time.monotonic()
                await self._send(ws, next_frame("subscribe_asset", {"tradeTypes": self.spec.trade_types}))
            except ConnectionClosed:
                await self._read_after_close(ws, recorder)  # a refused login says why before the close
                raise
            self.log.info("Message WebSocket: logged in and subscribed to tradeTypes %s.", self.spec.trade_types)
            # One task reads (recv per frame, pushes of one read written in one append); one keeps
            # time: pings, the window, a silent or stalled server, and the order operator's signal.
            reader = asyncio.ensure_future(self._read(ws, recorder))
            ticker = asyncio.create_task(self._tick(ws, recorder, next_frame))
            try:
                done, _ = await asyncio.wait({reader, ticker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, ticker):
                    task.cancel()
                await asyncio.gather(reader, ticker, return_exceptions=True)
            for task in sorted(done, key=lambda t: t is not ticker):  # the ticker's window end first
                error = None if task.cancelled() else task.exception()
                if error is None or recorder.done:
                    continue
                if isinstance(error, ConnectionClosed) and task is ticker:
                    await self._read_after_close(ws, recorder)  # a ping found the close: read what came first
                task.result()  # re-raise ConnectionClosed, _Idle, _Stalled, session ends, signal errors
            if recorder.done and recorder.stop_reason != "handover":  # a handover keeps the subscription
                async with _start_slot():  # the end of a window comes to every subscription at once: take turns
                    graceful = await self._goodbye(ws, recorder, next_frame)
        except (_Idle, _Stalled):
            graceful = False
            raise
        finally:
            self._ws = None
            try:
                recorder.commit()  # what an error interrupted in the middle of a read
            finally:
                await _close(ws, graceful=graceful)

    async def _read_after_close(self, ws: Any, recorder: SubscriptionRecorder) -> None:
        """The frames received before a close that a send found first: handled as if read in order
        (a ``subscribe_fail`` then raises why the login was refused). Returns when none is left."""
        from websockets.exceptions import ConnectionClosed

        try:
            await asyncio.wait_for(self._read(ws, recorder), CLOSE_TIMEOUT + 1)
        except (ConnectionClosed, asyncio.TimeoutError):
            pass

    async def _send(self, ws: Any, text: str) -> None:
        """Send one frame; a server that has not read for :data:`STALL_SECONDS` ends the connection."""
        try:
            await asyncio.wait_for(ws.send(text), STALL_SECONDS)
        except asyncio.TimeoutError:
            raise _Stalled from None

    async def _read(self, ws: Any, recorder: SubscriptionRecorder) -> None:
        """Every frame, as it comes; the pushes staged from frames already received are written in one
        append once no more is waiting (a push counts only once written)."""
        handle, log, recv = self._handle, recorder.log, ws.recv
        # without a message limit the recorder adds nothing to the log's commit: call it directly
        commit = log.commit if recorder.max_messages is None else recorder.commit
        consumed = ws.messages_in
        while recorder.stop_reason is None:
            data = await recv(decode=False)
            consumed += 1
            handle(data, recorder)
            if consumed >= ws.messages_in or log.pending >= MAX_STAGED:
                commit(force=False)  # nothing staged: returns at once

    async def _tick(self, ws: Any, recorder: SubscriptionRecorder, next_frame: Any) -> None:
        clock = time.monotonic
        next_ping = clock() + self.spec.ping_interval
        idle = self._idle_timeout()
        while not recorder.done:
            now = clock()
            waiting_signal = self.on_ready is not None and self._ready is None
            if waiting_signal and not self._login_answered and now - self._login_sent_at >= self.login_grace:
                if not self.ready_without_login_answer:
                    raise MultiMarketsMsgError(
                        f"The message WebSocket did not answer the login (subscribe_success) within "
                        f"{self.login_grace:g} s, so nothing was placed: the fill could not be tracked. Check the "
                        "platform, or opt into untracked placement."
                    )
                self.log.warning("Message WebSocket: no answer to the login; going on as configured.")
                self._start_ready()
            ready = self._ready
            if ready is not None and ready.done() and not self._ready_seen:
                self._ready_seen = True
                order_id = ready.result()  # re-raises the signal's error
                if order_id:
                    recorder.set_until(OrderCondition(str(order_id)))
                if self.handover:
                    recorder.finish("handover")  # a no-op when the order's final push already arrived
                continue
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                recorder.finish("window")
                return
            if now >= next_ping:
                await self._send(ws, next_frame("ping"))
                next_ping = now + self.spec.ping_interval
            if now - ws.last_frame >= idle:
                raise _Idle
            stalled = ws.stalled_since
            if stalled is not None and now - stalled >= STALL_SECONDS:
                raise _Stalled
            if recorder.log.pending:
                recorder.commit(force=False)  # a segment that is due (object stores)
            wait = min(next_ping - now, idle - (now - ws.last_frame))
            if waiting_signal or (ready is not None and not self._ready_seen):
                wait = min(wait, 0.05)
            if recorder.log.pending or stalled is not None:
                wait = min(wait, 0.5)
            if remaining is not None:
                wait = min(wait, remaining)
            await asyncio.sleep(max(wait, 0.001))

    def _start_ready(self) -> None:
        """Run ``on_ready`` once, as its own task (see the class docs)."""
        if self.on_ready is None or self._ready is not None or self._ready_blocked:
            return
        on_ready = self.on_ready

        async def signal() -> str | None:
            if self._ready_blocked:  # the subscription ended before the task got to run
                return None
            return await on_ready()

        self._ready = asyncio.ensure_future(signal())

    def _handle(self, data: bytes, recorder: SubscriptionRecorder) -> None:
        """One whole message as received (a text message's UTF-8 bytes, or a binary message)."""
        if data.count(b"{") + data.count(b"[") > MAX_FRAME_DEPTH and too_deep(data):  # two C counts first
            self._malformed(recorder)
            return
        try:  # the hot path: a trade push, UTF-8 JSON on one line, written as received
            frame = self._loads(data)
        except ValueError:  # not UTF-8 JSON as it stands (a BOM, UTF-16, NaN, ...): the general path below
            frame = None
        if type(frame) is dict and frame.get("msgCode") == TRADE_CODE and b"\n" not in data and b"\r" not in data:
            if recorder.max_messages is None:  # the recorder's own stage_line only adds the limit's check
                recorder.log.stage_line(frame, data)
            else:
                recorder.stage_line(frame, data)
            return
        text = decode_frame(data)
        frame = None if text is None else parse_server_frame(text)
        if frame is None or text is None:
            pnl = parse_pnl_frame(text) if text is not None and text[:2] in PNL_PREFIXES else None
            if pnl is not None:
                recorder.record_pnl(pnl)
            else:
                self._malformed(recorder)  # not JSON (nor a P&L text frame), or not an object
            return
        end = session_end(frame)
        if end is not None:
            if end.refused:
                self._ready_blocked = True
                raise MultiMarketsMsgAuthError(_auth_message(end.cause))
            if end.auth:
                raise MultiMarketsMsgAuthError(
                    f"The message WebSocket session ended: {end.cause}. The msg token can no longer be used: fetch a "
                    "new one with GetMsgTokenOperator (getMsgPushToken) and subscribe again."
                )
            raise MultiMarketsMsgError(f"The message WebSocket session ended: {end.cause}.")
        code = frame.get("msgCode")
        if is_push(frame):
            if code == NOTICE_CODE:
                kind = notice_update_type(frame)
                name = NOTICE_UPDATE_TYPES.get(kind, "") if kind is not None else ""
                self.log.info("Message WebSocket notice: updateType %s %s.", kind, name)
            recorder.stage(frame, text)
        elif code == LOGIN_ANSWER_CODE:
            self.log.info("Message WebSocket: login accepted (subscribe_success).")
            self._login_answered = True
            self._start_ready()  # subscribe_asset went out right after login
        elif is_unknown(frame):
            recorder.record_unknown(text)
        else:
            self._answer(frame, recorder)

    def _answer(self, frame: dict[str, Any], recorder: SubscriptionRecorder) -> None:
        """An answer no source shows (``pong``, ``subscribe_asset``, ...): logged, never waited for."""
        recorder.answer_frames += 1
        code, result = frame.get("msgCode"), ack_code(frame)
        if code == "subscribe_asset" and result not in (None, "0"):
            content = content_of(frame)
            raise MultiMarketsMsgError(
                f"The message WebSocket refused subscribe_asset for tradeTypes {self.spec.trade_types} (code "
                f"{result}: {str(content.get('msg', ''))[:200]}). Nothing was placed unless the order was already on "
                "its way. Check the tradeTypes and the apiKey's permissions."
            )
        if code == "subscribe_asset":
            self.log.info("Message WebSocket: subscribe_asset answered (code %s); nothing waits for it.", result)
        elif code == "error" or result not in (None, "0"):
            self.log.warning("Message WebSocket answered %s: %s", code, str(frame.get("content"))[:300])

    def _malformed(self, recorder: SubscriptionRecorder) -> None:
        recorder.malformed += 1
        if recorder.malformed in (1, 10, 100, 1000):
            self.log.warning("Message WebSocket: skipped %d malformed frame(s).", recorder.malformed)

    async def _goodbye(self, ws: Any, recorder: SubscriptionRecorder, next_frame: Any) -> bool:
        """Cancel the subscription and log out, then read what the server still delivers until it
        closes (at most :data:`DRAIN_SECONDS`): those pushes are written too. After ``max_messages``
        nothing more is read: the subscription asked for that many. ``False`` when the server did
        not close in time (the connection is then aborted, not closed with a handshake)."""
        from websockets.exceptions import ConnectionClosed

        try:
            await self._send(ws, next_frame("cancel_subscribe_asset", {"tradeTypes": self.spec.trade_types}))
            await self._send(ws, next_frame("logout"))
        except Exception:
            self.log.debug("Message WebSocket: could not send cancel/logout (connection already closed).")
            return True
        if recorder.stop_reason == "max_messages":
            return True
        deadline = time.monotonic() + DRAIN_SECONDS
        closed = False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                data = await asyncio.wait_for(ws.recv(decode=False), left)
                try:
                    self._handle(data, recorder)
                except MultiMarketsError:  # the session ends anyway: what came before is kept
                    break
        except ConnectionClosed:
            closed = True
        except asyncio.TimeoutError:
            pass
        recorder.commit()
        return closed

    async def close(self) -> None:
        """Close the connection and the push log (the trigger's ``cleanup``)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await _close(ws, graceful=True)
        self._close_log()


def _start_slot() -> asyncio.Semaphore:
    """This event loop's :data:`START_SLOTS` (set-up and socket opening, one of each at a time per slot)."""
    loop = asyncio.get_running_loop()
    slots = _START.get(id(loop))
    if slots is None or getattr(slots, "_mm_loop", None) is not loop:
        slots = _START[id(loop)] = asyncio.Semaphore(START_SLOTS)
        slots._mm_loop = loop  # type: ignore[attr-defined]  # ids of closed loops are reused
    return slots


async def _pause(seconds: float) -> None:
    """The wait between two connections (one place, so that tests can run it on a fake clock)."""
    await asyncio.sleep(seconds)


async def _close(ws: Any, *, graceful: bool) -> None:
    """The closing handshake, bounded (websockets' ``close_timeout``, then this), or an abort at once
    when the server is idle or stalled (a handshake would only wait)."""
    try:
        if graceful:
            await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT + 1)
    except Exception as exc:  # TimeoutError, OSError: the transport is aborted below
        logging.getLogger(__name__).debug("Message WebSocket: closing handshake cut short (%s).", type(exc).__name__)
    finally:
        transport = getattr(ws, "transport", None)
        if transport is not None:
            transport.abort()


def _cause(exc: BaseException) -> str:
    """An exception's text with its cause (websockets wraps the parser's error)."""
    text = str(exc)
    if exc.__cause__ is not None and str(exc.__cause__):
        text = f"{text}: {exc.__cause__}"
    return text[:200]


def _scrub(exc: BaseException, token: str) -> str:
    text = str(exc)[:300]
    return text.replace(token, "***") if token else text


def _auth_message(reason: str) -> str:
    detail = f" ({reason})" if reason else ""
    return (
        f"The message WebSocket refused the msg token{detail}. Tokens expire and are single-purpose: fetch a new "
        "one with GetMsgTokenOperator (getMsgPushToken) right before subscribing."
    )


class _RunState:
    """Counters that outlive one trigger run, beside the push log (``<log>.state.json``).

    The log itself holds the pushes; this small file holds how many runs, connections and
    reconnects the subscription had, so a trigger started again by a new triggerer reports them.
    """

    def __init__(self, log_path: str | None) -> None:
        self.path = None if log_path is None else f"{log_path}.state.json"
        self._saved: dict[str, int] | None = None

    def start(self, recorder: SubscriptionRecorder) -> None:
        previous: dict[str, Any] = {}
        if self.path is not None:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    loaded = json.load(handle)
                previous = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                previous = {}
        runs = _int(previous.get("runs")) or _int(getattr(recorder.log, "previous_runs", 0))
        recorder.restarts = runs if runs else (1 if recorder.log.restored else 0)
        recorder.connections = _int(previous.get("connections"))
        # a run that starts over an earlier one reconnects: that counts
        recorder.reconnects = _int(previous.get("reconnects")) + (1 if recorder.restarts else 0)
        self.save(recorder)

    def save(self, recorder: SubscriptionRecorder) -> None:
        if self.path is None:
            return
        data = {
            "runs": recorder.restarts + 1,
            "connections": recorder.connections,
            "reconnects": recorder.reconnects,
        }
        if data == self._saved:
            return  # unchanged: no write (hundreds of subscriptions end at once at a window's end)
        try:
            write_atomic(self.path, json.dumps(data))
        except OSError:
            return  # the counters are informative; the push log is what counts
        self._saved = data


def _int(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0
