"""The files of a push-event watcher: its journal (a push log) kept bounded, and its saved msg token."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator


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
