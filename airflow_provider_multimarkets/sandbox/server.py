"""The sandbox's web side: the Open API gateway and the message WebSocket on one aiohttp port.

``Sandbox`` runs it on a background thread (tests, demo); the ``multimarkets-sandbox`` command
runs it in the foreground.

Message WebSocket acknowledgements are not documented. The sandbox answers ``login`` as the
vendor's H5 client expects: ``subscribe_success``, or ``subscribe_fail`` (``content.code``
``GGATEWAY_CODE_005``) followed by a close with code 4001. Outside its strict mode it also
answers ``subscribe_asset``, ``cancel_subscribe_asset`` and ``ping`` with a frame of the same
``msgCode`` (``pong`` for ``ping``) whose ``content.code`` is ``"0"``, echoing the client's
``seqId`` and ``trace``. In strict mode (``SandboxConfig.strict_frames``, ``--strict``) it sends
only what the docs and the H5 client show: no ``pong``, no answer to ``subscribe_asset``,
``cancel_subscribe_asset`` or ``logout``, no ``error`` frames, and every close with code 1000.

The other frames the vendor client handles are sent on request (``POST /_sandbox/ws/send``):
``notice`` (``updateType`` 0-6, 4 = log out; queued like a push, in order, with a ``seqId``),
``disconnect`` (logged in elsewhere) and ``UserForceLogoutRet`` (each followed by a close), and
the ``f(...)``/``g(...)`` profit-and-loss text frames, which ``pnl_interval`` also sends on a timer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from airflow_provider_multimarkets.sandbox import data
from airflow_provider_multimarkets.sandbox.faults import HttpFault
from airflow_provider_multimarkets.sandbox.java_sign import CHARSETS
from airflow_provider_multimarkets.sandbox.keys import generate_key_pair
from airflow_provider_multimarkets.sandbox.state import PAGING_FAULTS, MsgStream, SandboxConfig, SandboxState

log = logging.getLogger("multimarkets.sandbox")

ACK_TYPES = ("login", "subscribe_asset", "cancel_subscribe_asset", "logout")
WS_CLOSE_AUTH = 4001
WS_CLOSE_PING_TIMEOUT = 4008


def _json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class SandboxApp:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.ws_connections: set[web.WebSocketResponse] = set()
        self.logged_in: set[_Connection] = set()
        self.ws_stats = {
            "connections": 0,
            "logins": 0,
            "refused": 0,
            "pings": 0,
            "pushed": 0,
            "drops": 0,
            "ping_timeouts": 0,
            "pnl_frames": 0,
            "session_ends": 0,
        }
        self._stream_task: asyncio.Task[None] | None = None
        #: the last client frames received on the message WebSocket (for tests and the request log)
        self.client_frames: deque[dict[str, Any]] = deque(maxlen=1000)

    def build(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        # two documented bizTypes contain "/" (thirdExt/randomKey): the path carries them as they are
        app.router.add_post("/openapi-c/global/{biz_type:.+}", self.http)
        app.router.add_get("/openapi-c/openMsg/{app_id}", self.ws)
        app.router.add_get("/healthz", self.health)
        # test-only controls and views of the simulator (never part of the real gateway)
        app.router.add_get("/_sandbox/calls", self.admin_calls)
        app.router.add_post("/_sandbox/ban", self.admin_ban)
        app.router.add_get("/_sandbox/orders", self.admin_orders)
        app.router.add_get("/_sandbox/delivered", self.admin_delivered)
        app.router.add_post("/_sandbox/fault", self.admin_fault)
        app.router.add_post("/_sandbox/config", self.admin_config)
        app.router.add_post("/_sandbox/ws/send", self.admin_ws_send)
        app.router.add_post("/_sandbox/tokens/expire", self.admin_expire_tokens)
        app.router.add_post("/_sandbox/discrepancy", self.admin_discrepancy)
        app.on_startup.append(self._start_stream)
        app.on_shutdown.append(self._shutdown)
        return app

    def close_code(self, code: int) -> int:
        """The close code to use: ``code``, or 1000 in strict mode (no source documents 4001/4008)."""
        return 1000 if self.state.config.strict_frames else code

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, **self.state.counts(), "ws": self.ws_stats})

    async def admin_calls(self, request: web.Request) -> web.Response:
        since = float(request.query.get("since", "0") or 0)
        return web.json_response({"calls": self.state.calls_since(since), "now": self.state.clock()})

    async def admin_ban(self, request: web.Request) -> web.Response:
        seconds = float(request.query.get("seconds", "300"))
        until = self.state.force_ban(seconds)
        log.warning("every apiKey banned for %.0f s by request (until %.3f)", seconds, until)
        return web.json_response({"banned_until": until})

    async def admin_orders(self, request: web.Request) -> web.Response:
        with self.state.lock:
            orders = [
                {
                    "orderId": o["response"]["orderId"],
                    "thirdPartyOrder": o.get("third_party_order"),
                    "created_ms": o.get("created_ms"),
                }
                for o in self.state.orders
            ]
        return web.json_response({"orders": orders})

    async def admin_delivered(self, request: web.Request) -> web.Response:
        """Per msg stream: the seqIds written to its connections (the last 20,000) and the total."""
        with self.state.lock:
            streams = [
                {
                    "token_tail": s.token[-6:],
                    "connections": s.connections,
                    "attached": s.attached,
                    "expired": s.expired,
                    "trade_types": sorted(s.trade_types),
                    "pushed": s.pushed,
                    "seq_ids": [frame["seqId"] for _, frame in s.delivered],
                    # written before the server's own close frame (the last close of the stream)
                    "seq_ids_before_close": [
                        frame["seqId"] for t, frame in s.delivered if s.closed_at is None or t <= s.closed_at
                    ],
                }
                for s in self.state.streams.values()
            ]
        return web.json_response({"streams": streams})

    async def admin_fault(self, request: web.Request) -> web.Response:
        """Script the next answers of a bizType: ``{"biz_type": ..., <HttpFault fields>}``."""
        spec = await request.json()
        biz_type = spec.pop("biz_type")
        self.state.faults.add(biz_type, HttpFault(**spec))
        return web.json_response({"ok": True})

    async def admin_config(self, request: web.Request) -> web.Response:
        """Change knobs of a running sandbox: ``order_push_delay``, ``refuse_subscribe``, ws faults."""
        spec = await request.json()
        cfg = self.state.config
        for name in ("order_push_delay", "pnl_interval"):
            if name in spec:
                setattr(cfg, name, float(spec[name]))
        if "strict_frames" in spec:
            cfg.strict_frames = bool(spec["strict_frames"])
        for name, choices in (
            ("paging_fault", PAGING_FAULTS),
            ("account_list", data.ACCOUNT_LIST_SHAPES),
            ("sign_charset", tuple(CHARSETS)),
        ):
            if name in spec:
                if spec[name] not in choices:
                    raise web.HTTPBadRequest(text=f"{name} must be one of {choices}")
                setattr(cfg, name, spec[name])
        if "check_version_group" in spec:
            cfg.check_version_group = bool(spec["check_version_group"])
        ws = self.state.faults.ws
        for name in ("drop_after", "refuse_login", "refuse_subscribe", "drop_on_order"):
            if name in spec:
                setattr(ws, name, spec[name])
        return web.json_response({"ok": True})

    async def admin_discrepancy(self, request: web.Request) -> web.Response:
        """Seed a disagreement between orders and trade records: ``{"kind": "missing_trade_record",
        "order_id": 123}`` or ``{"kind": "unmatched_trade_record"}`` (company: the sandbox's)."""
        spec = await request.json()
        companies = {r.company_id for r in self.state.keys.values()}
        try:
            seeded = [self.state.seed_discrepancy(spec.get("kind", ""), c, spec.get("order_id")) for c in companies]
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response({"seeded": seeded})

    async def admin_expire_tokens(self, request: web.Request) -> web.Response:
        """Expire every msg token issued so far, as the platform does when a token's time is up: its
        connections are closed (4001) and a login with it is refused (``subscribe_fail``)."""
        with self.state.lock:
            expired = self.state.expire_tokens()
        targets = [c for c in list(self.logged_in) if c.stream is not None and c.stream.token in expired]
        for conn in targets:
            await conn.close(code=self.close_code(WS_CLOSE_AUTH), message=b"msg token expired")
        return web.json_response({"expired": len(expired), "closed": len(targets)})

    async def admin_ws_send(self, request: web.Request) -> web.Response:
        """Send a vendor frame kind to the logged-in message connections.

        ``{"kind": "notice", "updateType": 4, "tradeType": "2", "show": 0}``: queued on every stream
        subscribed to ``tradeType``, like a push. ``{"kind": "disconnect"}`` or
        ``{"kind": "force_logout"}``: sent to every logged-in connection, which is then closed.
        ``{"kind": "pnl"}``: one profit-and-loss text frame per subscribed trade type 1 or 2.
        """
        spec = await request.json()
        kind = spec.get("kind")
        if kind == "notice":
            trade_type = str(spec.get("tradeType", "2"))
            content = {
                "tradeType": int(trade_type),
                "updateType": spec.get("updateType", 1),
                "show": spec.get("show", 0),
            }
            companies = {c.stream.company_id for c in self.logged_in if c.stream is not None}
            sent = sum(self.state.publish(company, trade_type, "notice", content) for company in companies)
            return web.json_response({"sent": sent})
        if kind in ("disconnect", "force_logout"):
            code = "disconnect" if kind == "disconnect" else "UserForceLogoutRet"
            targets = list(self.logged_in)
            for conn in targets:
                await conn.end_session(code)
            return web.json_response({"sent": len(targets)})
        if kind == "pnl":
            sent = 0
            for conn in list(self.logged_in):
                sent += await conn.send_pnl()
            return web.json_response({"sent": sent})
        raise web.HTTPBadRequest(text=f"unknown kind {kind!r}: notice, disconnect, force_logout or pnl")

    # ---- HTTP -------------------------------------------------------------------------------

    async def http(self, request: web.Request) -> web.StreamResponse:
        biz_type = request.match_info["biz_type"]
        raw = await request.read()
        with self.state.lock:
            self.state.received[biz_type] += 1
        ws_faults = self.state.faults.ws
        if ws_faults.drop_on_order > 0 and biz_type.endswith(".addMarketOrder"):
            ws_faults.drop_on_order -= 1
            for ws in list(self.ws_connections):  # the message socket drops while the order is in flight
                if ws._req is not None and ws._req.transport is not None:
                    ws._req.transport.abort()
            self.ws_stats["drops"] += 1
        fault = self.state.faults.take(biz_type)
        if fault is not None and not fault.after_processing:
            return await self._apply_fault(request, fault, None, biz_type)
        answer = await self._answer(biz_type, dict(request.headers), raw)
        code = answer.envelope.get("code") if answer.envelope else ""
        log.info(
            "POST %s -> HTTP %s code=%s trace=%s company=%s",
            biz_type,
            answer.status,
            code,
            request.headers.get("trace", "-"),
            request.headers.get("companyId", "-"),
        )
        if fault is not None:
            return await self._apply_fault(request, fault, answer.envelope, biz_type)
        return web.Response(
            status=answer.status, text=_json(answer.envelope), content_type="application/json", headers=answer.headers
        )

    async def _answer(self, biz_type: str, headers: dict[str, str], raw: bytes) -> Any:
        """The gateway's checks, the idempotency cache, a test's hold on the bizType, the interface.
        While a request waits on a hold, others are served (a duplicate of it gets GATEWAY_CODE_018)."""
        state = self.state
        answer, admitted = state.admit(biz_type, headers, raw)
        if admitted is None:
            return answer
        cached = state.claim(admitted)
        if cached is not None:
            return cached
        hold = state.holds.get(biz_type)
        if hold is not None and not hold.is_set():
            loop = asyncio.get_running_loop()
            released = await loop.run_in_executor(None, hold.wait, state.config.hold_timeout)
            if not released:
                log.warning("POST %s held longer than %.0f s: answered anyway", biz_type, state.config.hold_timeout)
        return state.serve(admitted)

    async def _apply_fault(
        self, request: web.Request, fault: HttpFault, envelope: dict[str, Any] | None, biz_type: str
    ) -> web.StreamResponse:
        log.info("POST %s -> injected fault %s", biz_type, fault)
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        if fault.html:
            return web.Response(
                status=fault.status or 502,
                text="<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>",
                content_type="text/html",
                headers=headers,
            )
        if fault.empty:
            return web.Response(status=fault.status or 200, body=b"", headers=headers)
        if fault.wrong_type:
            return web.Response(
                status=fault.status or 200, text='["not","an","envelope"]', content_type="application/json"
            )
        trace = request.headers.get("trace", "")
        if fault.envelope:
            body = self.state.envelope(trace, data_=biz_type, code=fault.envelope, msg=fault.msg)
            return web.Response(
                status=fault.status or 200, text=_json(body), content_type="application/json", headers=headers
            )
        if fault.truncate:
            full = _json(envelope or self.state.envelope(trace, data_="x" * 40))
            return web.Response(
                status=fault.status or 200, text=full[: len(full) // 2], content_type="application/json"
            )
        if fault.status is not None:
            if fault.status in (502, 503, 504):
                return web.Response(status=fault.status, text=f"{fault.status} injected", headers=headers)
            error = {"code": str(fault.status), "msg": fault.msg}
            return web.Response(
                status=fault.status, text=_json(error), content_type="application/json", headers=headers
            )
        if envelope is not None:  # a pure delay after processing
            return web.Response(status=200, text=_json(envelope), content_type="application/json")
        return web.Response(status=200, text=_json(self.state.envelope(trace)), content_type="application/json")

    # ---- message WebSocket ----------------------------------------------------------------------

    async def ws(self, request: web.Request) -> web.StreamResponse:
        cfg = self.state.config
        if cfg.require_app_id and request.match_info["app_id"] != cfg.require_app_id:
            raise web.HTTPNotFound(text="unknown appId")
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        self.ws_connections.add(ws)
        self.ws_stats["connections"] += 1
        conn = _Connection(self, ws)
        try:
            await conn.run()
        finally:
            self.ws_connections.discard(ws)
            conn.detach()
        return ws

    async def _start_stream(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        if self.state.config.trade_stream_rate > 0:
            self._stream_task = asyncio.create_task(self._trade_stream())

    async def _shutdown(self, app: web.Application) -> None:
        if self._stream_task:
            self._stream_task.cancel()
        for ws in list(self.ws_connections):
            await ws.close(code=1001, message=b"server shutdown")

    async def _trade_stream(self) -> None:
        """Synthetic trade pushes at ``trade_stream_rate`` per second to every subscribed stream."""
        cfg = self.state.config
        tick = 0.05 if cfg.trade_stream_rate < 2000 else 0.01
        started = time.monotonic()
        sent = 0
        while cfg.trade_stream_limit is None or sent < cfg.trade_stream_limit:
            await asyncio.sleep(tick)
            due = int((time.monotonic() - started) * cfg.trade_stream_rate) - sent
            if due <= 0:
                continue
            if cfg.trade_stream_limit is not None:
                due = min(due, cfg.trade_stream_limit - sent)
            with self.state.lock:
                only = cfg.trade_stream_types
                targets = {
                    (s.company_id, tt)
                    for s in self.state.streams.values()
                    for tt in s.trade_types
                    if only is None or tt in only
                }
                for _ in range(due):
                    for company_id, trade_type in targets:
                        self.state.publish(
                            company_id, trade_type, "trade", self.state.synthetic_trade(company_id, trade_type)
                        )
            sent += due


class _Connection:
    """One message WebSocket connection: reader loop, ping watchdog, writer draining the stream."""

    def __init__(self, app: SandboxApp, ws: web.WebSocketResponse) -> None:
        self.app = app
        self.state = app.state
        self.ws = ws
        self.stream: MsgStream | None = None
        self.token: str | None = None
        self.wake = asyncio.Event()
        self.pushed = 0
        self.writer: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()
        self.drop_armed = False
        self.closing = False
        self.burst: asyncio.Task[None] | None = None
        self.pnl: asyncio.Task[None] | None = None

    def detach(self) -> None:
        self.app.logged_in.discard(self)
        if self.pnl:
            self.pnl.cancel()
        if self.writer:
            self.writer.cancel()
        if self.burst:
            self.burst.cancel()
        if self.stream is not None and self.stream.wake == self._wake:
            self.stream.wake = None
            self.stream.attached = False
            self.stream.detached_at = time.monotonic()

    async def close(self, *, code: int, message: bytes) -> None:
        """Close the connection: from here on the writer sends nothing more, so every push counted
        as delivered went out before the close frame (a push after it would be discarded unread)."""
        self.closing = True
        if self.stream is not None:
            self.stream.closed_at = time.monotonic()
        await self.ws.close(code=code, message=message)

    def _wake(self) -> None:
        # publish() may run on another thread (tests placing orders through the state)
        self.loop.call_soon_threadsafe(self.wake.set)

    async def send(self, obj: Any) -> None:
        if not self.ws.closed:
            await self.ws.send_str(_json(obj))

    async def answer(self, obj: Any) -> None:
        """Send an answer no source documents (``pong``, an ack, an ``error``): not in strict mode."""
        if not self.state.config.strict_frames:
            await self.send(obj)

    def ack(
        self, frame: dict[str, Any], msg_code: str, code: str = "0", msg: str = "Success", **extra: Any
    ) -> dict[str, Any]:
        return {
            "msgCode": msg_code,
            "timestamp": int(self.state.clock() * 1000),
            "trace": frame.get("trace", ""),
            "seqId": frame.get("seqId"),
            "content": {"code": code, "msg": msg, **extra},
        }

    async def send_pnl(self) -> int:
        """One profit-and-loss text frame per subscribed trade type 1 or 2; how many were sent."""
        stream = self.stream
        if stream is None or self.ws.closed:
            return 0
        sent = 0
        for trade_type in sorted(stream.trade_types & {"1", "2"}):
            text = self.state.pnl_frame(stream.company_id, trade_type)
            if text is not None and not self.ws.closed:
                await self.ws.send_str(text)
                sent += 1
        self.app.ws_stats["pnl_frames"] += sent
        return sent

    async def pnl_loop(self, interval: float) -> None:
        while not self.ws.closed:
            await asyncio.sleep(interval)
            await self.send_pnl()

    async def end_session(self, msg_code: str) -> None:
        """The platform ends this session (``disconnect``: logged in elsewhere; ``UserForceLogoutRet``)."""
        self.app.ws_stats["session_ends"] += 1
        await self.send(
            {
                "msgCode": msg_code,
                "timestamp": int(self.state.clock() * 1000),
                "trace": f"x-{int(self.state.clock() * 1000)}-{msg_code}",
                "content": {"code": "0", "msg": "logged in elsewhere" if msg_code == "disconnect" else "logged out"},
            }
        )
        await self.close(code=1000, message=msg_code.encode())

    async def run(self) -> None:
        cfg = self.state.config
        last_ping = time.monotonic()
        while True:
            remaining = cfg.ping_timeout - (time.monotonic() - last_ping)
            if remaining <= 0:
                self.app.ws_stats["ping_timeouts"] += 1
                await self.close(code=self.app.close_code(WS_CLOSE_PING_TIMEOUT), message=b"no ping within timeout")
                return
            try:
                msg = await self.ws.receive(timeout=remaining)
            except asyncio.TimeoutError:
                continue
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.TEXT:
                continue
            while self.state.faults.ws.silent and not self.ws.closed:
                await asyncio.sleep(0.05)  # a hung server: frames wait, unanswered, until it recovers
            try:
                frame = json.loads(msg.data)
                head = frame["head"]
                msg_type = head["msgType"]
            except (ValueError, KeyError, TypeError):
                await self.answer(
                    {
                        "msgCode": "error",
                        "timestamp": int(self.state.clock() * 1000),
                        "content": {"code": "GGATEWAY_CODE_015", "msg": "illegal request params"},
                    }
                )
                continue
            self.app.client_frames.append(frame)
            log.info("WS %s seqId=%s", msg_type, frame.get("seqId"))
            if msg_type == "ping":
                last_ping = time.monotonic()
                self.app.ws_stats["pings"] += 1
                await self.answer(self.ack(frame, "pong"))
                continue
            if msg_type == "login":
                if not await self.login(frame, head):
                    return
                continue
            if self.stream is None or head.get("token") != self.token:
                await self.answer(
                    self.ack(frame, "error", "GGATEWAY_CODE_001", "not logged in: send login with the msg token first")
                )
                continue
            if msg_type == "subscribe_asset" and self.state.faults.ws.refuse_subscribe:
                await self.answer(self.ack(frame, msg_type, "GGATEWAY_CODE_019", "no access rights"))
                continue
            if msg_type in ("subscribe_asset", "cancel_subscribe_asset"):
                types = str((frame.get("data") or {}).get("tradeTypes", ""))
                wanted = {t.strip() for t in types.split(",") if t.strip()}
                if not wanted or not wanted <= {"1", "2", "5", "6"}:
                    await self.answer(self.ack(frame, msg_type, "CFDWBWE000007", f"tradeTypes {types!r} is not valid"))
                    continue
                with self.state.lock:
                    if msg_type == "subscribe_asset":
                        self.stream.trade_types |= wanted
                    else:
                        self.stream.trade_types -= wanted
                await self.answer(self.ack(frame, msg_type, tradeTypes=",".join(sorted(self.stream.trade_types))))
                if msg_type == "subscribe_asset" and cfg.pnl_interval > 0 and self.pnl is None:
                    self.pnl = asyncio.create_task(self.pnl_loop(cfg.pnl_interval))
                if msg_type == "subscribe_asset" and cfg.burst_after_subscribe:
                    self.burst = asyncio.create_task(self.send_burst(cfg.burst_after_subscribe, sorted(wanted)[0]))
            elif msg_type == "logout":
                await self.answer(self.ack(frame, "logout"))
                await self.close(code=1000, message=b"logout")
                return
            else:
                await self.answer(self.ack(frame, "error", "GGATEWAY_CODE_016", f"msgType {msg_type!r} not supported"))

    async def login(self, frame: dict[str, Any], head: dict[str, Any]) -> bool:
        token = str(head.get("token") or "")
        stream = None if self.state.faults.ws.refuse_login else self.state.stream_for_token(token)
        if stream is None:
            self.app.ws_stats["refused"] += 1
            await self.send(
                self.ack(
                    frame,
                    "subscribe_fail",
                    "GGATEWAY_CODE_005",
                    "msg token invalid or expired: fetch a new one with getMsgPushToken",
                )
            )
            await self.close(code=self.app.close_code(WS_CLOSE_AUTH), message=b"login refused")
            return False
        self.app.ws_stats["logins"] += 1
        with self.state.lock:
            resumed = stream.connections > 0
            stream.connections += 1
            stream.attached = True
            stream.wake = self._wake  # a previous connection's writer stops: it is superseded
            if resumed:
                self.state.resume(stream)
        self.stream, self.token = stream, token
        self.app.logged_in.add(self)
        await self.send(self.ack(frame, "subscribe_success"))
        faults = self.state.faults.ws
        if faults.drop_after is not None and (faults.drop_times is None or faults.drops_done < faults.drop_times):
            faults.drops_done += 1
            self.drop_armed = True
        self.writer = asyncio.create_task(self.write_loop())
        self.wake.set()
        return True

    async def send_burst(self, count: int, trade_type: str) -> None:
        """Benchmark mode: ``count`` trade pushes from one pre-rendered template, as fast as possible."""
        stream = self.stream
        assert stream is not None
        content = self.state.synthetic_trade(stream.company_id, trade_type)
        template = _json({"msgCode": "trade", "timestamp": 0, "trace": "@T@", "seqId": 0, "content": content})
        head, _, tail = template.partition('"timestamp":0,"trace":"@T@","seqId":0')
        started = time.monotonic()
        for _ in range(count):
            if self.ws.closed:
                return
            seq = stream.next_seq
            stream.next_seq += 1
            ms = int(time.time() * 1000)
            await self.ws.send_str(f'{head}"timestamp":{ms},"trace":"x-{ms}-{seq}_burst","seqId":{seq}{tail}')
        elapsed = time.monotonic() - started
        self.app.ws_stats["burst_rate"] = int(count / elapsed) if elapsed else 0
        self.app.ws_stats["pushed"] += count

    async def write_loop(self) -> None:
        faults = self.state.faults.ws
        stream = self.stream
        assert stream is not None
        while not self.ws.closed:
            await self.wake.wait()
            self.wake.clear()
            while stream.outbox and not self.ws.closed and not self.closing:
                if faults.silent:
                    break
                with self.state.lock:
                    if stream.wake != self._wake:
                        return  # superseded by a newer connection of the same token
                    frame = stream.outbox.popleft()
                if faults.malformed_every and (self.pushed + 1) % faults.malformed_every == 0:
                    await self.ws.send_str('{"msgCode":"trade","content":')
                try:
                    await self.ws.send_str(_json(frame))
                except BaseException:  # cancelled (the connection ended) or failed before it went out
                    with self.state.lock:
                        stream.outbox.appendleft(frame)  # not delivered: kept for the stream's next connection
                    raise
                with self.state.lock:  # delivered = handed to the socket, in order, before any close frame
                    stream.delivered.append((time.monotonic(), frame))
                self.pushed += 1
                stream.pushed += 1
                self.app.ws_stats["pushed"] += 1
                if self.drop_armed and faults.drop_after is not None and self.pushed >= faults.drop_after:
                    self.app.ws_stats["drops"] += 1
                    self.drop_armed = False
                    if self.ws._req is not None and self.ws._req.transport is not None:
                        self.ws._req.transport.abort()  # an abrupt drop, no close frame
                    return
                if stream.pushed % 256 == 0:
                    await asyncio.sleep(0)


class Sandbox:
    """A sandbox on a background thread, on 127.0.0.1 and a free port (or the one given).

    >>> with Sandbox() as sb:
    ...     os.environ["AIRFLOW_CONN_MULTIMARKETS_DEFAULT"] = sb.connection_json()
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        private_key: str | None = None,
        public_key: str | None = None,
        company_id: int = data.COMPANY_ID,
        clock: Any = None,
    ) -> None:
        import uuid

        self.state = SandboxState(config, **({"clock": clock} if clock else {}))
        if private_key is None or public_key is None:
            private_key, public_key = generate_key_pair()
        self.api_key = api_key or uuid.uuid4().hex
        self.private_key = private_key
        self.public_key = public_key
        self.company_id = company_id
        self.state.register_key(self.api_key, public_key, company_id)
        self.host = host
        self.port = port
        self.app = SandboxApp(self.state)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/openapi-c"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/openapi-c/openMsg/{{appId}}"

    def connection(self, **extra: Any) -> dict[str, Any]:
        """The Airflow connection (JSON form) that points at this sandbox.

        The port is in its own field, as the connection form has it: Airflow 3.3.2's Test button sends
        ``port`` 0 for a connection without one and refuses a host that carries it ("Bad Request").
        """
        return {
            "conn_type": "multimarkets",
            "host": f"http://{self.host}/openapi-c",
            "port": self.port,
            "login": self.api_key,
            "password": self.private_key,
            "extra": {
                "company_id": self.company_id,
                "lang": "en-US",
                "msg_ws_url": self.ws_url,  # its {appId} defaults to the company id
                **extra,
            },
        }

    def connection_json(self, **extra: Any) -> str:
        return json.dumps(self.connection(**extra))

    def add_fault(self, biz_type: str, **kwargs: Any) -> HttpFault:
        return self.state.faults.add(biz_type, HttpFault(**kwargs))

    def hold(self, biz_type: str) -> threading.Event:
        """Hold every request of ``biz_type`` after the gateway admitted it, until the returned event
        is set (at most ``config.hold_timeout``): a request still being processed, for concurrency
        tests (``state.idempotency.wait_in_flight()`` tells when one is)."""
        event = threading.Event()
        self.state.holds[biz_type] = event
        return event

    def start(self) -> Sandbox:
        self._thread = threading.Thread(target=self._run, name="multimarkets-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("sandbox did not start within 20 s")
        if self._error is not None:
            raise RuntimeError(f"sandbox failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._cleanup())
        loop.close()

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.app.build(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server: Any = site._server
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def call_soon(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
