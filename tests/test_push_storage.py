"""The push log on shared storage: ``file://`` URLs, and an S3-compatible server on loopback (moto).

On a store that cannot append, pushes are written as segment objects, each complete before its
pushes count; a restarted trigger restores from them, and readers (the report operator) read all
segments and take each push once.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_subscription, set_connection

from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.operators.report import MultiMarketsPushReportOperator
from airflow_provider_multimarkets.sandbox import SandboxConfig
from airflow_provider_multimarkets.storage.logs import iter_push_lines

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


def run_trigger(**kwargs: Any) -> dict[str, Any]:
    return run_subscription(window=30, **kwargs)


@pytest.fixture
def streaming(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    sb = sandbox_factory(SandboxConfig(trade_stream_rate=200))
    set_connection(monkeypatch, sb.connection(retry_backoff=0.01))
    return sb


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import s3fs

    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    name = f"pushes-{time.monotonic_ns()}"
    s3fs.S3FileSystem().mkdir(name)
    return name


def test_file_url_is_the_local_log(streaming: Any, tmp_path: Path) -> None:
    token = MultiMarketsHook().get_msg_token()
    out = tmp_path / "p.jsonl"
    event = run_trigger(token=token, max_messages=50, output_path=f"file://{out}")
    assert event["summary"]["messages"] == 50 and len(out.read_text().splitlines()) == 50
    assert Path(f"{out}.state.json").exists()


def test_segments_on_s3_survive_a_restart_and_read_once(
    streaming: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    token = MultiMarketsHook().get_msg_token()
    url = f"s3://{bucket}/run-1/pushes/"
    streaming.state.faults.ws.drop_after = 60
    streaming.state.faults.ws.drop_times = 1
    first = run_trigger(token=token, max_messages=150, output_path=url)
    assert first["status"] == "success", first
    assert first["summary"]["messages"] == 150 and first["summary"]["reconnects"] == 1
    fs = s3fs.S3FileSystem()
    segments = fs.ls(f"{bucket}/run-1/pushes", detail=False)
    assert segments and all(s.rsplit("/", 1)[1].startswith("part-") for s in segments)
    # the subscription starts again (a new triggerer): it goes on from the segments
    second = run_trigger(token=token, max_messages=300, output_path=url)
    summary = second["summary"]
    assert summary["messages"] == 300 and summary["restarts"] == 1 and summary["reconnects"] >= 1
    seqs = [json.loads(line)["seqId"] for line in iter_push_lines(url)]
    assert seqs == list(range(1, 301))  # gap-free, each once, across both runs' segments
    # the report reads every segment, and agrees with the subscription's summary
    result = MultiMarketsPushReportOperator(task_id="r", input_path=url, output_dir=str(tmp_path)).execute({})  # type: ignore[arg-type]
    assert result["messages"] == summary["messages"] == 300
    assert result["by_msg_code"] == summary["by_msg_code"]


def test_two_writers_on_segments_are_read_once(bucket: str) -> None:
    """An orphaned trigger run and its successor both storing one push: readers count it once."""
    from airflow_provider_multimarkets.storage.segments import SegmentedPushLog

    url = f"s3://{bucket}/two-writers"
    frame = {"msgCode": "trade", "timestamp": 1, "trace": "t", "seqId": 1, "content": {"a": 1}}
    old = SegmentedPushLog(url).open()
    time.sleep(0.002)  # another run id
    new = SegmentedPushLog(url).open()  # both opened before either wrote: no lock on an object store
    for log in (old, new):
        assert log.stage(frame, json.dumps(frame))
        assert log.commit() == 1
    assert len(list(iter_push_lines(url))) == 1
    again = SegmentedPushLog(url).open()
    assert again.tally.messages == 1 and again.duplicates == 1 and again.previous_runs == 2


def test_unreachable_store_is_a_clear_error(streaming: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    event = run_trigger(token="t" * 40, max_messages=5, output_path="s3://nowhere/p/")
    assert event["status"] == "error" and "push log segments under s3://nowhere/p" in event["message"]
    assert "credentials" in event["message"]


def test_unknown_scheme_names_the_missing_package(streaming: Any) -> None:
    event = run_trigger(token="t" * 40, max_messages=5, output_path="nosuchfs://bucket/p/")
    assert event["status"] == "error" and "Install the filesystem's package" in event["message"]
