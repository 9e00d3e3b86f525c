"""Pushes as asset events (pure logic: no Airflow, no network): which pushes match, and what an event holds.

What :class:`~airflow_provider_multimarkets.triggers.push_event.MultiMarketsPushEventTrigger`
decides about one push: whether it matches (:class:`PushEventFilter`) and the compact payload of
its event (:func:`event_payload`, keyed by :func:`~.identity.event_identity`); also which pushes
of the trigger's journal are sent again after a restart (:func:`replay_tail`).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_multimarkets.messaging.frames import content_of, field_text, param_map
from airflow_provider_multimarkets.messaging.identity import event_identity
from airflow_provider_multimarkets.trading.order_status import FAILED_ORDER_BIZ_TYPES, is_final_order_status

#: the payload of one event is kept under this many bytes of JSON (the metadata DB stores it)
DEFAULT_MAX_EVENT_BYTES = 64 * 1024


def _strings(values: Iterable[Any] | str | int | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, (str, int)):
        values = str(values).split(",")
    out = tuple(sorted({str(v).strip() for v in values if str(v).strip()}))
    return out or None


@dataclass(frozen=True)
class PushEventFilter:
    """Which pushes become events. Every field is a JSON value, so a trigger serializes it as it is.

    :param msg_codes: push kinds (``msgCode``), ``("trade",)`` by default.
    :param biz_types: ``content.bizType`` values, e.g. ``POSITION_OPEN``, ``POSITION_CLOSE``,
        ``POSITION_OPEN_FAIL``; ``None``: all.
    :param final_only: only pushes after which the order no longer changes: a final
        ``paramMap.orderStatus`` (completed, cancelled, partially cancelled, rejected, expired) or a
        failed-order ``bizType``. Pushes that name no order status pass (notices, account pushes).
    :param symbol_ids: ``paramMap.symbolId`` values; ``None``: all.
    :param account_ids: ``content.accountId`` (or ``paramMap.accountId``) values; ``None``: all.
    """

    msg_codes: tuple[str, ...] | None = ("trade",)
    biz_types: tuple[str, ...] | None = None
    final_only: bool = True
    symbol_ids: tuple[str, ...] | None = None
    account_ids: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls,
        *,
        msg_codes: Iterable[Any] | str | None = ("trade",),
        biz_types: Iterable[Any] | str | None = None,
        final_only: bool = True,
        symbol_ids: Iterable[Any] | str | int | None = None,
        account_ids: Iterable[Any] | str | int | None = None,
    ) -> PushEventFilter:
        """A filter from user values: lists, or comma-separated text; numbers as text."""
        return cls(
            msg_codes=_strings(msg_codes),
            biz_types=_strings(biz_types),
            final_only=bool(final_only),
            symbol_ids=_strings(symbol_ids),
            account_ids=_strings(account_ids),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "msg_codes": list(self.msg_codes) if self.msg_codes is not None else None,
            "biz_types": list(self.biz_types) if self.biz_types is not None else None,
            "final_only": self.final_only,
            "symbol_ids": list(self.symbol_ids) if self.symbol_ids is not None else None,
            "account_ids": list(self.account_ids) if self.account_ids is not None else None,
        }

    def matches(self, frame: dict[str, Any]) -> bool:
        if self.msg_codes is not None and field_text(frame.get("msgCode")) not in self.msg_codes:
            return False
        content, params = content_of(frame), param_map(frame)
        biz_type = field_text(content.get("bizType"))
        if self.biz_types is not None and biz_type not in self.biz_types:
            return False
        if self.final_only:
            status = field_text(params.get("orderStatus"))
            if status is not None and not is_final_order_status(status) and biz_type not in FAILED_ORDER_BIZ_TYPES:
                return False
        if self.symbol_ids is not None and field_text(params.get("symbolId")) not in self.symbol_ids:
            return False
        if self.account_ids is not None:
            account = field_text(content.get("accountId")) or field_text(params.get("accountId"))
            if account not in self.account_ids:
                return False
        return True


def event_payload(
    frame: dict[str, Any], *, replayed: bool = False, max_bytes: int = DEFAULT_MAX_EVENT_BYTES
) -> dict[str, Any]:
    """The compact JSON payload of one event: the identity, the push's kind and time, its content.

    A content larger than ``max_bytes`` is left out (``content_omitted_bytes`` says how large it
    was): the push stays in the trigger's journal.
    """
    content = frame.get("content")
    payload: dict[str, Any] = {
        "identity": event_identity(frame),
        "msgCode": frame.get("msgCode"),
        "timestamp": frame.get("timestamp"),
        "bizType": content_of(frame).get("bizType"),
        "content": content,
    }
    if replayed:
        payload["replayed"] = True
    size = len(json.dumps(content, separators=(",", ":"), ensure_ascii=False, default=repr))
    if size > max_bytes:
        payload["content"] = None
        payload["content_omitted_bytes"] = size
    return payload


@dataclass
class ReplaySelection:
    """What a restarted trigger sends again: the journal's last pushes within ``seconds`` of its newest."""

    seconds: float
    max_pushes: int
    _tail: deque[dict[str, Any]] = field(default_factory=deque)

    def add(self, frame: dict[str, Any]) -> None:
        self._tail.append(frame)
        if len(self._tail) > self.max_pushes:
            self._tail.popleft()

    def frames(self) -> list[dict[str, Any]]:
        stamps: list[int] = [f["timestamp"] for f in self._tail if type(f.get("timestamp")) is int]
        if not stamps:
            return list(self._tail)
        cutoff = max(stamps) - int(self.seconds * 1000)
        # a push without a usable timestamp is sent again (at-least-once: when in doubt, send)
        return [f for f in self._tail if type(f.get("timestamp")) is not int or f["timestamp"] >= cutoff]


def replay_tail(lines: Iterable[str], *, seconds: float, max_pushes: int) -> list[dict[str, Any]]:
    """The pushes of a journal to send again after a restart (see :class:`ReplaySelection`)."""
    selection = ReplaySelection(seconds, max_pushes)
    for line in lines:
        try:
            frame = json.loads(line)
        except ValueError:
            continue
        if isinstance(frame, dict):
            selection.add(frame)
    return selection.frames()


def watcher_key(parts: Sequence[Any]) -> str:
    """A short stable name for one watcher's files (its journal and its token)."""
    text = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]  # noqa: S324 - a file name
