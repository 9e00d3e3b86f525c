"""A real Airflow deployment on this machine, stood up and torn down by the scenarios themselves.

``Deployment`` runs Airflow's components as separate processes, each in its own process group:
``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and, with the CeleryExecutor, a
``redis-server`` and ``airflow celery worker`` processes standing for separate hosts. Ports are
picked free on 127.0.0.1, the metadata DB is SQLite in a temporary ``AIRFLOW_HOME``, every wait is
bounded, and ``stop()`` ends every process group by PID (SIGTERM, then SIGKILL).

``SandboxProcess`` runs ``multimarkets-sandbox`` as its own process and reads its counters over
HTTP. ``Deployment.kill()`` / ``start_component()`` / ``task_pid()`` are the kill-test helpers:
SIGKILL a component (its whole group, or its main process only) or a task's own process.

``PostgresCluster`` runs the metadata DB on PostgreSQL instead (Debian's ``initdb``/``pg_ctl``, a
cluster of its own on a free port, as the ``postgres`` user when this runs as root);
``Deployment(triggerers=2, triggerer_env=[...])`` runs two triggerers standing for two hosts
(their own state dirs); ``RedisServer`` is a Redis that a scenario kills and starts again, empty
or with its data (AOF); ``Deployment.create_connection`` creates connections through the REST API.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TERMINAL = {"success", "failed"}


def log(message: str) -> None:
    print(f"[deploy {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - kept for the timeout message
            last_error = exc
        else:
            if result:
                return result
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:g} s (last error: {last_error!r})")


def http_json(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback only
        text = response.read().decode()
    return json.loads(text) if text else None


@dataclass
class Component:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: SIGKILLed on purpose by a scenario (``Deployment.kill``): not a component that died
    killed: bool = False

    def start(self) -> None:
        self.starts += 1
        self.killed = False
        handle = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        handle.write(f"\n==== start {self.starts} at {time.strftime('%H:%M:%S')}: {' '.join(self.argv)}\n".encode())
        handle.flush()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(ROOT)
        )
        handle.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = 15.0) -> None:
        if self.proc is None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        self.signal_group(signal.SIGKILL)  # children of the group too, even when the leader exited
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {self.proc.pid}) did not die after SIGKILL")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class SandboxProcess:
    """``multimarkets-sandbox`` as its own process; its counters are read over HTTP."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        conn_file = workdir / "sandbox-connection.json"
        self.component = Component(
            "sandbox",
            [
                str(BIN / "multimarkets-sandbox"),
                "--port",
                str(self.port),
                "--key-file",
                str(workdir / "sandbox-keys.json"),
                "--connection-file",
                str(conn_file),
                "--quiet",
                *args,
            ],
            dict(os.environ),
            workdir / "sandbox.log",
        )
        self.component.start()
        self.base = f"http://127.0.0.1:{self.port}"
        wait_until("sandbox health", lambda: http_json("GET", f"{self.base}/healthz")["ok"], 60)
        self.connection: dict[str, Any] = json.loads(conn_file.read_text())

    def conn_json(self, **extra: Any) -> str:
        conn = json.loads(json.dumps(self.connection))
        conn["extra"].update(extra)
        return json.dumps(conn)

    def calls(self, since: float = 0.0) -> list[dict[str, Any]]:
        return list(http_json("GET", f"{self.base}/_sandbox/calls?since={since}")["calls"])

    def ban(self, seconds: float) -> float:
        return float(http_json("POST", f"{self.base}/_sandbox/ban?seconds={seconds}")["banned_until"])

    def health(self) -> dict[str, Any]:
        return dict(http_json("GET", f"{self.base}/healthz"))

    def stop(self) -> None:
        self.component.stop()


