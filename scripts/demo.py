"""``make demo``: the whole mission on the embedded sandbox, in a real Airflow.

Starts ``multimarkets-sandbox`` (with a synthetic trade stream) in the background, points
``AIRFLOW_CONN_MULTIMARKETS_DEFAULT`` at it, runs every example DAG with ``airflow dags test`` on a
SQLite metadata DB, prints where the reports are and a short summary, and stops the sandbox.
Exits non-zero on any failure.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo-output"
BIN = Path(sys.executable).parent
DAGS = [
    ("example_multimarkets_msg_token", None),
    ("example_multimarkets_account_report", None),
    ("example_multimarkets_order_tracking", {"symbol_code": "EURAUD", "direction": 1, "lots": "0.10"}),
    # today's orders (the one just placed), trade records and capital flow, reconciled
    ("example_multimarkets_daily_reconciliation", "today"),
]


def today_conf() -> dict[str, object]:
    """Params of a period: today (UTC), so the reconciliation sees the order the demo just placed."""
    import datetime as dt

    today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"start": today.isoformat(), "end": (today + dt.timedelta(days=1)).isoformat()}


def say(text: str) -> None:
    print(text, flush=True)


def start_sandbox(conn_file: Path, log_file: Path) -> subprocess.Popen[str]:
    cmd = [
        str(BIN / "multimarkets-sandbox"),
        "--port",
        "0",
        "--trade-stream-rate",
        "20",
        "--key-file",
        str(OUT / "sandbox-keys.json"),
        "--connection-file",
        str(conn_file),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file.open("w"), text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first.startswith("MultiMarkets sandbox listening"):
        proc.kill()
        raise SystemExit(f"the sandbox did not start (see {log_file})")
    say(f"[demo] {first.strip()}")
    return proc


def run_dag(dag_id: str, conf: dict[str, object] | None, env: dict[str, str]) -> tuple[bool, float]:
    log_path = OUT / "logs" / f"{dag_id}.log"
    cmd = [str(BIN / "airflow"), "dags", "test", dag_id]
    if conf:
        cmd += ["--conf", json.dumps(conf)]
    started = time.monotonic()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    log_path.write_text(result.stdout + result.stderr)
    ok = result.returncode == 0 and "state=success" in (result.stdout + result.stderr)
    return ok, elapsed


def newest(pattern: str) -> Path | None:
    found = sorted((OUT / "reports").glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    (OUT / "logs").mkdir(parents=True)
    conn_file = OUT / "connection.json"
    home = OUT / "airflow-home"
    sandbox = start_sandbox(conn_file, OUT / "logs" / "sandbox.log")
    failures = []
    try:
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                "AIRFLOW_CONN_MULTIMARKETS_DEFAULT": conn_file.read_text(),
                "MULTIMARKETS_REPORT_DIR": str(OUT / "reports"),
                "MULTIMARKETS_EXAMPLE_WINDOW_SECONDS": "15",
            }
        )
        say("[demo] preparing the Airflow metadata DB (SQLite) ...")
        migrate = subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True)
        if migrate.returncode != 0:
            (OUT / "logs" / "db-migrate.log").write_text(migrate.stdout + migrate.stderr)
            raise SystemExit("airflow db migrate failed (see demo-output/logs/db-migrate.log)")
        for dag_id, wanted in DAGS:
            conf = wanted if not isinstance(wanted, str) else today_conf()
            say(f"[demo] airflow dags test {dag_id} ...")
            ok, elapsed = run_dag(dag_id, conf, env)
            say(f"[demo]   {'success' if ok else 'FAILED'} in {elapsed:.1f} s (log: demo-output/logs/{dag_id}.log)")
            if not ok:
                failures.append(dag_id)
    finally:
        sandbox.terminate()
        try:
            out, _ = sandbox.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            sandbox.kill()
            out = ""
        counts = out.strip().splitlines()[-1] if out.strip() else "{}"
        say(f"[demo] sandbox stopped; it served {counts}")

    say("")
    say("Reports:")
    for pattern in (
        "msg_token/*/push_summary.json",
        "msg_token/*/push_summary.csv",
        "account_report/*/accounts.csv",
        "account_report/*/symbols_in_trading_hours.csv",
        "order_tracking/*/fill.json",
        "order_tracking/*/fill.csv",
        "reconciliation/*/reconciliation.csv",
        "reconciliation/*/trade_records.jsonl",
    ):
        path = newest(pattern)
        say(f"  {path.relative_to(ROOT) if path else pattern + ' (missing)'}")
        if path is None:
            failures.append(pattern)
    push = newest("msg_token/*/push_summary.json")
    if push:
        summary = json.loads(push.read_text())
        say(f"\nTrade pushes received in the window: {summary['messages']} ({summary['by_msg_code']})")
        for row in summary["trades_by_symbol_and_status"][:8]:
            say(f"  {row['symbol']:<16} {row['order_status']:<12} trades={row['trades']:<4} lots={row['lots']}")
    accounts = newest("account_report/*/accounts.csv")
    if accounts:
        say("\nAccounts:")
        with accounts.open() as handle:
            for row in csv.DictReader(handle):
                say(
                    f"  {row['account_id']}  {row['currency']:<5} balance={row['balance']:<10} equity={row['equity']:<10} margin={row['margin']}"
                )
    fill = newest("order_tracking/*/fill.json")
    if fill:
        f = json.loads(fill.read_text())["fill"]
        say(
            f"\nOrder {f['order_id']} ({f['symbol']}): {f['final_status']} at {f['deal_price']}, {f['deal_amount']} lots"
        )
    recon = newest("reconciliation/*/reconciliation.json")
    if recon:
        summary = json.loads(recon.read_text())["summary"]
        say(
            f"\nReconciliation of today: {summary['orders']} order(s), {summary['trade_records']} trade record(s), "
            f"{summary['capital_flow_records']} capital-flow record(s); rows with issues: {summary['rows_with_issues']}"
        )
    if failures:
        say(f"\n[demo] FAILED: {', '.join(failures)}")
        return 1
    say("\n[demo] all example DAGs succeeded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
