"""The files of a push-event watcher: its journal (a push log) kept bounded, and its saved msg token."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator

from airflow_provider_multimarkets.storage.files import atomic_file, complete_lines, write_atomic


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
    with open(path, "rb") as handle:
        tail = deque(complete_lines(handle), maxlen=keep_lines)
    with atomic_file(path, binary=True, fsync=True) as handle:
        handle.writelines(tail)
    return True


def read_lines(path: str) -> Iterator[str]:
    """The complete lines of a journal (none when it does not exist)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield from complete_lines(handle)


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
    write_atomic(path, token, mode=0o600)
