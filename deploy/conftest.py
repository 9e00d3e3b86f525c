"""Fixtures of the deployment scenarios (``make test-deploy``): real Airflow deployments and
sandboxes as separate processes, torn down by PID whatever happens."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.harness import ROOT, Deployment, SandboxProcess, log  # noqa: E402


def _terminate(signum: int, frame: Any) -> None:
    # SIGTERM (CI's time limit, a user's kill) unwinds like Ctrl-C, so every fixture's teardown
    # stops its processes by PID instead of leaving a deployment behind.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _terminate)

#: Rows for the summary printed at the end (and written to deploy-output/results.json).
RESULTS: list[dict[str, Any]] = []
OUTPUT = ROOT / "deploy-output"


@pytest.fixture(scope="session")
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="mm-deploy-"))


class Sandboxes:
    """Sandbox processes started on demand (each its own apiKey, so each its own budget)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[SandboxProcess] = []

    def start(self, name: str, *args: str) -> SandboxProcess:
        sandbox = SandboxProcess(self.root / f"sandbox-{name}", *args)
        self.started.append(sandbox)
        log(f"sandbox {name} on port {sandbox.port} ({' '.join(args) or 'documented limits'})")
        return sandbox

    def stop(self) -> None:
        for sandbox in self.started:
            sandbox.stop()


@pytest.fixture(scope="session")
def sandboxes(workdir: Path) -> Iterator[Sandboxes]:
    registry = Sandboxes(workdir)
    yield registry
    registry.stop()


def record(row: dict[str, Any]) -> None:
    RESULTS.append(row)
    log("result: " + json.dumps(row))


@pytest.fixture(scope="module")
def local_deployment(workdir: Path, sandboxes: Sandboxes) -> Iterator[tuple[Deployment, dict[str, SandboxProcess]]]:
    """LocalExecutor, parallelism 16; sandboxes: ``budget`` (documented limits), ``unlimited``
    (no gateway limit, for the limiting-off baseline), ``ban`` (forced bans)."""
    boxes = {
        "budget": sandboxes.start("local-budget"),
        "unlimited": sandboxes.start("local-unlimited", "--rate-limit", "1000000"),
        "ban": sandboxes.start("local-ban"),
    }
    env = {
        "AIRFLOW_CONN_MULTIMARKETS_DEFAULT": boxes["budget"].conn_json(),
        "AIRFLOW_CONN_MM_UNLIMITED": boxes["unlimited"].conn_json(rate_limit_per_minute=0),
        "AIRFLOW_CONN_MM_BAN_WAIT": boxes["ban"].conn_json(rate_limit_max_wait=120),
        "AIRFLOW_CONN_MM_BAN_FAIL": boxes["ban"].conn_json(rate_limit_max_wait=5),
    }
    deployment = Deployment(workdir / "local", executor="LocalExecutor", env_extra=env)
    try:
        deployment.start()
        yield deployment, boxes
    finally:
        deployment.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "results.json").write_text(json.dumps(RESULTS, indent=2))
    terminalreporter.write_sep("=", "deployment results")
    for row in RESULTS:
        terminalreporter.write_line(json.dumps(row))
    terminalreporter.write_line(
        f"(also in {OUTPUT / 'results.json'}; finished {time.strftime('%H:%M:%S')}, pid {os.getpid()})"
    )
