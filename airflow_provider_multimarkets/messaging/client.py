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

from airflow_provider_multimarkets.api.retry import backoff_delay
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsConfigError,
    MultiMarketsError,
    MultiMarketsMsgAuthError,
    MultiMarketsMsgError,
)
from airflow_provider_multimarkets.messaging.codec import bytes_loads, decode_frame
from airflow_provider_multimarkets.messaging.frames import (
    CONTROL_CODES,
    NOTICE_CODE,
    NOTICE_UPDATE_TYPES,
    PNL_PREFIXES,
    ack_code,
    build_frame,
    is_push,
    notice_update_type,
    parse_pnl_frame,
    parse_server_frame,
    session_end,
)
from airflow_provider_multimarkets.messaging.subscription import OrderCondition, SubscriptionRecorder
from airflow_provider_multimarkets.storage.files import write_atomic
from airflow_provider_multimarkets.storage.logs import open_push_log
from airflow_provider_multimarkets.storage.paths import is_object_store_url, local_path
from airflow_provider_multimarkets.storage.push_log import PushLog, PushLogError

AUTH_CLOSE_CODES = frozenset({4001, 4003})
TOO_BIG_CLOSE_CODE = 1009
MAX_BACKOFF = 30.0
DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
#: pushes staged before they are written at the latest (bounded memory, bounded batch)
MAX_STAGED = 1024


class _Idle(Exception):
    """No frame at all (pong included) for ``idle_timeout`` seconds: the server is hung."""


