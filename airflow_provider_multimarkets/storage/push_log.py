"""The push log: the JSON Lines file that is the source of truth of a subscription (pure logic).

A push counts only once its line is written to the file and flushed to the operating system, so
killing the process that receives it (a triggerer, a worker) loses nothing already counted. The
summary a subscription returns is the tally of the lines the file holds.

**Identity.** A push is identified by its text as received with its ``seqId`` member taken out
(kept as a 96-bit hash, see :func:`push_identity`). ``seqId`` is left out on purpose: servers number frames per
connection, so a push delivered again after a reconnect may carry a new one, and different pushes
on different connections share numbers. Everything else counts (``msgCode``, ``timestamp`` to the
millisecond, ``trace``, the whole ``content``), so two pushes are merged only when they are the
same frame sent again; pushes that differ in anything else are kept, and a distinct push is never
lost. A push re-sent with a new ``trace`` or formatted differently would be kept twice
(at-least-once), never dropped. ``seqId`` is cut from the text when it appears there exactly once
as ``"seqId":<value>`` (the top-level member: inside a JSON string those quotes are escaped);
otherwise the identity is computed from the parsed members, in the same spirit.

**Restarts and concurrent writers.** :meth:`PushLog.open` reads the existing file and restores the
tally and the identities of its last ``dedup_window`` lines, so a trigger that starts again (new
triggerer, task retry) neither counts nor writes again what is there. Every append holds an
exclusive ``flock`` on the file and first takes in the lines another process appended since (an
orphaned trigger run still draining its socket), so two writers never write one push twice. A
line left incomplete by a process killed in the middle of its write is cut off (it was never
counted).

**Another process truncating, replacing, moving or removing the file.** Every append looks, under
the lock, at the size of the file held (one ``lseek``): when another process truncated it
(``> pushes.jsonl``, a log rotation with ``copytruncate``), the log says so in one warning and reads
the file again from its start, so the tally is the file's own again (summary = file: pushes the
other process removed are gone from both; one the server sends again is written again). Whether the
path still names the file held is looked at every :data:`PATH_CHECK_SECONDS` (a ``stat``; and
whenever :data:`RECENT_MAX_BYTES` were written since the last look). When another file is there
(renamed over it), or none (moved away, removed), the log warns, opens the file at the path (or
creates it), reads it from its start, and appends to it the pushes it wrote since the last look that
this file does not hold: those may have gone into the file that was replaced or moved, and none is
lost. A push another writer appended meanwhile is known, so it is never written twice. The
per-push cost is what a triggerer running hundreds of subscriptions pays: one lock, one ``lseek``
and one ``write`` per append (the path only every few seconds).

Memory is flat: the identities of the last ``dedup_window`` pushes (about 100 bytes each), the
tally's counters and the first ``keep_first`` pushes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_multimarkets.exceptions import PushLogError
from airflow_provider_multimarkets.messaging.codec import frame_loads, too_deep
from airflow_provider_multimarkets.messaging.identity import push_identity
from airflow_provider_multimarkets.storage.files import Flock, fcntl, os_error_cause

log = logging.getLogger(__name__)
if fcntl is not None:
    flock, LOCK_EX, LOCK_UN = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN
else:  # pragma: no cover - Windows: one writer assumed (as Flock)

    def flock(fd: int, operation: int) -> None:
        return None

    LOCK_EX = LOCK_UN = 0
_clock = time.monotonic  # a test's fake clock replaces it

READ_CHUNK = 1 << 20
#: a staged push: (identity, tally record, line, the parsed frame only when ``on_push`` needs it)
_Staged = tuple[int, "TallyRecord", bytes, "dict[str, Any] | None"]
#: a push line longer than this in an existing log is reported, not loaded into memory unbounded
MAX_LINE_BYTES = 64 << 20
#: seconds between two looks at the log's path (is it still the file held?); every append looks at the
#: size of the file held. The pushes written since the last look follow into a file found at the path
#: instead (replaced, moved away or removed), so none is lost (see the module docs)
PATH_CHECK_SECONDS = 5.0
#: bytes written between two looks at the path, at most (a fast stream looks more often)
RECENT_MAX_BYTES = 1 << 20


def parse_line(line: bytes | str) -> dict[str, Any] | None:
    """One line of a push log as a push, or ``None`` when it is not a JSON object (unreadable), or
    nests deeper than :data:`~..messaging.codec.MAX_FRAME_DEPTH` (a frame the client would have skipped)."""
    if too_deep(line):
        return None
    try:
        frame = frame_loads()(line)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


def as_line(frame: dict[str, Any], text: str) -> bytes:
    """The log line of a push, without its newline: its text as received, unless that spans lines."""
    if "\n" in text or "\r" in text:  # whitespace between tokens (JSON strings cannot hold them raw)
        text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def _count_key(value: Any) -> str:
    return value if type(value) is str else json.dumps(value, separators=(",", ":"), default=repr)


#: what the tally counts of a push: ((msgCode, bizType, orderStatus), timestamp), see :func:`tally_record`
TallyRecord = tuple[tuple[str, "str | None", "str | None"], "int | None"]


def tally_record(frame: dict[str, Any]) -> TallyRecord:
    """What the tally needs of a push: its kind (msgCode, bizType, orderStatus, as counting keys) and timestamp.

    Staged pushes keep this small tuple, not the parsed frame: holding thousands of parsed frames
    until they are written costs more than parsing them (allocator and garbage collector).
    """
    code = frame.get("msgCode")
    biz_type = status = None
    content = frame.get("content")
    if type(content) is dict:
        value = content.get("bizType")
        if value is not None:
            biz_type = value if type(value) is str else _count_key(value)
        params = content.get("paramMap")
        if type(params) is dict:
            value = params.get("orderStatus")
            if value is not None:
                status = value if type(value) is str else _count_key(value)
    stamp = frame.get("timestamp")
    return (code if type(code) is str else _count_key(code), biz_type, status), stamp if type(stamp) is int else None


@dataclass
class PushTally:
    """The counts of a set of pushes: the one counting rule of summaries and reports.

    One count per kind of push (msgCode, bizType, orderStatus): a push updates one entry, and the
    counts by msgCode, by bizType and by orderStatus are sums over the kinds.
    """

    messages: int = 0
    by_kind: dict[tuple[str, str | None, str | None], int] = field(default_factory=dict)
    first_timestamp: int | None = None
    last_timestamp: int | None = None

    def _by(self, position: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        for kind, count in self.by_kind.items():
            key = kind[position]
            if key is not None:
                counts[key] += count
        return counts

    @property
    def by_msg_code(self) -> Counter[str]:
        return self._by(0)

    @property
    def by_biz_type(self) -> Counter[str]:
        return self._by(1)

    @property
    def by_order_status(self) -> Counter[str]:
        return self._by(2)

    def add(self, frame: dict[str, Any]) -> None:
        self.add_record(tally_record(frame))

    def add_record(self, record: TallyRecord) -> None:
        """Count one push from its :func:`tally_record` (kept instead of the parsed frame)."""
        self.messages += 1
        kind, stamp = record
        by_kind = self.by_kind
        by_kind[kind] = by_kind.get(kind, 0) + 1
        if stamp is not None:
            first = self.first_timestamp
            if first is None:
                self.first_timestamp = self.last_timestamp = stamp
            elif stamp < first:
                self.first_timestamp = stamp
            elif stamp > self.last_timestamp:  # type: ignore[operator]
                self.last_timestamp = stamp

    def add_records(self, records: list[TallyRecord]) -> None:
        """:meth:`add_record` for a batch, counted by the C loops of ``Counter.update``, ``min`` and ``max``."""
        if not records:
            return
        self.messages += len(records)
        by_kind = self.by_kind
        for kind, count in Counter([r[0] for r in records]).items():
            by_kind[kind] = by_kind.get(kind, 0) + count
        stamps = [r[1] for r in records if r[1] is not None]
        if stamps:
            low, high = min(stamps), max(stamps)
            if self.first_timestamp is None or low < self.first_timestamp:
                self.first_timestamp = low
            if self.last_timestamp is None or high > self.last_timestamp:
                self.last_timestamp = high

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "by_msg_code": dict(self.by_msg_code),
            "by_biz_type": dict(self.by_biz_type),
            "by_order_status": dict(self.by_order_status),
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
        }


class PushLog:
    """An append-only JSON Lines file of distinct pushes, shared safely by several processes.

    :param path: the file (its directory is created); ``None``: kept in memory only (no restart
        safety), for a subscription run in one process that returns its pushes inline.
    :param dedup_window: identities remembered (the last pushes of the log).
    :param on_push: called with every push the log counts: those restored from the file, those
        another writer appended, and those appended here (in file order).
    """

    # a triggerer holds hundreds: slots keep each small and its attributes quick on the append path
    __slots__ = (
        "__dict__",  # subclasses (segments) add their own
        "_fd",
        "_held",
        "_known_before",
        "_looked_at",
        "_offset",
        "_partial",
        "_path_due",
        "_pending",
        "_pending_ids",
        "_seen",
        "_seen_old",
        "_tail",
        "dedup_window",
        "duplicates",
        "on_push",
        "path",
        "restored",
        "tally",
        "unreadable_lines",
    )

    def __init__(
        self,
        path: str | None,
        *,
        dedup_window: int = 50_000,
        on_push: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.path = path
        self.dedup_window = dedup_window
        self.on_push = on_push
        self.tally = PushTally()
        self.duplicates = 0
        self.unreadable_lines = 0
        self.restored = 0
        # the identities of the newest pushes, in two generations: a full one is kept as the old one
        # and a new one begins, so at least the last ``dedup_window`` (at most twice that) are known
        self._seen: set[int] = set()
        self._seen_old: frozenset[int] | set[int] = frozenset()
        self._fd: int | None = None
        #: (inode, device) of the file held, and when its path is next looked at (see commit)
        self._held: tuple[int, int] = (0, 0)
        self._path_due = 0.0
        self._offset = 0
        self._partial = b""
        self._pending: list[_Staged] = []
        self._pending_ids: set[int] = set()
        #: the offset in the file held when the log last found it at its path; and what the file held
        #: after it held since, read back when another file is found there (see commit)
        self._looked_at = 0
        self._tail = b""
        #: while the file is read again (truncated or replaced): the identities counted before
        self._known_before: set[int] | None = None

    # ---- opening and catching up --------------------------------------------------------------

    def open(self) -> PushLog:
        if self.path is None:
            return self
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._hold(self._fd)
        except (FileExistsError, NotADirectoryError) as exc:
            raise PushLogError(
                f"Cannot create the push log {self.path}: a part of its directory path is a file "
                f"({exc.filename or directory}). Choose an output_path under a directory.",
                cause="not a directory",
            ) from None
        except IsADirectoryError:
            raise PushLogError(
                f"The push log {self.path} is a directory. Give output_path a file name (…/pushes.jsonl).",
                cause="is a directory",
            ) from None
        except OSError as exc:
            raise _write_error(str(self.path), exc, "open") from None
        with self._locked():
            self._catch_up(cut_partial=True)
        self._looked_at = self._offset
        self.restored = self.tally.messages
        return self

    def _catch_up(self, *, cut_partial: bool = False) -> None:
        """Take in the lines appended since the last look (restart, or another writer)."""
        fd = self._fd
        assert fd is not None
        size = os.fstat(fd).st_size
        while self._offset < size:
            chunk = os.pread(fd, min(READ_CHUNK, size - self._offset), self._offset)
            if not chunk:
                break
            self._offset += len(chunk)
            data = self._partial + chunk
            lines = data.split(b"\n")
            self._partial = lines.pop()
            if len(self._partial) > MAX_LINE_BYTES:
                raise PushLogError(
                    f"The push log {self.path} holds a line over {MAX_LINE_BYTES} bytes: it is not a push log. "
                    "Point output_path at a new file.",
                    cause="not a push log",
                )
            for line in lines:
                self._take_line(line)
        if self._partial and cut_partial:
            # written by a process killed in the middle of its write (we hold the lock): never counted
            os.ftruncate(fd, self._offset - len(self._partial))
            self._offset -= len(self._partial)
            self._partial = b""

    def _hold(self, fd: int) -> None:
        held = os.fstat(fd)
        self._held = (held.st_ino, held.st_dev)
        self._path_due = _clock() + PATH_CHECK_SECONDS

    def _same_file(self, fd: int) -> tuple[int, bool]:
        """``fd`` while it is still the file at the log's path; else the file at the path, opened again."""
        assert self.path is not None
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            at_path = None
        if at_path is not None and (at_path.st_ino, at_path.st_dev) == self._held:
            self._path_due = _clock() + PATH_CHECK_SECONDS
            self._looked_at = self._offset
            return fd, False
        try:
            new_fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise _write_error(self.path, exc, "open") from None
        try:  # what was written since the last look: maybe into this file after it was replaced or moved
            self._tail = os.pread(fd, max(self._offset - self._looked_at, 0), self._looked_at)
        except OSError:
            self._tail = b""
        os.close(fd)
        self._fd = new_fd
        self._hold(new_fd)
        return new_fd, True

    def _read_again(self, what: str) -> None:
        """Read the file again from its start (we hold its lock): it was truncated or replaced."""
        counted = self.tally.messages
        known = self._seen | self._seen_old
        self.tally = PushTally()
        self._seen, self._seen_old = set(), frozenset()
        self._offset, self._partial = 0, b""
        self._known_before = known
        try:
            self._catch_up(cut_partial=True)
        finally:
            self._known_before = None
        self._looked_at = self._offset  # what the file holds now is the other process's doing
        log.warning(
            "The push log %s was %s by another process. Read it again from its start: the tally follows the file "
            "(%d pushes now; %d were counted before). Pushes another writer appended are not written again. Give "
            "each subscription its own output_path, and do not rotate or truncate a log that is being written.",
            self.path,
            what,
            self.tally.messages,
            counted,
        )

    def _take_line(self, line: bytes) -> None:
        if not line.strip():
            return
        frame = parse_line(line)
        if frame is None:
            self.unreadable_lines += 1
            return
        identity = push_identity(frame, line)
        if self.knows(identity):  # two writers at once on a store without locks (segments)
            self.duplicates += 1
            return
        self._count(identity, frame)

    def _count(self, identity: int, frame: dict[str, Any]) -> None:
        self._remember(identity)
        self.tally.add(frame)
        if self.on_push is not None and (self._known_before is None or identity not in self._known_before):
            self.on_push(frame)  # a push read again after a truncation was announced already

    def knows(self, identity: int) -> bool:
        """Whether the log holds the push of this identity (among the newest ``dedup_window`` at least)."""
        return identity in self._seen or identity in self._seen_old

    def _remember(self, identity: int) -> None:
        self._seen.add(identity)
        if len(self._seen) >= self.dedup_window:
            self._seen_old, self._seen = self._seen, set()

    # ---- appending ----------------------------------------------------------------------------

    def stage(self, frame: dict[str, Any], text: str) -> bool:
        """Queue one push for the next :meth:`commit` unless the log holds it; ``False`` for a duplicate.

        A staged push is not counted yet: it counts once :meth:`commit` has written it.
        """
        return self.stage_line(frame, as_line(frame, text))

    def stage_line(self, frame: dict[str, Any], line: bytes) -> bool:
        """:meth:`PushLog.stage` for a push whose log line is ready: its UTF-8 text on one line, as received."""
        identity = push_identity(frame, line)
        if identity in self._seen or (self._seen_old and identity in self._seen_old):
            self.duplicates += 1
            return False
        pending = self._pending
        if pending:  # the identities of staged pushes are kept only once there are two or more
            ids = self._pending_ids
            if not ids:
                ids.update([item[0] for item in pending])
            if identity in ids:
                self.duplicates += 1
                return False
            ids.add(identity)
        pending.append((identity, tally_record(frame), line, frame if self.on_push is not None else None))
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def commit(self, *, force: bool = True) -> int:
        """Write every staged push in one locked append, then count them; returns how many were written.

        ``force=False`` lets a store that writes in larger units (segments) wait for more pushes;
        a local file always writes.
        """
        pending = self._pending
        if not pending:
            return 0
        self._pending = []
        if self._pending_ids:
            self._pending_ids.clear()
        fd = self._fd
        if fd is None:
            assert self.path is None, "PushLog.open() first"
            self._count_many(pending)
            return len(pending)
        # Per append, under the lock: the size of the file held (one lseek: another writer appended, or
        # it was truncated). Its path (a stat) every PATH_CHECK_SECONDS: when another file is there, the
        # pushes written since the last look follow into it (see the module docs).
        replaced = False
        if _clock() >= self._path_due or self._offset - self._looked_at >= RECENT_MAX_BYTES:
            fd, replaced = self._same_file(fd)
        flock(fd, LOCK_EX)  # Flock's call, without the object: the hot path
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            if replaced or size != self._offset:
                pending = self._take_in_others(pending, size, replaced)
                if not pending:
                    return 0
            data = pending[0][2] + b"\n" if len(pending) == 1 else b"\n".join([item[2] for item in pending]) + b"\n"
            try:
                written = os.write(fd, data)
            except OSError as exc:
                raise _write_error(str(self.path), exc, "write") from None
            if written != len(data):  # a full disk in the middle: take the partial lines back
                os.ftruncate(fd, self._offset)
                raise _write_error(str(self.path), OSError(errno.ENOSPC, "short write"), "write")
            self._offset += written
        finally:
            flock(fd, LOCK_UN)
        self._count_many(pending)
        return len(pending)

    def _not_held(self, tail: bytes) -> list[_Staged]:
        """The pushes of ``tail`` (lines read back from the file held before) that this log does not hold."""
        again: list[_Staged] = []
        ids: set[int] = set()
        for line in tail.split(b"\n")[:-1]:  # complete lines only
            frame = parse_line(line) if line.strip() else None
            if frame is None:
                continue
            identity = push_identity(frame, line)
            if not self.knows(identity) and identity not in ids:
                ids.add(identity)
                again.append((identity, tally_record(frame), line, None))
        return again

    def _take_in_others(self, pending: list[_Staged], size: int, replaced: bool) -> list[_Staged]:
        """What another process did to the file since the last look (we hold its lock), taken in first;
        the staged pushes the file now holds are left out (returned: those to write)."""
        if replaced:
            tail, self._tail = self._tail, b""
            self._read_again("replaced (another file is at its path now)")
            # written since the last look at the path, so maybe into the file that was replaced or moved
            # away: they follow into the new file (counted again, announced once)
            again = self._not_held(tail)
            if again:
                log.warning(
                    "The push log %s: %d push(es) written since its path was last looked at are appended to the new file.",
                    self.path,
                    len(again),
                )
            pending = again + pending
        elif size < self._offset:
            self._read_again(f"truncated ({size} bytes, shorter than the {self._offset} bytes read)")
        else:
            self._catch_up()  # another writer appended: take its pushes in first
        fresh = [item for item in pending if not self.knows(item[0])]
        self.duplicates += len(pending) - len(fresh)
        return fresh

    def _count_many(self, items: list[_Staged]) -> None:
        """:meth:`_count` for a batch: with no ``on_push``, C loops over the batch instead of calls per push."""
        on_push = self.on_push
        if on_push is None and len(items) == 1:  # a triggerer's usual commit: one push
            identity, record = items[0][0], items[0][1]
            seen = self._seen
            seen.add(identity)
            if len(seen) >= self.dedup_window:
                self._seen_old, self._seen = seen, set()
            self.tally.add_record(record)
            return
        if on_push is not None or len(items) < 8:  # one by one: a listener sees the counts as of its push;
            # a few pushes count faster without the batch lists
            add_record = self.tally.add_record
            for identity, record, _, frame in items:
                self._remember(identity)
                add_record(record)
                if frame is not None and on_push is not None:
                    on_push(frame)
            return
        if len(items) <= self.dedup_window - len(self._seen):
            self._seen.update([item[0] for item in items])
        else:
            for item in items:
                self._remember(item[0])
        self.tally.add_records([item[1] for item in items])

    def append(self, frame: dict[str, Any], text: str) -> bool:
        """Write one push unless the log already holds it; ``True`` when it was written (and counted)."""
        if not self.stage(frame, text):
            return False
        return self.commit() == 1

    def _locked(self) -> Flock:
        assert self._fd is not None
        return Flock(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> PushLog:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _write_error(path: str, exc: OSError, action: str) -> PushLogError:
    cause, _ = os_error_cause(exc)
    if cause == "disk full":
        return PushLogError(
            f"The push log {path} could not be written: the disk is full ({exc.strerror}). Pushes from here on "
            "are not counted. Free space or point output_path at another volume; the log keeps what was written.",
            cause="disk full",
        )
    if cause == "not writable":
        return PushLogError(
            f"The push log {path} is not writable ({exc.strerror}). Give the triggerer's and the workers' user "
            "write access, or choose another output_path.",
            cause="not writable",
        )
    return PushLogError(
        f"Could not {action} the push log {path}: {exc.strerror or exc}. Check the output_path volume.",
        cause="i/o error",
    )


def read_push_log(path: str) -> PushLog:
    """A log's tally and counts, read (not written) from the file: for reports."""
    log = PushLog(path, dedup_window=0)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise PushLogError(f"Cannot read the push log {path}: {exc.strerror}.", cause="unreadable") from None
    log._fd = fd
    try:
        log._catch_up()
    finally:
        log.close()
    return log
