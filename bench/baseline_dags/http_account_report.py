"""Baseline for parse cost: the shape of example_multimarkets_account_report written with HttpOperator."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import DAG, task

with DAG("http_account_report", schedule="@daily", start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
    customer = HttpOperator(
        task_id="customer_info", http_conn_id="mm", endpoint="global/customer", method="POST", data="{}"
    )
    symbols = HttpOperator(
        task_id="symbol_list", http_conn_id="mm", endpoint="global/symbols", method="POST", data="{}"
    )

    @task
    def report(customer: Any, symbols: Any) -> None:
        return None

    customer >> symbols
    report(customer.output, symbols.output)
