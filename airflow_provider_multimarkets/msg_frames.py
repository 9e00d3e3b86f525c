"""Message WebSocket framing and bookkeeping (pure logic: no Airflow, no network).

Client frames follow the documented shape (``head``, ``device``, ``seqId``, ``trace``, optional
``data``). Server pushes carry ``msgCode``, ``timestamp``, ``trace``, ``seqId`` and ``content``.

Duplicates: after a reconnect a server may send again the pushes it was delivering when the
connection dropped. A push is recognised as already delivered by the pair (``seqId``, ``trace``)
it carries; the last ``dedup_window`` pairs are remembered (bounded memory).
"""

from __future__ import annotations

import json
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

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
    if code in FORCED_LOGOUT_CODES:
        return True
    return code == "login" and ack_code(frame) not in (None, "0")


def is_push(frame: dict[str, Any]) -> bool:
    return frame.get("msgCode") not in ACK_CODES


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
    """Counts, de-duplicates and stores the pushes of one subscription; decides when to stop.

    :param max_messages: stop after this many (distinct) pushes.
    :param until: stop when a push matches this condition.
    :param sink: a text file that receives every push as one JSON line.
    :param inline_limit: how many pushes are also kept in memory (returned without a file).
    """

    max_messages: int | None = None
    until: OrderCondition | None = None
    sink: IO[str] | None = None
    inline_limit: int = 0
    dedup_window: int = 20_000
    messages: int = 0
    duplicates: int = 0
    malformed: int = 0
    reconnects: int = 0
    by_msg_code: Counter[str] = field(default_factory=Counter)
    by_biz_type: Counter[str] = field(default_factory=Counter)
    by_order_status: Counter[str] = field(default_factory=Counter)
    first_timestamp: int | None = None
    last_timestamp: int | None = None
    inline: list[dict[str, Any]] = field(default_factory=list)
    until_frame: dict[str, Any] | None = None
    stop_reason: str | None = None
    _seen: OrderedDict[int, None] = field(default_factory=OrderedDict)
    _recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=256))

    def set_until(self, condition: OrderCondition) -> None:
        """Start waiting for ``condition``; a push that already arrived (and matches) counts."""
        self.until = condition
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

    def add_raw(self, text: str | bytes) -> dict[str, Any] | None:
        """Parse and record one server frame; returns it when it is a push (None otherwise)."""
        frame = parse_server_frame(text)
        if frame is None:
            self.malformed += 1
            return None
        if not is_push(frame):
            return None
        self.add(frame, text if isinstance(text, str) else text.decode("utf-8", "replace"))
        return frame

    def add(self, frame: dict[str, Any], raw: str | None = None) -> bool:
        """Record a push; ``False`` when it was a duplicate (already delivered)."""
        seq, trace = frame.get("seqId"), frame.get("trace")
        if seq is not None or trace is not None:
            if type(seq) not in (int, str) or type(trace) not in (str, type(None)):  # a malformed push
                seq, trace = repr(seq), repr(trace)
            key = hash((seq, trace))  # an int: a fraction of the memory of the pair itself
            seen = self._seen
            if key in seen:
                self.duplicates += 1
                return False
            seen[key] = None
            if len(seen) > self.dedup_window:
                seen.popitem(last=False)
        self.messages += 1
        code = frame.get("msgCode")
        self.by_msg_code[code if type(code) is str else str(code)] += 1
        content = frame.get("content")
        if type(content) is dict:
            biz_type = content.get("bizType")
            if biz_type is not None:
                self.by_biz_type[str(biz_type)] += 1
            params = content.get("paramMap")
            if type(params) is dict:
                status = params.get("orderStatus")
                if status is not None:
                    self.by_order_status[str(status)] += 1
        stamp = frame.get("timestamp")
        if type(stamp) is int:
            if self.first_timestamp is None:
                self.first_timestamp = stamp
            self.last_timestamp = stamp
        if self.sink is not None:
            self.sink.write(
                (raw if raw is not None else json.dumps(frame, separators=(",", ":"), ensure_ascii=False)) + "\n"
            )
        if len(self.inline) < self.inline_limit:
            self.inline.append(frame)
        self._recent.append(frame)
        if self.until is not None and self.until.matches(frame):
            self.until_frame = frame
            self.finish("until")
        elif self.max_messages is not None and self.messages >= self.max_messages:
            self.finish("max_messages")
        return True

    def summary(self, *, output_path: str | None = None, include_inline: bool = True) -> dict[str, Any]:
        result: dict[str, Any] = {
            "messages": self.messages,
            "duplicates_dropped": self.duplicates,
            "malformed_frames": self.malformed,
            "reconnects": self.reconnects,
            "stop_reason": self.stop_reason,
            "by_msg_code": dict(self.by_msg_code),
            "by_biz_type": dict(self.by_biz_type),
            "by_order_status": dict(self.by_order_status),
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
            "output_path": output_path,
        }
        if self.until is not None:
            result["until"] = {
                "order_id": self.until.order_id,
                "met": self.until_frame is not None,
                "final_message": self.until_frame,
            }
        if include_inline and output_path is None:
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