@dataclass
class Deployment:
    """A real Airflow 3 deployment: every component its own process (group)."""

    home: Path
    executor: str = "LocalExecutor"
    dags_folder: Path = ROOT / "deploy" / "dags"
    parallelism: int = 16
    celery_workers: int = 2
    worker_concurrency: int = 8
    env_extra: dict[str, str] = field(default_factory=dict)
    worker_env: list[dict[str, str]] = field(default_factory=list)
    components: dict[str, Component] = field(default_factory=dict)
    redis_port: int | None = None
    #: a SQLAlchemy URL of the metadata DB (e.g. ``PostgresCluster.url``); default SQLite in ``home``
    sql_alchemy_conn: str | None = None
    #: triggerers to run; the second and later are ``triggerer-2`` ..., each with its ``triggerer_env``
    triggerers: int = 1
    triggerer_env: list[dict[str, str]] = field(default_factory=list)
    #: start the triggerers after the first with ``start_component`` (not in ``start()``)
    defer_triggerers: bool = False
    _token: str | None = None

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": self.executor,
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(self.parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn or f"sqlite:///{self.home}/airflow.db",
                "AIRFLOW__API_AUTH__JWT_SECRET": "deploy-test-jwt-secret-0123456789abcdef",
                "AIRFLOW__API__SECRET_KEY": "deploy-test-secret-key",
                "AIRFLOW__API__MAXIMUM_PAGE_LIMIT": "1000",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "MULTIMARKETS_BUDGET_DIR": str(self.home / "budget-host-a"),
                "PYTHONUNBUFFERED": "1",
                "NO_PROXY": "*",
            }
        )
        if self.executor == "CeleryExecutor":
            self.redis_port = free_port()
            env.update(
                {
                    "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                    "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://127.0.0.1:{self.redis_port}/1",
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                    "AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL": "False",
                }
            )
        env.update(self.env_extra)
        self.env = env

    # ---- life cycle ------------------------------------------------------------------------------

    def _component(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Component:
        component = Component(name, argv, env or self.env, self.home / f"{name}.log")
        self.components[name] = component
        return component

    def start(self) -> Deployment:
        started = time.monotonic()
        result = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        airflow = str(BIN / "airflow")
        if self.executor == "CeleryExecutor":
            redis_server = shutil.which("redis-server")
            if not redis_server:
                raise RuntimeError("redis-server is missing: `make test-deploy` installs Debian's redis-server")
            self._component(
                "redis",
                [
                    redis_server,
                    "--port",
                    str(self.redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
            ).start()
        self._component(
            "api-server", [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"]
        ).start()
        self._component("scheduler", [airflow, "scheduler"]).start()
        self._component("dag-processor", [airflow, "dag-processor"]).start()
        for index in range(self.triggerers):
            name = "triggerer" if index == 0 else f"triggerer-{index + 1}"
            env = dict(self.env)
            if index < len(self.triggerer_env):
                env.update(self.triggerer_env[index])
            triggerer = self._component(name, [airflow, "triggerer"], env)
            if index == 0 or not self.defer_triggerers:
                triggerer.start()
        if self.executor == "CeleryExecutor":
            for index in range(self.celery_workers):
                env = dict(self.env)
                env["MULTIMARKETS_BUDGET_DIR"] = str(self.home / f"budget-host-{chr(ord('a') + index)}")
                if index < len(self.worker_env):
                    env.update(self.worker_env[index])
                self._component(
                    f"worker-{index + 1}",
                    [
                        airflow,
                        "celery",
                        "worker",
                        "--celery-hostname",
                        f"host-{index + 1}@%h",
                        "--concurrency",
                        str(self.worker_concurrency),
                    ],
                    env,
                ).start()
        wait_until("api-server health", lambda: self.get("/api/v2/monitor/health"), 180, every=1)
        log(f"{self.executor} deployment up in {time.monotonic() - started:.1f} s (api {self.api}, home {self.home})")
        return self

    def stop(self) -> None:
        for name in reversed(list(self.components)):
            self.components[name].stop()

    def check_alive(self) -> None:
        dead = [name for name, c in self.components.items() if c.proc is not None and not c.killed and not c.alive()]
        if dead:
            raise RuntimeError("components died: " + "; ".join(f"{n}:\n{self.components[n].tail()}" for n in dead))

    # ---- kill-test helpers ---------------------------------------------------------------------------

    def kill(self, name: str, *, whole_group: bool = True, sig: int = signal.SIGKILL) -> None:
        """SIGKILL a component: its whole process group (with its children), or its main process only."""
        component = self.components[name]
        component.killed = True
        if whole_group:
            component.signal_group(sig)
        else:
            os.kill(component.pid, sig)
        assert component.proc is not None
        if whole_group or sig == signal.SIGKILL:
            try:
                component.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        log(f"killed {name} ({'group' if whole_group else 'main process'}, signal {sig})")

    def start_component(self, name: str) -> None:
        self.components[name].start()
        log(f"restarted {name} (start {self.components[name].starts})")

    def task_pid(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> int | None:
        """The pid Airflow recorded for a running task instance's own process."""
        ti = self.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{q(run_id)}/taskInstances/{task_id}"
            + (f"/{map_index}" if map_index >= 0 else "")
        )
        return ti.get("pid") if ti else None

    # ---- REST API -------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        if self._token is None:
            self._token = http_json("GET", f"{self.api}/auth/token")["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def get(self, path: str) -> Any:
        return http_json("GET", self.api + path, headers=self._auth())

    def post(self, path: str, body: Any) -> Any:
        return http_json("POST", self.api + path, body, headers=self._auth())

    def patch(self, path: str, body: Any) -> Any:
        return http_json("PATCH", self.api + path, body, headers=self._auth())

    def create_connection(self, conn_id: str, conn: dict[str, Any]) -> None:
        """Create (or replace) an Airflow connection through the REST API, as a user of the UI would."""
        body = {
            "connection_id": conn_id,
            "conn_type": conn.get("conn_type", "multimarkets"),
            "host": conn.get("host"),
            "login": conn.get("login"),
            "password": conn.get("password"),
            "port": conn.get("port"),
            "schema": conn.get("schema"),
            "extra": json.dumps(conn.get("extra") or {}),
        }
        try:
            http_json("DELETE", f"{self.api}/api/v2/connections/{q(conn_id)}", headers=self._auth())
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        self.post("/api/v2/connections", body)

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        def parsed() -> bool:
            try:
                return bool(self.get(f"/api/v2/dags/{dag_id}"))
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return False
                raise

        wait_until(f"DAG {dag_id} parsed", parsed, timeout, every=1)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        log(f"triggered {dag_id}: {run['dag_run_id']}")
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{q(run_id)}")["state"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float, every: float = 2.0) -> str:
        def finished() -> str | None:
            self.check_alive()
            state = self.run_state(dag_id, run_id)
            return state if state in TERMINAL else None

        state = wait_until(f"run {run_id} of {dag_id}", finished, timeout, every)
        log(f"{dag_id} {run_id}: {state}")
        return str(state)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{q(run_id)}/taskInstances?limit=1000&offset={len(items)}")
            items += page["task_instances"]
            if len(items) >= page["total_entries"] or not page["task_instances"]:
                return items

    def states(self, dag_id: str, run_id: str, task_id: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ti in self.task_instances(dag_id, run_id):
            if task_id is None or ti["task_id"] == task_id:
                counts[str(ti["state"])] = counts.get(str(ti["state"]), 0) + 1
        return counts

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        """The task's log file as the worker wrote it."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder = folder / f"map_index={map_index}"
        path = folder / f"attempt={try_number}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def all_task_logs(self) -> Iterable[Path]:
        return (self.home / "logs").rglob("attempt=*.log")

    def task_state(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """A task instance's task state store (Airflow 3.3+), key -> value, through the REST API."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{q(run_id)}/taskInstances/{task_id}/state-store?limit=100"
        if map_index >= 0:
            path += f"&map_index={map_index}"
        return {entry["key"]: entry["value"] for entry in self.get(path)["task_state_store"]}

    def pool(self, name: str = "default_pool") -> dict[str, Any]:
        """A pool's slots as the REST API reports them (``running_slots``, ``deferred_slots``, ...)."""
        return dict(self.get(f"/api/v2/pools/{q(name)}"))

    def component_of(self, pid: int) -> str | None:
        """The component (e.g. ``worker-1``) whose process tree holds ``pid`` (walks ``/proc`` parents)."""
        mains = {c.proc.pid: name for name, c in self.components.items() if c.proc is not None}
        current = pid
        for _ in range(64):
            if current in mains:
                return mains[current]
            try:
                with open(f"/proc/{current}/stat", encoding="utf-8") as handle:
                    current = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                return None
            if current <= 1:
                return None
        return None


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def start_redis_server(port: int, timeout: float = 30.0) -> subprocess.Popen[bytes]:
    """Debian's redis-server on 127.0.0.1:``port``, without persistence; returns once it answers PING."""
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError("redis-server is missing: the Makefile installs Debian's redis-server package")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def pong() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    try:
        wait_until(f"redis-server on port {port}", pong, timeout, every=0.05)
    except TimeoutError:
        proc.kill()
        raise
    return proc


def peak_in_window(times: list[float], window: float = 60.0) -> int:
    """The most calls in any ``window`` (sliding, wherever it starts; any unit, seconds or ms)."""
    stamps = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(stamps):
        while j < len(stamps) and stamps[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


def _as_postgres_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the ``postgres`` user."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _postgres_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        candidate = version / "bin" / name
        if candidate.exists():
            return str(candidate)
    raise RuntimeError(f"PostgreSQL's {name} is missing: `make test-deploy` installs Debian's postgresql package")


class PostgresCluster:
    """A PostgreSQL cluster of its own (``initdb`` into ``directory``, ``pg_ctl`` on a free loopback port).

    Trust authentication on 127.0.0.1 only; fsync off (a test DB). ``url`` is the SQLAlchemy URL of
    its ``airflow`` database (psycopg2). ``stop()`` ends it (``pg_ctl stop -m immediate``, then by PID).
    """

    def __init__(self, directory: Path | None = None) -> None:
        import tempfile

        # its own directory, which the postgres user can reach (a test's work dir is private to root)
        self.directory = directory or Path(tempfile.mkdtemp(prefix="mm-deploy-postgres-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.log_path = self.directory / "postgres.log"
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"

    def start(self) -> PostgresCluster:
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        subprocess.run(
            _as_postgres_user(
                [_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
            timeout=300,
        )
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        )
        subprocess.run(
            _as_postgres_user(
                [
                    _postgres_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log_path),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "120",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=180,
        )
        subprocess.run(
            _as_postgres_user(
                [_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "airflow"]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )
        log(f"PostgreSQL on 127.0.0.1:{self.port} in {time.monotonic() - started:.1f} s ({self.data})")
        return self

    def stop(self) -> None:
        subprocess.run(
            _as_postgres_user([_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisServer:
    """A Redis a scenario kills and starts again on the same port: empty (no persistence), or with
    its data (``persistent``: an append-only file in ``directory``, fsync on every write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.persistent = False

    def start(self, *, persistent: bool | None = None) -> RedisServer:
        if persistent is not None:
            self.persistent = persistent
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is missing: the Makefile installs Debian's redis-server package")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def pong() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")

        wait_until(f"redis-server on port {self.port}", pong, 30, every=0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: what it held in memory only is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None

    def wipe(self) -> None:
        """Forget what it persisted (a Redis that restarts empty)."""
        for path in self.directory.glob("appendonly*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    def stop(self) -> None:
        self.kill()