class _Closed(Exception):
    """The server closed the connection normally (1000/1001) before a stop condition held."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"the server closed the connection ({code}{': ' + reason if reason else ''})")


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
    (in the triggerer) and by the order operator (in the worker, with ``on_subscribed``).

    :param spec: what to subscribe to and when to stop (:class:`SubscriptionSpec`).
    :param on_subscribed: run once, after the subscription is acknowledged; may return an order id
        to wait for. It runs as its own task, so a connection that drops while it is in flight
        neither cancels it nor loses its result. No acknowledgement within ``ack_grace`` seconds,
        or a refused one, ends the subscription without running it, unless
        ``callback_without_ack`` is set (then it runs after the grace period, with a warning).
    :param on_push: called with every push once the push log counts it (written and flushed; or
        appended by another writer of the same log), not with those the log held when it was
        opened: the event trigger's way to turn pushes into events. It must not block.
    :param log: where to log (the trigger's or the operator's logger).
    """

    def __init__(
        self,
        spec: SubscriptionSpec,
        *,
        on_subscribed: Callable[[], Awaitable[str | None]] | None = None,
        on_push: Callable[[dict[str, Any]], None] | None = None,
        ack_grace: float = 10.0,
        callback_without_ack: bool = False,
        log: logging.Logger | logging.LoggerAdapter[Any] | Any | None = None,
    ) -> None:
        self.spec = spec
        self.log = log if log is not None else logging.getLogger(__name__)
        self._ws: Any = None
        self._push_log: PushLog | None = None
        self.on_subscribed = on_subscribed
        self.on_push = on_push
        self.ack_grace = ack_grace
        self.callback_without_ack = callback_without_ack
        self._callback: asyncio.Future[str | None] | None = None
        self._callback_seen = False
        self._loads = bytes_loads()
        self._subscribed_done = False
        self._subscribe_acked = False

    def __repr__(self) -> str:
        return (
            f"<MultiMarketsMsgClient conn_id={self.spec.multimarkets_conn_id!r} trade_types={self.spec.trade_types!r}>"
        )

    # ---- connection ------------------------------------------------------------------------------

    async def _settings(self) -> Any:
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

    async def _mask_token(self) -> None:
        from airflow_provider_multimarkets._compat import amask_secret

        await amask_secret(self.spec.token)

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
            keep_recent=self.on_subscribed is not None,
        )
        state = _RunState(None if not log_path or is_object_store_url(log_path) else local_path(log_path))
        try:
            await self._mask_token()
            if not self.spec.token:
                raise MultiMarketsMsgAuthError(
                    "No msg token was given. Fetch one with GetMsgTokenOperator (getMsgPushToken) and pass its output."
                )
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
                await self._settle_callback()
            event = {"status": "success", "summary": recorder.summary(output_path=self.spec.output_path)}
        except MultiMarketsError as exc:
            event = {
                "status": "error",
                "error_type": type(exc).__name__,
                "message": str(exc),
                "summary": recorder.summary(output_path=self.spec.output_path),
            }
        finally:
            state.save(recorder)
            self._close_log()
        return event

    async def _settle_callback(self) -> None:
        """Wait (bounded) for a callback still in flight, so its outcome is known when the run ends."""
        callback = self._callback
        if callback is not None and not callback.done():
            await asyncio.wait({callback}, timeout=120)

    def _close_log(self) -> None:
        log, self._push_log = self._push_log, None
        if log is not None:
            log.close()

    def _remaining(self) -> float | None:
        return None if self.spec.deadline is None else self.spec.deadline - time.time()

    async def _listen(self, settings: Any, recorder: SubscriptionRecorder, state: _RunState) -> None:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

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
                reason = f"handshake failed ({type(exc).__name__}: {str(exc)[:200]})"
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code in AUTH_CLOSE_CODES:
                    raise MultiMarketsMsgAuthError(_auth_message(exc.rcvd.reason)) from None
                if any(f is not None and f.code == TOO_BIG_CLOSE_CODE for f in (exc.sent, exc.rcvd)):
                    raise MultiMarketsMsgError(
                        f"The message WebSocket sent a frame larger than max_frame_bytes={self.spec.max_frame_bytes}, so "
                        "the connection was closed (1009): it would come again after a reconnect. Raise the "
                        "operator's max_frame_bytes."
                    ) from None
                code = exc.rcvd.code if exc.rcvd is not None else "no close frame"
                reason = f"connection closed ({code})"
            except _Closed as exc:
                reason = str(exc)
            except _Idle:
                reason = f"no frame for {self._idle_timeout():g} s (server not answering pings)"
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
                await asyncio.sleep(max(remaining, 0))
                self._window_over(recorder, url)
                break
            self.log.warning(
                "Message WebSocket: %s; reconnecting in %.2f s (reconnect %d).", reason, delay, recorder.reconnects
            )
            await asyncio.sleep(delay)

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
        from websockets.exceptions import ConnectionClosedOK

        from airflow_provider_multimarkets.messaging.connection import open_connection

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
        handle, log = self._handle, recorder.log

        # Every message of one network read is handled in one pass, then written in one append
        # (on_batch) before the next read: a push counts only once written, so a kill loses
        # nothing counted (what was not written yet is sent again, like what was in the socket).
        def on_message(data: bytes, binary: bool) -> bool:
            handle(data, binary, recorder)
            if log.pending >= MAX_STAGED:
                recorder.commit(force=False)
            return recorder.done

        def on_batch() -> bool:
            if log.pending:
                recorder.commit(force=False)
            return recorder.done

        ws = await open_connection(
            url,
            on_message=on_message,
            on_batch=on_batch,
            open_timeout=open_timeout,
            max_size=self.spec.max_frame_bytes,
            compression=settings.msg_ws_compression,
            verify=settings.verify,
        )
        self._ws = ws
        try:
            recorder.connections += 1
            state.save(recorder)
            await ws.send(next_frame("login"))
            await ws.send(next_frame("subscribe_asset", {"tradeTypes": self.spec.trade_types}))
            self.log.info("Message WebSocket: logged in and subscribed to tradeTypes %s.", self.spec.trade_types)
            self._subscribe_acked = False
            # The connection reads (no task or timer per message: the hot path); one task keeps
            # time: pings, the window, a silent server, and the sync-mode "after subscribed" callback.
            reader = asyncio.ensure_future(ws.wait())
            ticker = asyncio.create_task(self._tick(ws, recorder, next_frame))
            try:
                done, _ = await asyncio.wait({reader, ticker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, ticker):
                    task.cancel()
                await asyncio.gather(reader, ticker, return_exceptions=True)
            for task in done:
                try:
                    task.result()  # re-raise ConnectionClosed, _Idle, auth errors, callback errors
                except ConnectionClosedOK:  # a normal close (1000/1001) before a stop condition: reconnect, counted
                    if not recorder.done:
                        raise _Closed(ws.close_code, ws.close_reason or "") from None
            if recorder.done:
                await self._goodbye(ws, next_frame)
        finally:
            self._ws = None
            try:
                recorder.commit()  # what an error interrupted in the middle of a read
            finally:
                await ws.close(timeout=2)

    async def _tick(self, ws: Any, recorder: SubscriptionRecorder, next_frame: Any) -> None:
        clock = time.monotonic
        subscribed_at = clock()
        next_ping = subscribed_at + self.spec.ping_interval
        idle = self._idle_timeout()
        while not recorder.done:
            now = clock()
            waiting_callback = self.on_subscribed is not None and not self._subscribed_done
            if waiting_callback and not self._subscribe_acked and now - subscribed_at >= self.ack_grace:
                if not self.callback_without_ack:
                    raise MultiMarketsMsgError(
                        f"The message WebSocket did not acknowledge subscribe_asset (tradeTypes {self.spec.trade_types}) "
                        f"within {self.ack_grace:g} s, so nothing was placed: the fill could not be tracked. "
                        "Check the platform, or opt into untracked placement."
                    )
                self.log.warning("Message WebSocket: no subscribe_asset acknowledgement; going on as configured.")
            if waiting_callback and (self._subscribe_acked or now - subscribed_at >= self.ack_grace):
                self._subscribed_done = True
                assert self.on_subscribed is not None
                self._callback = asyncio.ensure_future(self.on_subscribed())
            callback = self._callback
            if callback is not None and callback.done() and not self._callback_seen:
                self._callback_seen = True
                order_id = callback.result()  # re-raises the callback's error
                if order_id:
                    recorder.set_until(OrderCondition(str(order_id)))
                continue
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                recorder.finish("window")
                return
            if now >= next_ping:
                await ws.send(next_frame("ping"))
                next_ping = now + self.spec.ping_interval
            if now - ws.last_data >= idle:
                raise _Idle
            if recorder.log.pending:
                recorder.commit(force=False)  # a segment that is due (object stores)
            wait = min(next_ping - now, idle - (now - ws.last_data))
            if waiting_callback or (self._callback is not None and not self._callback_seen):
                wait = min(wait, 0.05)
            if recorder.log.pending:
                wait = min(wait, 0.5)
            if remaining is not None:
                wait = min(wait, remaining)
            await asyncio.sleep(max(wait, 0.001))

    def _handle(self, data: bytes, binary: bool, recorder: SubscriptionRecorder) -> None:
        """One whole message as received (a text message's UTF-8 bytes, or a binary message)."""
        if not binary:  # the hot path: a push in a text frame, written as received
            try:
                frame = self._loads(data)
            except ValueError:  # not UTF-8 JSON as it stands (a BOM, NaN, ...): the general path below
                frame = None
            if type(frame) is dict:
                code = frame.get("msgCode")
                if type(code) is str and code not in CONTROL_CODES and b"\n" not in data and b"\r" not in data:
                    recorder.stage_line(frame, data)
                    return
        text = decode_frame(data)
        frame = None if text is None else parse_server_frame(text)
        if frame is not None and text is not None:
            code = frame.get("msgCode")
            if type(code) is str and code not in CONTROL_CODES:
                recorder.stage(frame, text)  # a push that needed decoding or re-encoding
                return
        if frame is None or text is None:
            pnl = parse_pnl_frame(text) if text is not None and text[:2] in PNL_PREFIXES else None
            if pnl is not None:
                recorder.record_pnl(pnl)
                return
            recorder.malformed += 1
            if recorder.malformed in (1, 10, 100, 1000):
                self.log.warning("Message WebSocket: skipped %d malformed frame(s).", recorder.malformed)
            return
        end = session_end(frame)
        if end is not None:
            if end.refused:
                raise MultiMarketsMsgAuthError(_auth_message(end.cause))
            if end.auth:
                raise MultiMarketsMsgAuthError(
                    f"The message WebSocket session ended: {end.cause}. The msg token can no longer be used: fetch a "
                    "new one with GetMsgTokenOperator (getMsgPushToken) and subscribe again."
                )
            raise MultiMarketsMsgError(f"The message WebSocket session ended: {end.cause}.")
        if is_push(frame):
            if frame.get("msgCode") == NOTICE_CODE:
                kind = notice_update_type(frame)
                name = NOTICE_UPDATE_TYPES.get(kind, "") if kind is not None else ""
                self.log.info("Message WebSocket notice: updateType %s %s.", kind, name)
            recorder.stage(frame, text)
        elif frame.get("msgCode") == "subscribe_success":
            self.log.info("Message WebSocket: login accepted (subscribe_success).")
        elif frame.get("msgCode") == "subscribe_asset" and ack_code(frame) == "0":
            self._subscribe_acked = True
        elif frame.get("msgCode") == "subscribe_asset":
            content = frame.get("content") if isinstance(frame.get("content"), dict) else {}
            raise MultiMarketsMsgError(
                f"The message WebSocket refused subscribe_asset for tradeTypes {self.spec.trade_types} (code "
                f"{ack_code(frame)}: {str((content or {}).get('msg', ''))[:200]}). Nothing was placed. Check the "
                "tradeTypes and the apiKey's permissions."
            )
        elif frame.get("msgCode") == "error" or ack_code(frame) not in (None, "0"):
            self.log.warning("Message WebSocket answered %s: %s", frame.get("msgCode"), frame.get("content"))

    async def _goodbye(self, ws: Any, next_frame: Any) -> None:
        """Best effort: cancel the subscription and log out before closing."""
        try:
            await ws.send(next_frame("cancel_subscribe_asset", {"tradeTypes": self.spec.trade_types}))
            await ws.send(next_frame("logout"))
        except Exception:
            self.log.debug("Message WebSocket: could not send cancel/logout (connection already closed).")

    async def close(self) -> None:
        """Close the connection and the push log (the trigger's ``cleanup``)."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        self._close_log()


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
        try:
            write_atomic(self.path, json.dumps(data))
        except OSError:
            pass  # the counters are informative; the push log is what counts


def _int(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0
