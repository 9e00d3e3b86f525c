"""Pushes as events for event-driven DAGs (pure logic: no Airflow, no network).

What :class:`~airflow_provider_multimarkets.triggers.push_event.MultiMarketsPushEventTrigger`
decides about one push: whether it matches (:class:`PushEventFilter`), the key that identifies it
downstream (:func:`event_identity`), and the compact payload of its event (:func:`event_payload`).
Also which pushes of the trigger's journal are sent again after a restart (:func:`replay_tail`)
and how the journal is kept bounded (:func:`compact_journal`).

**Identity.** A trade push that names an order is identified by what it says about the order:
``trade:<orderId>:<dealId>:<bizType>:<orderStatus>`` (a deal id, where there is one, tells two
partial fills apart). Every other push by a SHA-1 of its canonical JSON without ``seqId`` (servers
number frames per connection). Both are stable across processes, reconnects and triggerer
restarts, so a push delivered twice gives two events with one key, and a downstream task keeps
the first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_multimarkets.msg_frames import FAILED_ORDER_BIZ_TYPES, FINAL_ORDER_STATUSES

#: the payload of one event is kept under this many bytes of JSON (the metadata DB stores it)
DEFAULT_MAX_EVENT_BYTES = 64 * 1024
_SAFE_KEY = re.compile(r"[^A-Za-z0-9_.:-]")


def _strings(values: Iterable[Any] | str | int | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, (str, int)):
        values = str(values).split(",")
    out = tuple(sorted({str(v).strip() for v in values if str(v).strip()}))
    return out or None


def _content(frame: dict[str, Any]) -> dict[str, Any]:
    content = frame.get("content")
    return content if isinstance(content, dict) else {}


def _params(frame: dict[str, Any]) -> dict[str, Any]:
    params = _content(frame).get("paramMap")
    return params if isinstance(params, dict) else {}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


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
        if self.msg_codes is not None and _text(frame.get("msgCode")) not in self.msg_codes:
            return False
        content, params = _content(frame), _params(frame)
        biz_type = _text(content.get("bizType"))
        if self.biz_types is not None and biz_type not in self.biz_types:
            return False
        if self.final_only:
            status = _text(params.get("orderStatus"))
            if status is not None and status not in FINAL_ORDER_STATUSES and biz_type not in FAILED_ORDER_BIZ_TYPES:
                return False
        if self.symbol_ids is not None and _text(params.get("symbolId")) not in self.symbol_ids:
            return False
        if self.account_ids is not None:
            account = _text(content.get("accountId")) or _text(params.get("accountId"))
            if account not in self.account_ids:
                return False
        return True


def event_identity(frame: dict[str, Any]) -> str:
    """The key downstream tasks de-duplicate on (see the module docs)."""
    params = _params(frame)
    order_id = _text(params.get("orderId"))
    if frame.get("msgCode") == "trade" and order_id:
        parts = (
            order_id,
            _text(params.get("dealId")) or "-",
            _text(_content(frame).get("bizType")) or "-",
            _text(params.get("orderStatus")) or "-",
        )
        return _SAFE_KEY.sub("_", "trade:" + ":".join(parts))[:255]
    canonical = json.dumps(
        {k: v for k, v in frame.items() if k != "seqId"},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=repr,
    )
    return "sha1:" + hashlib.sha1(canonical.encode("utf-8", "surrogatepass")).hexdigest()  # noqa: S324 - a key


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
        "bizType": _content(frame).get("bizType"),
        "content": content,
    }
    if replayed:
        payload["replayed"] = True
    size = len(json.dumps(content, separators=(",", ":"), ensure_ascii=False, default=repr))
    if size > max_bytes:
        payload["content"] = None
        payload["content_omitted_bytes"] = size
    return payload


def fill_record(payload: dict[str, Any]) -> dict[str, Any]:
    """One line about an order's push, from an event payload: order, symbol, price, lots, status."""
    raw_content = payload.get("content")
    content: dict[str, Any] = raw_content if isinstance(raw_content, dict) else {}
    raw_params = content.get("paramMap")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    return {
        "identity": payload.get("identity"),
        "order_id": params.get("orderId"),
        "symbol": params.get("symbolName") or params.get("symbolId"),
        "price": params.get("dealPrice") or params.get("dealExecutePrice"),
        "lots": params.get("dealAmount") or params.get("requestAmount"),
        "status": params.get("orderStatus"),
        "biz_type": payload.get("bizType"),
        "account_id": content.get("accountId"),
        "push_time_ms": payload.get("timestamp"),
    }


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


def compact_journal(path: str, *, max_bytes: int, keep_lines: int) -> bool:
    """Keep a journal under ``max_bytes``: when it is larger, keep its last ``keep_lines`` lines.

    Written to a new file and renamed over the old one, so a kill in the middle leaves one of the
    two complete. Only complete lines are kept. Returns whether it compacted.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    if size <= max_bytes:
        return False
    tail: deque[bytes] = deque(maxlen=keep_lines)
    with open(path, "rb") as handle:
        for line in handle:
            if line.endswith(b"\n"):
                tail.append(line)
    tmp = f"{path}.{os.getpid()}.compact"
    with open(tmp, "wb") as handle:
        handle.writelines(tail)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return True


def watcher_key(parts: Sequence[Any]) -> str:
    """A short stable name for one watcher's files (its journal and its token)."""
    text = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]  # noqa: S324 - a file name


def read_lines(path: str) -> Iterator[str]:
    """The complete lines of a journal (none when it does not exist)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.endswith("\n"):
                yield line


def load_token(path: str) -> str | None:
    """The msg token a watcher saved (``None`` when there is none or it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError:
        return None
    return token or None


def save_token(path: str, token: str) -> None:
    """Keep the msg token beside the journal, readable by its owner only (mode 0600), so a watcher
    started again resumes the same message stream; written to a new file and renamed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token)
    os.replace(tmp, path)


class FillLedger:
    """A JSON Lines file of fill records that holds each event identity once, across processes.

    :meth:`record` claims the identity with a marker file created exclusively (``O_EXCL``), then
    appends the line under an exclusive lock: two tasks that get the same push (a duplicate event)
    write it once. Markers are grouped by the push's day (UTC) under ``<directory>/seen``; remove
    old days to bound the directory.
    """

    def __init__(self, directory: str, name: str = "fills.jsonl") -> None:
        self.directory = directory
        self.path = os.path.join(directory, name)

    def _marker(self, identity: str, push_time_ms: Any) -> str:
        import datetime as dt

        day = "unknown"
        if type(push_time_ms) is int and push_time_ms > 0:
            day = dt.datetime.fromtimestamp(push_time_ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d")
        digest = hashlib.sha1(identity.encode("utf-8", "surrogatepass")).hexdigest()  # noqa: S324 - a file name
        return os.path.join(self.directory, "seen", day, digest)

    def record(self, payload: dict[str, Any], **extra: Any) -> dict[str, Any] | None:
        """Append the fill record of ``payload`` (plus ``extra``); ``None`` when its identity is held already."""
        identity = payload.get("identity")
        if not isinstance(identity, str) or not identity:
            raise ValueError("the event payload has no identity: is it from MultiMarketsPushEventTrigger?")
        row = {**fill_record(payload), **extra}
        marker = self._marker(identity, payload.get("timestamp"))
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return None
        line = (json.dumps(row, separators=(",", ":"), ensure_ascii=False, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - Windows
                pass
            os.write(fd, line)
        except OSError:
            os.unlink(marker)  # not written: the identity is free again for a retry
            raise
        finally:
            os.close(fd)
        return row
