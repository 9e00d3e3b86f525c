"""Our operators in a real Airflow (``dag.test()``, SQLite metadata DB) against the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import load_dag, ti_states, xcom_value

pytestmark = pytest.mark.usefixtures("airflow_db")


def test_token_reaches_downstream_task(mm_conn: dict[str, Any], sandbox: Any, airflow_db: Path) -> None:
    dag_run = load_dag("mm_e2e_token").test()
    assert ti_states(dag_run) == {"get_token": "success", "customer": "success", "use": "success"}
    token = xcom_value(dag_run, "get_token")
    assert token.endswith("push") and len(token) == 40
    assert token in sandbox.state.streams  # the token the gateway issued
    assert sandbox.state.requests["getMsgPushToken"] == 1
    assert xcom_value(dag_run, "use") == {
        "token_suffix": "push",
        "token_length": 40,
        "accounts": [1034123, 1034124, 1034125, 1034126, 1034127],
    }


def test_failure_is_a_clear_task_error(mm_conn: dict[str, Any], sandbox: Any, airflow_db: Path) -> None:
    dag_run = load_dag("mm_e2e_fail").test()
    assert ti_states(dag_run) == {"symbols": "failed"}
    assert sandbox.state.answers == {"config.app.AppSymbolDubboService.getSymbolBaseList:200:CFDWBWE000005": 1}


def test_templated_payload(mm_conn: dict[str, Any], sandbox: Any, airflow_db: Path) -> None:
    dag_run = load_dag("mm_e2e_template").test()
    assert ti_states(dag_run) == {"symbols": "success"}
    symbols = xcom_value(dag_run, "symbols")
    assert {s["symbolCode"] for s in symbols} >= {"EURAUD", "XAUUSD"}
