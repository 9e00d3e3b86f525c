"""FillLedger: a JSON Lines file of fill records that holds each event identity once, across processes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from typing import Any

from airflow_provider_multimarkets.exceptions import MultiMarketsStorageError
from airflow_provider_multimarkets.storage.files import Flock, os_error_cause, write_atomic


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


class FillLedger:
    """A JSON Lines file of fill records that holds each event identity once, across processes.

    :meth:`record` works under an exclusive ``flock`` on the ledger, so two tasks that get the same
    push (a duplicate event) write it once. Each identity has a marker file under
    ``<directory>/seen/<day of the push, UTC>`` holding where its line starts and how long it is;
    remove old days to bound the directory.

    Nothing is claimed that was not written, and nothing written is lost:

    * the line is built (and checked to be encodable) before anything is touched: a push field with
      a lone surrogate is written as a JSON ``\\ud800`` escape;
    * the marker is written, then the line; a marker whose line is not in the ledger (the process
      was killed between the two, or a write was cut short) does not count, and the next
      :meth:`record` of that identity writes it;
    * a write cut short (a full disk, a file-size limit) is taken back, the marker removed, and a
      :class:`~..exceptions.MultiMarketsStorageError` names the cause; a line left incomplete by a
      killed process is cut off before the next append, so no record is ever glued to it;
    * a ledger or a directory that cannot be opened or written fails the same way, before any
      marker exists, so a retry once the cause is fixed records the fill.
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
        """Append the fill record of ``payload`` (plus ``extra``); ``None`` when its identity is held already.

        :raises MultiMarketsStorageError: the ledger could not be written (nothing was recorded).
        """
        identity = payload.get("identity")
        if not isinstance(identity, str) or not identity:
            raise ValueError("the event payload has no identity: is it from MultiMarketsPushEventTrigger?")
        row = {**fill_record(payload), **extra}
        line = _line(row)
        marker = self._marker(identity, payload.get("timestamp"))
        try:
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise self._error(exc, "open") from None
        try:
            with Flock(fd):
                if self._holds(fd, marker, identity):
                    return None
                offset = self._end(fd)
                try:
                    write_atomic(marker, f"{offset} {len(line)}\n")
                except OSError as exc:
                    raise self._error(exc, "mark") from None
                try:
                    written = os.write(fd, line)
                    if written != len(line):  # cut short: a full disk or a file-size limit
                        raise OSError(errno.ENOSPC, f"only {written} of {len(line)} bytes written")
                except OSError as exc:
                    _take_back(fd, offset, marker)
                    raise self._error(exc, "write") from None
                except BaseException:
                    _take_back(fd, offset, marker)
                    raise
        finally:
            os.close(fd)
        return row

    def _holds(self, fd: int, marker: str, identity: str) -> bool:
        """Whether the ledger holds the line of ``identity`` (its marker says where)."""
        try:
            with open(marker, encoding="ascii") as handle:
                text = handle.read().split()
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            text = []
        if not text:  # a marker of before 0.2 (empty): the identity is held
            return True
        try:
            offset, length = int(text[0]), int(text[1])
            chunk = os.pread(fd, length, offset)
            held = len(chunk) == length and chunk.endswith(b"\n") and json.loads(chunk).get("identity") == identity
        except (IndexError, ValueError, OSError, AttributeError):
            held = False
        return held

    def _end(self, fd: int) -> int:
        """The ledger's size, after cutting a last line that a killed process left without its newline."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            start = max(0, size - (1 << 20))
            tail = os.pread(fd, size - start, start)
            cut = tail.rfind(b"\n")
            keep = start + cut + 1 if cut >= 0 else (0 if start == 0 else size)
            if keep != size:
                os.ftruncate(fd, keep)
                size = keep
        return size

    def _error(self, exc: OSError, action: str) -> MultiMarketsStorageError:
        cause, why = os_error_cause(exc)
        fixes = {
            "disk full": "Free space on the volume (or raise the file-size limit)",
            "not writable": "Give the task's user write access to the ledger and its directory",
            "not a directory": "Point the ledger at a directory (a part of its path is a file)",
            "is a directory": "Remove the directory that stands where the ledger file should be",
        }
        return MultiMarketsStorageError(
            f"The fill ledger {self.path} could not be {_DONE[action]}: {why}. Nothing was recorded for this push; "
            f"{fixes.get(cause, 'Check the volume')}, then retry the task: it records the fill.",
            cause=cause,
        )


_DONE = {"open": "opened", "mark": "marked (its seen/ directory)", "write": "written"}


def _line(row: dict[str, Any]) -> bytes:
    """A record's line: UTF-8 JSON; a lone surrogate (valid JSON, not UTF-8) as its ``\\u`` escape."""
    text = json.dumps(row, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(row, separators=(",", ":"), ensure_ascii=True, default=str) + "\n").encode("ascii")


def _take_back(fd: int, offset: int, marker: str) -> None:
    """Undo a write that failed: the ledger back to ``offset``, the marker removed."""
    try:
        os.ftruncate(fd, offset)
    except OSError:
        pass  # the cut line is cut off before the next append (see FillLedger._end)
    try:
        os.unlink(marker)
    except OSError:
        pass
