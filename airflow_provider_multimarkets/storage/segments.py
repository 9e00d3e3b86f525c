"""The push log on an object store (``s3://``, ``gs://``, …): rolled segment objects.

Object stores cannot append, so the pushes of a subscription are written as segment objects under
the URL, ``part-<run>-<n>.jsonl``, one JSON line per push. A segment is written whole (one PUT)
and its pushes count only once it is stored, so a killed triggerer loses nothing counted; what it
had staged is sent again by the server (a server re-sends the pushes of the last seconds when a
subscription resumes) or was never counted. A segment is written every ``segment_max_pushes``
pushes or ``segment_seconds`` seconds, and when the subscription stops.

A trigger that starts again (a new triggerer, a task retry) lists the segments, restores the
tally and the identities from them, and writes its own. Readers read every segment and take each
push once (:func:`iter_segment_lines`), so two writers at once (an orphaned trigger run) never
make a report count a push twice.

The filesystem comes from Airflow's ``ObjectStoragePath`` (credentials from an Airflow
connection, e.g. ``s3://aws_default@bucket/prefix/``), else from ``fsspec`` directly (its own
credential chain, e.g. the ``AWS_*`` environment).
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from airflow_provider_multimarkets.exceptions import PushLogError
from airflow_provider_multimarkets.messaging.identity import push_identity
from airflow_provider_multimarkets.storage.paths import filesystem
from airflow_provider_multimarkets.storage.push_log import PushLog, parse_line

SEGMENT_NAME = re.compile(r"part-(\d{13}-\d+)-(\d{6})\.jsonl$")


def _segments(fs: Any, prefix: str) -> list[str]:
    try:
        names = fs.ls(prefix, detail=False)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if SEGMENT_NAME.search(str(n)))


class SegmentedPushLog(PushLog):
    """A :class:`PushLog` written as segment objects under ``url`` (see the module docs)."""

    def __init__(
        self,
        url: str,
        *,
        dedup_window: int = 50_000,
        on_push: Callable[[dict[str, Any]], None] | None = None,
        segment_max_pushes: int = 5000,
        segment_seconds: float = 5.0,
    ) -> None:
        super().__init__(None, dedup_window=dedup_window, on_push=on_push)
        self.url = url.rstrip("/")
        self.segment_max_pushes = segment_max_pushes
        self.segment_seconds = segment_seconds
        self.run_id = f"{int(time.time() * 1000):013d}-{os.getpid()}"
        self.previous_runs = 0
        self.segments_written = 0
        self._fs: Any = None
        self._prefix = ""
        self._oldest = 0.0

    def open(self) -> SegmentedPushLog:
        self._fs, self._prefix = filesystem(self.url)
        try:
            names = _segments(self._fs, self._prefix)
            runs = set()
            for name in names:
                match = SEGMENT_NAME.search(str(name))
                assert match is not None
                runs.add(match.group(1))
                for line in self._fs.cat_file(name).split(b"\n"):
                    self._take_line(line)
        except PushLogError:
            raise
        except Exception as exc:
            raise _store_error(self.url, exc, "read") from None
        self.previous_runs = len(runs)
        self.restored = self.tally.messages
        return self

    def stage_line(self, frame: dict[str, Any], line: bytes) -> bool:
        if not self._pending:
            self._oldest = time.monotonic()
        return super().stage_line(frame, line)

    def commit(self, *, force: bool = True) -> int:
        pending = self._pending
        if not pending:
            return 0
        due = len(pending) >= self.segment_max_pushes or time.monotonic() - self._oldest >= self.segment_seconds
        if not force and not due:
            return 0
        self._pending, self._pending_ids = [], set()
        name = f"{self._prefix}/part-{self.run_id}-{self.segments_written:06d}.jsonl"
        data = b"\n".join([item[2] for item in pending]) + b"\n"
        try:
            self._fs.pipe_file(name, data)
        except Exception as exc:
            raise _store_error(self.url, exc, "write") from None
        self.segments_written += 1
        self._count_many(pending)
        return len(pending)

    def close(self) -> None:
        self._fs = None


def _store_error(url: str, exc: BaseException, action: str) -> PushLogError:
    return PushLogError(
        f"Could not {action} the push log segments under {url}: {type(exc).__name__}: {str(exc)[:300]}. Check the "
        "URL, that the bucket exists, and the credentials (the Airflow connection in the URL, or the store's own "
        "environment) on the triggerer and the workers.",
        cause="object store",
    )


def iter_segment_lines(url: str, dedup_window: int = 200_000) -> Iterator[str]:
    """Every push under ``url``, once, in segment order (two writers at once may have stored one twice)."""
    fs, prefix = filesystem(url)
    seen: set[int] = set()
    order: deque[int] = deque()
    try:
        names = _segments(fs, prefix)
        for name in names:
            for line in fs.cat_file(name).split(b"\n"):
                if not line.strip():
                    continue
                frame = parse_line(line)
                if frame is not None:
                    key = push_identity(frame, line)
                    if key in seen:
                        continue
                    seen.add(key)
                    order.append(key)
                    if len(order) > dedup_window:
                        seen.discard(order.popleft())
                yield line.decode("utf-8", "replace") + "\n"
    except PushLogError:
        raise
    except Exception as exc:
        raise _store_error(url, exc, "read") from None
