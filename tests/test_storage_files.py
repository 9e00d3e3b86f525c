"""The one atomic write, the one lock and the one reader of complete lines (storage/files.py), on real files."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from airflow_provider_multimarkets.storage.files import Flock, atomic_file, complete_lines, write_atomic


def test_write_atomic_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    write_atomic(str(target), '{"new": 1}')
    assert target.read_text() == '{"new": 1}'
    write_atomic(str(target), b"bytes")
    assert target.read_bytes() == b"bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(str(target)) as handle:
        handle.write("half")
        raise RuntimeError("killed in the middle")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_secret_is_never_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "token"
    write_atomic(str(target), "tok", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_temporary_file_left_by_a_killed_process_is_replaced(tmp_path: Path) -> None:
    import threading

    target = tmp_path / "t"
    stale = tmp_path / f"t.{os.getpid()}.{threading.get_ident()}.tmp"
    stale.write_text("stale")
    os.chmod(stale, 0o644)
    write_atomic(str(target), "fresh", mode=0o600)
    assert target.read_text() == "fresh" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not stale.exists()


def test_complete_lines_drops_a_line_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"cut')
    with open(path, encoding="utf-8") as handle:
        assert list(complete_lines(handle)) == ['{"a":1}\n', '{"b":2}\n']
    with open(path, "rb") as handle:
        assert list(complete_lines(handle)) == [b'{"a":1}\n', b'{"b":2}\n']


def _append_under_lock(path: str, tag: str, count: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for i in range(count):
            with Flock(fd):
                # two writes under one lock: another process never gets between them
                os.write(fd, f"{tag}{i}:".encode())
                os.write(fd, f"{tag}{i}\n".encode())
    finally:
        os.close(fd)


def test_the_lock_is_held_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_under_lock, args=(path, tag, 300)) for tag in "ab"]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 600
    assert all(left == right for left, right in (line.split(":") for line in lines))
