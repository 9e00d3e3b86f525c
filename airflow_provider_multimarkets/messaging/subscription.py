"""When a subscription stops and what it reports, on top of its push log (pure logic: no Airflow, no network)."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_multimarkets.messaging.frames import PNL_MAX_POSITIONS, param_map
from airflow_provider_multimarkets.storage.push_log import PushLog, as_line
from airflow_provider_multimarkets.trading.order_status import (
    FAILED_ORDER_BIZ_TYPES,
    ORDER_STATUS_NAMES,
    is_final_order_status,
)

#: unknown frames kept in a summary (the count is always reported), and the characters kept of each
UNKNOWN_SAMPLES = 5
UNKNOWN_SAMPLE_CHARS = 300


@dataclass
class OrderCondition:
    """Stop when the order ``order_id`` reaches a final ``orderStatus`` (or a failed ``bizType``)."""

    order_id: str

    def matches(self, frame: dict[str, Any]) -> bool:
        params = param_map(frame)
        if str(params.get("orderId")) != self.order_id:
            return False
        content = frame.get("content") if isinstance(frame.get("content"), dict) else {}
        biz_type = str(content.get("bizType", "")) if isinstance(content, dict) else ""
        return is_final_order_status(params.get("orderStatus")) or biz_type in FAILED_ORDER_BIZ_TYPES


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
    unknown_frames: int = 0
    unknown_samples: list[str] = field(default_factory=list)
    answer_frames: int = 0
    secret: str | None = None
    """the msg token: never kept in a sample of an unknown frame"""
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
        if self.max_messages is not None:
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

    def record_unknown(self, text: str) -> None:
        """Count a frame of a kind no source shows (never a push); keep the first few, cut short."""
        self.unknown_frames += 1
        if len(self.unknown_samples) < UNKNOWN_SAMPLES:
            sample = text[:UNKNOWN_SAMPLE_CHARS]
            if self.secret:
                sample = sample.replace(self.secret, "***")
            self.unknown_samples.append(sample)

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
            "unknown_frames": self.unknown_frames,
            "answer_frames": self.answer_frames,
            "pnl_frames": self.pnl_frames,
            "reconnects": self.reconnects,
            "restarts": self.restarts,
            "connections": self.connections,
            "stop_reason": self.stop_reason,
            **tally,
            "output_path": output_path,
        }
        if self.unknown_samples:
            result["unknown_samples"] = list(self.unknown_samples)
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
        f"  unknown frames: {summary.get('unknown_frames', 0)}  P&L frames: {summary.get('pnl_frames', 0)}"
    )
    for title, key in (("msgCode", "by_msg_code"), ("bizType", "by_biz_type"), ("orderStatus", "by_order_status")):
        counts = summary.get(key) or {}
        if counts:
            parts = ", ".join(
                f"{ORDER_STATUS_NAMES.get(k, k) if key == 'by_order_status' else k}={v}"
                for k, v in sorted(counts.items())
            )
            yield f"{title}: {parts}"
