"""Shared fixtures: an isolated Airflow home with a SQLite metadata DB, and a sandbox per test.

The Airflow environment is set before anything imports Airflow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_multimarkets.sandbox.data import ORDER_PROCESS_EXAMPLE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the deployment harness (deploy/) serves the tests too
_HOME = Path(tempfile.mkdtemp(prefix="mm-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
DAGS_FOLDER = _HOME / "dags"
DAGS_FOLDER.mkdir()
for _dag_file in [*sorted((ROOT / "example_dags").glob("*.py")), *sorted((ROOT / "tests" / "dags").glob("*.py"))]:
    (DAGS_FOLDER / _dag_file.name).symlink_to(_dag_file)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(_HOME / "logs")
os.environ["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
os.environ.pop("AIRFLOW_CONN_MULTIMARKETS_DEFAULT", None)

# The SIGN-DEMO key pair published with the official signing demo (digest §12.2).
DEMO_PRIVATE_KEY = "MIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBAMElXgnHKpoM/y/5R7edOjcK52tAHjLaKExjxRJnTb03gIZfXLJ+SKhcU6wmvS/fpyOhQ2xLtM4cxWbKzECl+8pEn7OBRAw7KTFQCCIcbXTuGE8w3yF59PH56gzrQ/S1CRVIBBYFFKEdds0MKaenAbipPkecxrnly35bA1RwstQNAgMBAAECgYAOTu1bfhSq2uGgtS/Z61zfrQAd0t8p1z17Az0bMunwZYcw7SmZ038gcc6FB02mmUPxgMXU5Prc9gatqcJd263+WgQqSWCSBzMS1FK6t5RHHw6JK9SoAdan3GL5dbCeeprJbXFtXrnc6nRc6NOrPlI7VH8j+OKNj0Rh7Zqee/AbJQJBAOdx/rheoByOOgSXsSpiLcB6bS/zjXWJeR1kEwn3gM+g3D/vhoQKrJEcjy45b2dzDpxUjuEEGCflmAcKujy8S/cCQQDVoyu2jdFfI/RtKAq9eS5uOl7zzL19L/TuTT9lEIsjTBBQArH7GDYFZ2eeUQbXceR9GIU3OWg5SYwpcUty8XcbAkBO/jlR8/nxxRlIN/3f2WKEL0TU+OtvElykC2P0IuVz+BM0PyxKJNqBLJ4xyKidRkfWU4XwhtU3yMT6ok6uLBZBAkEAhStVUFJOtNOgxXo0V692NdfE4Iw7ghGmx/T3E3SghrwfXwCPGUoaQnwWpyUy8pFYMHJcd/Qc97jU2fB5a4kBCQJBAJi6wHIMK8wWaoegZpnSyPC66a7EoaxHR04IEZIlXvR1RVORYv9Xghx/VuHBjhMP0LtTWQ61Tc04acLvZDNq8FM="
DEMO_PUBLIC_KEY = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDBJV4JxyqaDP8v+Ue3nTo3CudrQB4y2ihMY8USZ029N4CGX1yyfkioXFOsJr0v36cjoUNsS7TOHMVmysxApfvKRJ+zgUQMOykxUAgiHG107hhPMN8hefTx+eoM60P0tQkVSAQWBRShHXbNDCmnpwG4qT5HnMa55ct+WwNUcLLUDQIDAQAB"


#: The isolated-margin market order of the documented Order Process (sandbox seed data).
ORDER_BIZ_TYPE = "tradeapi.app.OrderApiService.addMarketOrder"
ORDER_BODY: dict[str, Any] = dict(ORDER_PROCESS_EXAMPLE)


@pytest.fixture(scope="session")
def key_pair() -> tuple[str, str]:
    from airflow_provider_multimarkets.sandbox.keys import generate_key_pair

    return generate_key_pair()


@pytest.fixture(autouse=True)
def _quiet_sandbox_log() -> None:
    logging.getLogger("multimarkets.sandbox").setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def _fresh_socket_caches() -> Iterator[None]:
    """Each test looks its connection and proxy up again (a process reuses them for a while)."""
    from airflow_provider_multimarkets.messaging import client

    client._SETTINGS.clear()
    try:
        from airflow_provider_multimarkets.messaging import ws
    except ImportError:  # pragma: no cover
        ws = None
    if ws is not None:
        ws._proxies.clear()
    yield
    client._SETTINGS.clear()


@pytest.fixture(autouse=True)
def _own_budget_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test has its own host store: a block recorded by one test never holds up another."""
    budget_dir = tmp_path / "mm-budget"
    monkeypatch.setenv("MULTIMARKETS_BUDGET_DIR", str(budget_dir))
    return budget_dir


