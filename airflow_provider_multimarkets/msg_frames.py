"""Message WebSocket framing and bookkeeping (pure logic: no Airflow, no network).

Client frames follow the documented shape (``head``, ``device``, ``seqId``, ``trace``, optional
``data``). Server pushes carry ``msgCode``, ``timestamp``, ``trace``, ``seqId`` and ``content``.

Duplicates: after a reconnect a server may send again the pushes it was delivering when the
connection dropped. The push log recognises them by the push's content identity (see
:mod:`.push_log`), never by ``seqId``/``trace``, which are per connection.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_multimarkets.push_log import PushLog

CLIENT_MSG_TYPES = ("login", "subscribe_asset", "cancel_subscribe_asset", "ping", "logout")
#: Frames that answer a client frame rather than push data (``pong`` answers ``ping``).
ACK_CODES = frozenset({"login", "subscribe_asset", "cancel_subscribe_asset", "logout", "pong", "error"})
#: Pushes that end the session on the server side (vendor client: forced logout).
FORCED_LOGOUT_CODES = frozenset({"UserForceLogoutRet"})
#: ``paramMap.orderStatus`` values after which an order no longer changes (§8.4).
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
    """One client frame as documented (§8.2), compact JSON."""
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
        frame = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return frame if isinstance(frame, dict) else None


def ack_code(frame: dict[str, Any]) -> str | None:
    content = frame.get("content")
    if isinstance(content, dict) and "code" in content:
        return str(content["code"])
    return None


def is_auth_failure(frame: dict[str, Any]) -> bool:
    """A refused login, or a forced logout."""
    code = frame.get("msgCode")
    if type(code) is not str:
        return False
    if code in FORCED_LOGOUT_CODES:
        return True
    return code == "login" and ack_code(frame) not in (None, "0")


def is_push(frame: dict[str, Any]) -> bool:
    """Not an answer to a client frame. A ``msgCode`` that is not a string is kept as a push (data)."""
    code = frame.get("msgCode")
    return type(code) is not str or code not in ACK_CODES


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
    """

    log: PushLog = field(default_factory=lambda: PushLog(None))
    max_messages: int | None = None
    until: OrderCondition | None = None
    inline_limit: int = 0
    keep_recent: bool = False
    malformed: int = 0
    reconnects: int = 0
    restarts: int = 0
    connections: int = 0
    last_error: str | None = None
    inline: list[dict[str, Any]] = field(default_factory=list)
    until_frame: dict[str, Any] | None = None
    stop_reason: str | None = None
    _recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=256))

    def __post_init__(self) -> None:
        self._attach()

    def _attach(self) -> None:
        """Ask the log for each push only when something looks at pushes one by one (else: counts)."""
        wanted = self.until is not None or self.inline_limit > 0 or self.keep_recent
        self.log.on_push = self._on_push if wanted else None

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
        staged = self.log.stage(frame, text)
        if staged and self.max_messages is not None and self.messages + self.log.pending >= self.max_messages:
            self.commit(force=True)
        return staged

    def commit(self, *, force: bool = True) -> None:
        """Write the staged pushes to the log; they count from here on (``force=False``: when the log is due)."""
        self.log.commit(force=force)
        self.check_limits()

    def _on_push(self, frame: dict[str, Any]) -> None:
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
            "reconnects": self.reconnects,
            "restarts": self.restarts,
            "connections": self.connections,
            "stop_reason": self.stop_reason,
            **tally,
            "output_path": output_path,
        }
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
    yield f"duplicates dropped: {summary['duplicates_dropped']}  malformed frames: {summary['malformed_frames']}"
    for title, key in (("msgCode", "by_msg_code"), ("bizType", "by_biz_type"), ("orderStatus", "by_order_status")):
        counts = summary.get(key) or {}
        if counts:
            parts = ", ".join(
                f"{ORDER_STATUS_NAMES.get(k, k) if key == 'by_order_status' else k}={v}"
                for k, v in sorted(counts.items())
            )
            yield f"{title}: {parts}"
