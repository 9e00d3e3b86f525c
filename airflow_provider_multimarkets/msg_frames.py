"""Message WebSocket framing and bookkeeping (pure logic: no Airflow, no network).

Client frames follow the documented shape (``head``, ``device``, ``seqId``, ``trace``, optional
``data``). Server pushes carry ``msgCode``, ``timestamp``, ``trace``, ``seqId`` and ``content``.

Frame kinds, as the vendor's own H5 socket client handles them (``CTradeExchange/trade-h5``,
``src/plugins/socket/msgSocketEvent.js`` and ``socket.js``; the Open API pages document only
``trade``):

* ``subscribe_success`` answers ``login`` (logged in); ``subscribe_fail`` refuses it (the token is
  invalid or expired). Neither is a push.
* ``notice``: ``content.updateType`` 0 none, 1 refresh positions, 2 refresh pending orders,
  3 refresh funds, 4 log out (kick-out), 5 positions and orders, 6 funds and orders. A notice is a
  push, except updateType 4, which ends the session.
* ``disconnect``: the session was taken over (logged in elsewhere); ``UserForceLogoutRet``: a
  forced log-out. Both end the session.
* Text frames ``f(...)`` (trade type 1) and ``g(...)`` (trade type 2): account and position
  profit and loss, ``f(profitLoss,occupyMargin,availableMargin,marginRadio,netWorth,balance);
  (positionId,profitLoss[,previewStopPrice]);...``. Snapshots, each superseding the last: they are
  parsed and counted as their own kind (:func:`parse_pnl_frame`), not written as pushes.

Duplicates: after a reconnect a server may send again the pushes it was delivering when the
connection dropped. The push log recognises them by the push's content identity (see
:mod:`.push_log`), never by ``seqId``/``trace``, which are per connection.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_multimarkets.push_log import PushLog, as_line, frame_loads

CLIENT_MSG_TYPES = ("login", "subscribe_asset", "cancel_subscribe_asset", "ping", "logout")
#: Frames that answer a client frame rather than push data (``pong`` answers ``ping``,
#: ``subscribe_success`` answers ``login`` in the vendor client).
ACK_CODES = frozenset(
    {"login", "subscribe_success", "subscribe_asset", "cancel_subscribe_asset", "logout", "pong", "error"}
)
#: The answer to a refused ``login`` (vendor client: the token is no longer valid).
LOGIN_REFUSED_CODE = "subscribe_fail"
#: Frames that end the session on the server side (vendor client: forced logout).
FORCED_LOGOUT_CODES = frozenset({"UserForceLogoutRet"})
#: The session was taken over by another login with the same credentials (vendor client).
DISPLACED_CODE = "disconnect"
NOTICE_CODE = "notice"
NOTICE_UPDATE_TYPES = {
    0: "no action",
    1: "refresh positions",
    2: "refresh pending orders",
    3: "refresh funds",
    4: "log out",
    5: "refresh positions and pending orders",
    6: "refresh funds and pending orders",
}
NOTICE_LOGOUT = 4
#: Every msgCode that is not simply a push: frames with any other msgCode are staged at once (the hot path).
CONTROL_CODES = ACK_CODES | FORCED_LOGOUT_CODES | {LOGIN_REFUSED_CODE, DISPLACED_CODE, NOTICE_CODE}
#: Text frames of account and position profit and loss, by their first two characters: the trade type.
PNL_PREFIXES = {"f(": 1, "g(": 2}
PNL_ACCOUNT_FIELDS = ("profitLoss", "occupyMargin", "availableMargin", "marginRadio", "netWorth", "balance")
#: positions kept of one P&L frame in a summary (the count is always reported)
PNL_MAX_POSITIONS = 100
#: ``paramMap.orderStatus`` values after which an order no longer changes (the Order Process page,
#: https://docs.multimarkets.org/client-api/open-api/order-process).
FINAL_ORDER_STATUSES = frozenset({"2", "4", "5", "6", "7"})
#: ``content.bizType`` values that report a failed order (final as well).
FAILED_ORDER_BIZ_TYPES = frozenset({"POSITION_OPEN_FAIL", "ME_POSITION_LIMIT_FAIL"})
ORDER_STATUS_NAMES = {
    "1": "received",
    "2": "completed",
    "3": "partially completed",
    "4": "cancelled",
    "5": "partially cancelled",
    "6": "rejected",
    "7": "expired",
}


def build_frame(
    msg_type: str,
    token: str,
    seq_id: int,
    *,
    lang: str = "en-US",
    device: int = 1,
    data: dict[str, Any] | None = None,
    now_ms: int | None = None,
) -> str:
    """One client frame as documented (Msg Subscribe page), compact JSON."""
    if msg_type not in CLIENT_MSG_TYPES:
        raise ValueError(f"unknown msgType {msg_type!r}")
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    frame: dict[str, Any] = {
        "head": {"msgType": msg_type, "token": token, "sendTime": ms, "lang": lang},
        "device": device,
        "seqId": seq_id,
        "trace": f"x-{ms}-{seq_id}",
    }
    if data is not None:
        frame["data"] = data
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def parse_server_frame(text: str | bytes) -> dict[str, Any] | None:
    """The frame as a dict, or ``None`` when it is not a JSON object (malformed)."""
    try:
        frame = frame_loads()(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return frame if isinstance(frame, dict) else None


def ack_code(frame: dict[str, Any]) -> str | None:
    content = frame.get("content")
    if isinstance(content, dict) and "code" in content:
        return str(content["code"])
    return None


@dataclass(frozen=True)
class SessionEnd:
    """A frame after which the server no longer serves this session: why, and whether the token is at fault."""

    auth: bool
    cause: str
    refused: bool = False
    """the login itself was refused (the token), rather than a session ended later"""


def _content(frame: dict[str, Any]) -> dict[str, Any]:
    content = frame.get("content")
    return content if isinstance(content, dict) else {}


def _detail(frame: dict[str, Any]) -> str:
    content = _content(frame)
    parts = [str(content[k])[:200] for k in ("code", "msg") if content.get(k) not in (None, "")]
    return f" ({': '.join(parts)})" if parts else ""


def notice_update_type(frame: dict[str, Any]) -> int | None:
    """``content.updateType`` of a ``notice`` as an int (the vendor client compares numbers), else ``None``."""
    value = _content(frame).get("updateType")
    if type(value) is int:
        return value
    if type(value) is str and value.strip().isdigit():
        return int(value)
    return None


def session_end(frame: dict[str, Any]) -> SessionEnd | None:
    """What ends the session, if this frame does: a refused login, a log-out notice, a forced
    log-out, or the session taken over elsewhere. ``None`` for every other frame."""
    code = frame.get("msgCode")
    if type(code) is not str:
        return None
    if code == LOGIN_REFUSED_CODE or (code == "login" and ack_code(frame) not in (None, "0")):
        return SessionEnd(True, f"{code}{_detail(frame)}", refused=True)
    if code in FORCED_LOGOUT_CODES:
        return SessionEnd(True, f"the platform logged this session out: {code}{_detail(frame)}")
    if code == NOTICE_CODE and notice_update_type(frame) == NOTICE_LOGOUT:
        return SessionEnd(True, "the platform logged this session out (notice, updateType 4: log out)")
    if code == DISPLACED_CODE:
        return SessionEnd(
            False,
            "the platform ended this session because the same credentials logged in elsewhere (disconnect). "
            "Another subscription or client uses this msg token: give each subscription its own token "
            "(one GetMsgTokenOperator per subscription)",
        )
    return None


def is_auth_failure(frame: dict[str, Any]) -> bool:
    """A refused login, or a log-out by the platform (the token is no longer usable)."""
    end = session_end(frame)
    return end is not None and end.auth


def is_push(frame: dict[str, Any]) -> bool:
    """Data, not an answer to a client frame nor a frame that ends the session. A ``msgCode`` that is
    not a string is kept as a push (data)."""
    code = frame.get("msgCode")
    if type(code) is not str:
        return True
    if code == NOTICE_CODE:
        return notice_update_type(frame) != NOTICE_LOGOUT
    return code not in CONTROL_CODES


def parse_pnl_frame(text: str) -> dict[str, Any] | None:
    """An ``f(...)``/``g(...)`` profit-and-loss text frame as a dict, or ``None`` when malformed.

    ``{"tradeType": 1, "account": {"profitLoss": "...", ...}, "positions": [{"positionId": "...",
    "profitLoss": "...", "previewStopPrice": "..."}]}``. Values stay strings, as sent (no float
    rounding); ``previewStopPrice`` is present only when sent.
    """
    trade_type = PNL_PREFIXES.get(text[:2])
    if trade_type is None:
        return None
    parts = text.rstrip().rstrip(";").split(";")
    head = parts[0]
    if not head.endswith(")"):
        return None
    values = head[2:-1].split(",")
    if len(values) != len(PNL_ACCOUNT_FIELDS) or not all(_is_number(v) for v in values):
        return None
    positions = []
    for part in parts[1:]:
        part = part.strip()
        if not (part.startswith("(") and part.endswith(")")):
            return None
        fields = part[1:-1].split(",")
        if len(fields) not in (2, 3) or not fields[0].strip() or not all(_is_number(v) for v in fields[1:]):
            return None
        position = {"positionId": fields[0].strip(), "profitLoss": fields[1].strip()}
        if len(fields) == 3:
            position["previewStopPrice"] = fields[2].strip()
        positions.append(position)
    return {
        "tradeType": trade_type,
        "account": {name: value.strip() for name, value in zip(PNL_ACCOUNT_FIELDS, values, strict=True)},
        "positions": positions,
    }


def _is_number(value: str) -> bool:
    value = value.strip()
    if not value or value.lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _param_map(frame: dict[str, Any]) -> dict[str, Any]:
    content = frame.get("content")
    if isinstance(content, dict):
        params = content.get("paramMap")
        if isinstance(params, dict):
            return params
    return {}


@dataclass
class OrderCondition:
    """Stop when the order ``order_id`` reaches a final ``orderStatus`` (or a failed ``bizType``)."""

    order_id: str

    def matches(self, frame: dict[str, Any]) -> bool:
        params = _param_map(frame)
        if str(params.get("orderId")) != self.order_id:
            return False
        content = frame.get("content") if isinstance(frame.get("content"), dict) else {}
        biz_type = str(content.get("bizType", "")) if isinstance(content, dict) else ""
        return str(params.get("orderStatus")) in FINAL_ORDER_STATUSES or biz_type in FAILED_ORDER_BIZ_TYPES


@dataclass
class SubscriptionRecorder:
    """Decides when a subscription stops, on top of its push log (which counts and de-duplicates).

    :param log: the push log (see :mod:`..push_log`): what it holds is what counts.
    :param max_messages: stop once the log holds this many pushes.
    :param until: stop when a push matches this condition.
    :param inline_limit: how many pushes are also kept in memory (returned without a file).
    :param keep_recent: keep the last pushes, so that a condition set later (:meth:`set_until`)
        also matches a push that already arrived.
    :param listener: called with each push once the log counts it (see :meth:`set_listener`).
    """

    log: PushLog = field(default_factory=lambda: PushLog(None))
    max_messages: int | None = None
    until: OrderCondition | None = None
    inline_limit: int = 0
    keep_recent: bool = False
    malformed: int = 0
    pnl_frames: int = 0
    last_pnl: dict[str, dict[str, Any]] = field(default_factory=dict)
    reconnects: int = 0
    restarts: int = 0
    connections: int = 0
    last_error: str | None = None
    inline: list[dict[str, Any]] = field(default_factory=list)
    until_frame: dict[str, Any] | None = None
    stop_reason: str | None = None
    listener: Callable[[dict[str, Any]], None] | None = None
    _recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=256))

    def __post_init__(self) -> None:
        self._attach()

    def _attach(self) -> None:
        """Ask the log for each push only when something looks at pushes one by one (else: counts)."""
        wanted = self.until is not None or self.inline_limit > 0 or self.keep_recent or self.listener is not None
        self.log.on_push = self._on_push if wanted else None

    def set_listener(self, listener: Callable[[dict[str, Any]], None] | None) -> None:
        """From now on, call ``listener`` with every push the log counts: written here, or appended
        by another writer of the same log (not those restored when it was opened before)."""
        self.listener = listener
        self._attach()

    def check_limits(self) -> None:
        """Stop when the log holds ``max_messages`` pushes (after a commit or a restore)."""
        if self.max_messages is not None and self.messages >= self.max_messages:
            self.finish("max_messages")

    @property
    def messages(self) -> int:
        return self.log.tally.messages

    @property
    def duplicates(self) -> int:
        return self.log.duplicates

    def set_until(self, condition: OrderCondition) -> None:
        """Start waiting for ``condition``; a push that already arrived (and matches) counts."""
        self.until = condition
        self._attach()
        for frame in self._recent:
            if condition.matches(frame):
                self.until_frame = frame
                self.finish("until")
                return

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    def finish(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def add(self, frame: dict[str, Any], raw: str | None = None) -> bool:
        """Record a push (written and counted at once); ``False`` when the log already holds it."""
        if not self.stage(frame, raw):
            return False
        self.commit()
        return True

    def stage(self, frame: dict[str, Any], raw: str | None = None) -> bool:
        """Queue a push for the next :meth:`commit` (it counts once written); ``False`` for a duplicate.

        Commits at once when the staged pushes could reach ``max_messages``, so that stop is exact.
        """
        text = raw if raw is not None else json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
        return self.stage_line(frame, as_line(frame, text))

    def stage_line(self, frame: dict[str, Any], line: bytes) -> bool:
        """:meth:`stage` for a push whose log line is ready (:meth:`PushLog.stage_line`): the hot path."""
        log = self.log
        staged = log.stage_line(frame, line)
        limit = self.max_messages
        if staged and limit is not None and log.tally.messages + log.pending >= limit:
            self.commit(force=True)
        return staged

    def commit(self, *, force: bool = True) -> None:
        """Write the staged pushes to the log; they count from here on (``force=False``: when the log is due)."""
        self.log.commit(force=force)
        self.check_limits()

    def record_pnl(self, pnl: dict[str, Any]) -> None:
        """Count a profit-and-loss frame (:func:`parse_pnl_frame`) and keep it as its trade type's latest."""
        self.pnl_frames += 1
        positions = pnl["positions"]
        kept = dict(pnl)
        if len(positions) > PNL_MAX_POSITIONS:
            kept["positions"] = positions[:PNL_MAX_POSITIONS]
        kept["positions_total"] = len(positions)
        self.last_pnl[str(pnl["tradeType"])] = kept

    def _on_push(self, frame: dict[str, Any]) -> None:
        if self.listener is not None:
            self.listener(frame)
        if len(self.inline) < self.inline_limit:
            self.inline.append(frame)
        if self.keep_recent:
            self._recent.append(frame)
        if self.until is not None and self.until.matches(frame):
            self.until_frame = frame
            self.finish("until")
        elif self.max_messages is not None and self.messages >= self.max_messages:
            self.finish("max_messages")

    def summary(self, *, output_path: str | None = None) -> dict[str, Any]:
        tally = self.log.tally.as_dict()
        result: dict[str, Any] = {
            "messages": tally.pop("messages"),
            "duplicates_dropped": self.duplicates,
            "malformed_frames": self.malformed,
            "pnl_frames": self.pnl_frames,
            "reconnects": self.reconnects,
            "restarts": self.restarts,
            "connections": self.connections,
            "stop_reason": self.stop_reason,
            **tally,
            "output_path": output_path,
        }
        if self.last_pnl:
            result["last_pnl"] = {k: self.last_pnl[k] for k in sorted(self.last_pnl)}
        if self.last_error is not None:
            result["last_error"] = self.last_error
        if self.log.unreadable_lines:
            result["unreadable_lines"] = self.log.unreadable_lines
        if self.until is not None:
            result["until"] = {
                "order_id": self.until.order_id,
                "met": self.until_frame is not None,
                "final_message": self.until_frame,
            }
        if output_path is None:
            result["messages_inline"] = list(self.inline)
        return result


def format_summary(summary: dict[str, Any]) -> Iterable[str]:
    """A short table of a summary, for task logs."""
    yield f"messages: {summary['messages']}  stop: {summary['stop_reason']}  reconnects: {summary['reconnects']}"
    yield (
        f"duplicates dropped: {summary['duplicates_dropped']}  malformed frames: {summary['malformed_frames']}"
        f"  P&L frames: {summary.get('pnl_frames', 0)}"
    )
    for title, key in (("msgCode", "by_msg_code"), ("bizType", "by_biz_type"), ("orderStatus", "by_order_status")):
        counts = summary.get(key) or {}
        if counts:
            parts = ", ".join(
                f"{ORDER_STATUS_NAMES.get(k, k) if key == 'by_order_status' else k}={v}"
                for k, v in sorted(counts.items())
            )
            yield f"{title}: {parts}"
