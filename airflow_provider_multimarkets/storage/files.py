"""The file primitives every writer of the provider shares (no Airflow): the one atomic write, the one lock,
and the one reader of complete lines.

* :func:`atomic_file` / :func:`write_atomic`: a file written whole or not at all. The data goes to a
  temporary file beside the target (unique per process and thread, created with the mode asked for,
  so a token is never readable by others, not even for a moment), which is renamed over the target
  (``os.replace``, atomic on POSIX). A kill or an error in the middle leaves the old file as it was
  and no temporary file behind (except after a SIGKILL, where one ``*.tmp`` may remain).
* :class:`Flock`: an exclusive ``flock`` on an open file descriptor, held for a ``with`` block
  (a no-op on Windows, where one writer is assumed).
* :func:`complete_lines`: the lines of a file that end with a newline. A last line without one is
  a write cut short (a process killed in the middle, a full disk): it was never counted, so it is
  never read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, AnyStr

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: single writer assumed
    fcntl = None  # type: ignore[assignment]


def _temp_name(path: str) -> str:
    return f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"


@contextmanager
def atomic_file(path: str, *, binary: bool = False, mode: int = 0o666, fsync: bool = False) -> Iterator[IO[Any]]:
    """A handle to write ``path`` whole: renamed into place when the ``with`` block ends without error.

    :param binary: a binary handle (else UTF-8 text).
    :param mode: the new file's permission bits (the umask applies): ``0o600`` for a secret.
    :param fsync: flush the data to the disk before the rename (a file that must survive a power loss).
    """
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:  # left by a killed process whose pid and thread id this one has again
        os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        handle: IO[Any] = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")
        with handle:
            yield handle
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_atomic(path: str, data: str | bytes, *, mode: int = 0o666, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` whole or not at all (see :func:`atomic_file`)."""
    with atomic_file(path, binary=isinstance(data, bytes), mode=mode, fsync=fsync) as handle:
        handle.write(data)


class Flock:
    """An exclusive ``flock`` on ``fd`` for the duration of a ``with`` block (shared by every process)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)


def complete_lines(handle: Iterable[AnyStr]) -> Iterator[AnyStr]:
    """The lines of ``handle`` (text or binary) that end with a newline (see the module docs)."""
    newline: Any = None
    for line in handle:
        if newline is None:
            newline = "\n" if isinstance(line, str) else b"\n"
        if line.endswith(newline):
            yield line
