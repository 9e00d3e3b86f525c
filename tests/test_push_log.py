"""The push log: identity, durability, restart, concurrent writers, bounded memory, write errors."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_multimarkets.messaging.codec import decode_frame
from airflow_provider_multimarkets.messaging.identity import push_identity
from airflow_provider_multimarkets.messaging.subscription import SubscriptionRecorder
from airflow_provider_multimarkets.storage.paths import spool_path_for
from airflow_provider_multimarkets.storage.push_log import PushLog, PushLogError, as_line, read_push_log


def trade(order_id: int, *, seq: Any = 1, trace: Any = None, status: str = "2", ts: int = 1_700_000_000_000) -> dict:
    return {
        "msgCode": "trade",
        "timestamp": ts,
        "seqId": seq,
        "trace": trace,
        "content": {"bizType": "POSITION_OPEN", "paramMap": {"orderId": str(order_id), "orderStatus": status}},
    }


def add(log: PushLog, frame: dict[str, Any]) -> bool:
    return log.append(frame, json.dumps(frame))


def test_identity_never_merges_distinct_pushes() -> None:
    # per-connection seqIds, no trace: 10 orders over two connections that both count 1..5
    frames = [trade(i, seq=(i % 5) + 1) for i in range(10)]
    assert len({push_identity(f) for f in frames}) == 10
    # five different orders that share one (seqId, trace) pair
    assert len({push_identity(trade(i, seq=7, trace="t")) for i in range(5)}) == 5
    # the same content at another millisecond is another push
    assert push_identity(trade(1, ts=1)) != push_identity(trade(1, ts=2))
    # the same push sent again on a new connection, numbered anew: one push
    assert push_identity(trade(1, seq=1, trace="a")) == push_identity(trade(1, seq=99, trace="a"))
    # identical content in the same millisecond but its own trace: another push
    assert push_identity(trade(1, seq=1, trace="a")) != push_identity(trade(1, seq=2, trace="b"))


def test_identity_from_the_text_leaves_out_only_the_seq_id() -> None:
    def ident(frame: dict[str, Any]) -> int:
        return push_identity(frame, json.dumps(frame, separators=(",", ":")).encode())

    assert ident(trade(1, seq=1, trace="a")) == ident(trade(1, seq=2, trace="a"))
    assert ident(trade(1, seq="s1", trace="a")) == ident(trade(1, seq="s2", trace="a"))
    assert ident(trade(1, seq=1, trace="a")) != ident(trade(1, seq=1, trace="b"))
    assert ident(trade(1, seq=1)) != ident(trade(2, seq=1))
    # "seqId" inside the content (a nested member, or text in a string) is never cut: parsed path
    nested = trade(1, seq=1)
    nested["content"]["seqId"] = 1
    other = trade(1, seq=1)
    other["content"]["seqId"] = 2
    assert ident(nested) != ident(other)
    quoted = trade(1, seq=1)
    quoted["content"]["note"] = '"seqId":1'
    assert ident(quoted) != ident(trade(1, seq=1))
    no_seq = trade(1)
    del no_seq["seqId"]
    assert ident(no_seq) == ident(dict(no_seq))


def test_log_writes_each_distinct_push_once(tmp_path: Path) -> None:
    with PushLog(str(tmp_path / "p.jsonl")) as log:
        assert all(add(log, trade(i, seq=(i % 5) + 1)) for i in range(10))
        assert not add(log, trade(3, seq=42))
        assert log.tally.messages == 10 and log.duplicates == 1
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 10


def test_unhashable_fields_are_recorded_not_fatal(tmp_path: Path) -> None:
    rec = SubscriptionRecorder(log=PushLog(str(tmp_path / "p.jsonl")).open())
    odd = {"msgCode": ["trade"], "seqId": [1, 2], "trace": {"x": 1}, "content": {"bizType": {"a": 1}}}
    assert rec.add(odd) and not rec.add(odd)
    assert rec.add(trade(1))
    summary = rec.summary(output_path="x")
    assert summary["messages"] == 2 and summary["by_msg_code"] == {'["trade"]': 1, "trade": 1}


def test_restart_restores_counts_and_identities(tmp_path: Path) -> None:
    path = str(tmp_path / "p.jsonl")
    with PushLog(path) as log:
        for i in range(20):
            add(log, trade(i))
    seen: list[dict[str, Any]] = []
    with PushLog(path, on_push=seen.append) as again:
        assert again.restored == 20 and again.tally.messages == 20 and len(seen) == 20
        assert not add(again, trade(19, seq=5))  # sent again after the restart
        assert add(again, trade(20))
    assert read_push_log(path).tally.as_dict()["messages"] == 21


def test_line_cut_by_a_kill_is_dropped_not_counted(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(trade(1)) + "\n" + json.dumps(trade(2))[:30])  # the writer died mid-line
    with PushLog(str(path)) as log:
        assert log.tally.messages == 1
        assert add(log, trade(2))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["content"]["paramMap"]["orderId"] for line in lines] == ["1", "2"]


def test_two_writers_on_one_file_write_nothing_twice(tmp_path: Path) -> None:
    """An orphaned trigger run and the new one, both draining pushes into the same log."""
    path = str(tmp_path / "p.jsonl")
    with PushLog(path) as old, PushLog(path) as new:
        for i in range(50):
            add(old, trade(i))
            add(new, trade(i))  # the same push, delivered to both connections
            add(new, trade(1000 + i))
    assert read_push_log(path).tally.messages == 100
    assert len(Path(path).read_text().splitlines()) == 100


def _writer(path: str, start: int) -> None:
    with PushLog(path) as log:
        for i in range(400):
            add(log, trade(start + i))


def test_writers_in_separate_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "p.jsonl")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, start)) for start in (0, 200, 400)]  # overlapping ranges
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ids = [json.loads(line)["content"]["paramMap"]["orderId"] for line in Path(path).read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 800


def test_memory_is_bounded(tmp_path: Path) -> None:
    with PushLog(str(tmp_path / "p.jsonl"), dedup_window=10) as log:
        for i in range(100):
            add(log, trade(i))
        assert log.tally.messages == 100
        # two generations of identities: at most twice the window, and the newest window always known
        assert len(log._seen) + len(log._seen_old) <= 20
        assert all(not add(log, trade(i)) for i in range(90, 100)) and log.duplicates == 10
    rec = SubscriptionRecorder(inline_limit=5)
    for i in range(100):
        rec.add(trade(i))
    assert len(rec.inline) == 5 and len(rec._recent) <= 256


def test_disk_full_is_a_clear_error(tmp_path: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = tmp_path / "pushes.jsonl"
    out.symlink_to("/dev/full")  # every write: ENOSPC
    with PushLog(str(out)) as log, pytest.raises(PushLogError, match="disk is full") as info:
        add(log, trade(1))
    assert info.value.cause == "disk full" and log.tally.messages == 0  # never counted


def test_directory_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(PushLogError, match="is a file") as info:
        PushLog(str(tmp_path / "f" / "pushes.jsonl")).open()
    assert info.value.cause == "not a directory"
    with pytest.raises(PushLogError, match="is a directory"):
        PushLog(str(tmp_path)).open()


def test_binary_frames_are_decoded() -> None:
    text = '{"msgCode":"trade","content":{"symbol":"€"}}'
    assert decode_frame(text.encode("utf-8")) == text
    assert decode_frame(b"\xef\xbb\xbf" + text.encode("utf-8")) == text
    assert decode_frame(text.encode("utf-16")) == text
    assert decode_frame(text.encode("utf-32")) == text
    assert decode_frame("\ufeff" + text) == text
    assert decode_frame(b"\xff\x00\xc3") is None


def test_multi_line_frames_become_one_line() -> None:
    frame = {"msgCode": "trade", "content": {"a": 1}}
    assert as_line(frame, '{"msgCode": "trade",\n "content": {"a": 1}}') == b'{"msgCode":"trade","content":{"a":1}}'
    assert as_line(frame, '{"msgCode": "trade",\r\n "content": {"a": 1}}') == b'{"msgCode":"trade","content":{"a":1}}'
    assert as_line(frame, "{}") == b"{}"


def test_spool_path_is_per_task_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIMARKETS_PUSH_DIR", str(tmp_path))
    a = spool_path_for("d", "manual__2026-01-01T00:00:00+00:00", "t", 3)
    assert a.startswith(str(tmp_path)) and a.endswith("t.3.jsonl") and ":" not in a and "+" not in a
    assert a != spool_path_for("d", "manual__2026-01-01T00:00:00+00:00", "t", 4)
