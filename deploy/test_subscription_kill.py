"""Subscriptions that survive the triggerer, in a real deployment.

Two deferrable subscriptions run at once, against sandboxes that push 5 and 50 trades per second.
Midway the triggerer is SIGKILLed (its whole process group, or its main process only, which
leaves its trigger-runner child orphaned) and a new triggerer is started. For each subscription:

* the push log holds every push the sandbox delivered to a live connection (the sandbox's own
  delivery log), as one gap-free run of the stream's seqIds, with zero duplicates;
* the XCom summary equals the file (message count and counts by msgCode), and counts the restart
  and the reconnect.

Pushes the sandbox wrote after the subscription stopped reading at the end of its window are
reported (``delivered_after_window``), not counted as lost: the window was over.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Sandboxes, record

from deploy.harness import Deployment, http_json, log, q, wait_until

DAG = "mm_deploy_subscribe"
RATES = (5, 50)


@pytest.fixture(scope="module")
def sub_deployment(workdir: Path) -> Iterator[Deployment]:
    deployment = Deployment(
        workdir / "subscribe",
        executor="LocalExecutor",
        env_extra={
            # a triggerer whose heartbeat is this old is dead: its triggers go to another one
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        },
    )
    try:
        deployment.start()
        deployment.wait_for_dag(DAG)
        yield deployment
    finally:
        deployment.stop()


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _runs_of(path: Path) -> int:
    try:
        return int(json.loads(Path(f"{path}.state.json").read_text()).get("runs", 0))
    except (OSError, ValueError):
        return 0


@pytest.mark.parametrize("mode", ["group", "main"])
def test_triggerer_killed_midway(sub_deployment: Deployment, sandboxes: Sandboxes, workdir: Path, mode: str) -> None:
    deployment = sub_deployment
    runs: dict[int, dict[str, Any]] = {}
    for rate in RATES:
        sandbox = sandboxes.start(f"stream-{mode}-{rate}", "--trade-stream-rate", str(rate))
        conn_id = f"mm_stream_{mode}_{rate}"
        out = workdir / "pushes" / mode / f"rate{rate}.jsonl"
        runs[rate] = {"sandbox": sandbox, "conn_id": conn_id, "out": out}
        # a connection every component (workers, the new triggerer) reads from the metadata DB
        deployment.post(
            "/api/v2/connections",
            {
                "connection_id": conn_id,
                "conn_type": "multimarkets",
                "host": sandbox.connection["host"],
                "port": sandbox.connection["port"],
                "login": sandbox.connection["login"],
                "password": sandbox.connection["password"],
                "extra": json.dumps(sandbox.connection["extra"]),
            },
        )
    for run in runs.values():
        run["run_id"] = deployment.trigger(DAG, {"conn_id": run["conn_id"], "output_path": str(run["out"])})

    # kill once both logs hold about 12 s of pushes
    wait_until(
        "both subscriptions writing",
        lambda: all(len(_lines(r["out"])) >= 12 * rate for rate, r in runs.items()),
        180,
        every=0.5,
    )
    triggerer = deployment.components["triggerer"]
    old_group = triggerer.pid
    before = {rate: len(_lines(r["out"])) for rate, r in runs.items()}
    deployment.kill("triggerer", whole_group=(mode == "group"))
    killed_at = time.monotonic()
    time.sleep(1)
    orphan_alive = _group_alive(old_group)
    deployment.start_component("triggerer")
    taken_over = {}
    for rate, run in runs.items():
        wait_until(f"rate {rate}: a new trigger run", lambda r=run: _runs_of(r["out"]) >= 2, 180, every=0.2)
        taken_over[rate] = round(time.monotonic() - killed_at, 1)

    for rate, run in runs.items():
        state = deployment.wait_run(DAG, run["run_id"], 300)
        lines = _lines(run["out"])
        seqs = [frame["seqId"] for frame in lines]
        streams = http_json("GET", f"{run['sandbox'].base}/_sandbox/delivered")["streams"]
        assert len(streams) == 1, streams
        delivered = streams[0]["seq_ids"]
        summary = deployment.get(
            f"/api/v2/dags/{DAG}/dagRuns/{q(run['run_id'])}/taskInstances/subscribe/xcomEntries/return_value"
        ).get("value")
        summary = json.loads(summary) if isinstance(summary, str) else summary
        missing = sorted(set(delivered) - set(seqs))
        row = {
            "scenario": "subscription-kill",
            "kill": f"triggerer {mode}",
            "rate_per_s": rate,
            "state": state,
            "lines_at_kill": before[rate],
            "lines": len(lines),
            "distinct_seq_ids": len(set(seqs)),
            "sandbox_delivered": len(set(delivered)),
            "sandbox_sent_again_after_resume": len(delivered) - len(set(delivered)),
            "missing_in_window": [s for s in missing if s <= max(seqs, default=0)],
            "delivered_after_window": len([s for s in missing if s > max(seqs, default=0)]),
            "summary_messages": (summary or {}).get("messages"),
            "summary_reconnects": (summary or {}).get("reconnects"),
            "summary_restarts": (summary or {}).get("restarts"),
            "summary_duplicates_dropped": (summary or {}).get("duplicates_dropped"),
            "orphan_trigger_runner_alive": orphan_alive,
            "new_trigger_run_after_s": taken_over[rate],
        }
        record(row)
        assert state == "success", deployment.task_log(DAG, run["run_id"], "subscribe")
        assert seqs == list(range(1, len(seqs) + 1)), "the log is the stream's gap-free run of seqIds"
        assert len(seqs) == len(set(seqs)), "no push written twice"
        assert row["missing_in_window"] == [], "every push delivered to a live connection is in the log"
        assert summary["messages"] == len(lines)
        assert summary["by_msg_code"] == {"trade": len(lines)}
        assert summary["restarts"] >= 1 and summary["reconnects"] >= 1
    if orphan_alive:
        _kill_group(old_group)


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in the process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
        log(f"killed the orphaned process group {pgid}")
    except ProcessLookupError:
        pass