class FakeTime:
    """Stands for the ``time`` module of the budget and the hook: sleeps are recorded, and advance
    the budget's clock instead of passing."""

    def __init__(self) -> None:
        import time as real

        self._real = real
        self.offset = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self._real.time() + self.offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the hook's back-off sleeps and the budget's waits instead of sleeping (the budget's
    clock moves on by what it "slept")."""
    fake = FakeTime()
    monkeypatch.setattr("airflow_provider_multimarkets.api.budget.time", fake)
    monkeypatch.setattr("airflow_provider_multimarkets.hooks.multimarkets.time.sleep", fake.sleep)
    return fake.sleeps


@pytest.fixture
def sandbox_factory(key_pair: tuple[str, str]) -> Iterator[Any]:
    from airflow_provider_multimarkets.sandbox import Sandbox, SandboxConfig

    started: list[Any] = []

    def make(config: Any = None, *, strict: bool = True, **kwargs: Any) -> Any:
        """A sandbox; its message WebSocket in strict mode (only documented frames: no pong, no
        subscribe_asset answer, every close 1000) unless ``strict=False``."""
        config = config or SandboxConfig()
        config.strict_frames = strict
        sb = Sandbox(config, private_key=key_pair[0], public_key=key_pair[1], **kwargs)
        sb.start()
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(sandbox_factory: Any) -> Any:
    return sandbox_factory()


def set_connection(
    monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any], conn_id: str = "multimarkets_default"
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


@pytest.fixture
def mm_conn(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The default connection pointed at the sandbox, with fast retries for tests."""
    conn = sandbox.connection(retry_backoff=0.01)
    set_connection(monkeypatch, conn)
    return conn


def load_dag(dag_id: str) -> Any:
    """The DAG object of ``dag_id`` from the DAGs folder (the file the bundle also parses)."""
    import importlib.util

    for path in sorted(DAGS_FOLDER.glob("*.py")):
        module = _DAG_MODULES.get(path)
        if module is None:
            spec = importlib.util.spec_from_file_location(f"mm_dagfile_{path.stem}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _DAG_MODULES[path] = module
        for value in vars(module).values():
            if getattr(value, "dag_id", None) == dag_id and hasattr(value, "test"):
                return value
    raise LookupError(dag_id)


_DAG_MODULES: dict[Path, Any] = {}


def ti_states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state).rsplit(".", 1)[-1].lower() for ti in dag_run.get_task_instances()}


def xcom_value(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    try:
        from airflow.models.xcom import XComModel
    except ImportError:  # Airflow 2.x
        from airflow.models.xcom import XCom

        return XCom.get_one(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key)
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key)
            .one()
        )
        return XComModel.deserialize_value(row)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB (once per test session)."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return _HOME


def run_subscription(*, window: float = 20.0, backoff: float = 0.05, **kwargs: Any) -> dict[str, Any]:
    """Run the subscription trigger in this process until its event: a ``window``-second deadline
    and a quick reconnect backoff unless the test gives its own."""
    import asyncio
    import time

    from airflow_provider_multimarkets.operators.msg_subscribe import _first_event
    from airflow_provider_multimarkets.triggers.msg_subscribe import MultiMarketsMsgSubscribeTrigger

    kwargs.setdefault("deadline", time.time() + window)
    kwargs.setdefault("reconnect_backoff", backoff)
    return asyncio.run(_first_event(MultiMarketsMsgSubscribeTrigger(**kwargs)))


class FakeTaskStateStore:
    """Airflow 3.3's ``context["task_state_store"]`` in memory: ``get``/``set``/``delete`` as the SDK's
    accessor has them. ``writes`` records every ``set`` with ``marks()`` taken at that moment (e.g. how
    many order calls the sandbox had received), so a test sees what was stored before which call."""

    def __init__(self, values: dict[str, Any] | None = None, marks: Any = None) -> None:
        self.values: dict[str, Any] = dict(values or {})
        self.writes: list[tuple[str, Any, Any]] = []
        self.retentions: dict[str, Any] = {}
        self.marks = marks or (lambda: None)
        self.fail_on: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        if key in self.fail_on:
            raise RuntimeError(f"the API server refused {key}")
        self.values[key] = json.loads(json.dumps(value))  # JSON values only, as the real store
        self.retentions[key] = retention
        self.writes.append((key, self.values[key], self.marks()))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


class FakeTI:
    """The task instance fields the order operator reads, and its XCom pushes."""

    def __init__(self, try_number: int = 1, run_id: str = "manual__1", task_id: str = "order") -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index = "dag", run_id, task_id, -1
        self.try_number = try_number
        self.stats_tags: dict[str, str] = {}
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def order_context(ti: FakeTI, store: FakeTaskStateStore | None = None) -> Any:
    from types import SimpleNamespace

    context: dict[str, Any] = {"ti": ti, "dag_run": SimpleNamespace(conf={})}
    if store is not None:
        context["task_state_store"] = store
    return context


class FakeClock:
    """The client's wall clock, moved on by its waits between connections: a backoff of ``s``
    seconds advances ``time.time()`` by ``s`` at once (and yields to the loop), so windows and
    backoffs pass in order whatever the machine's load, and no outcome depends on real timing.
    ``time.monotonic()`` (pings, idle) stays real."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []
        clock = self

        class Time:
            def __getattr__(self, name: str) -> Any:
                return getattr(time, name)

            def time(self) -> float:
                return time.time() + clock.offset

        async def pause(seconds: float) -> None:
            clock.sleeps.append(seconds)
            clock.offset += max(seconds, 0.0)
            await asyncio.sleep(0)

        self.time, self.pause = Time(), pause


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The subscription client on a :class:`FakeClock` (give it a deadline from ``fake_clock.time``)."""
    from airflow_provider_multimarkets.messaging import client

    clock = FakeClock()
    monkeypatch.setattr(client, "time", clock.time)
    monkeypatch.setattr(client, "_pause", clock.pause)
    return clock
