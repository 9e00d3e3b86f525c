"""Baseline for parse cost: the shape of example_multimarkets_order_tracking written with HttpOperator."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import DAG, task

with DAG("http_order_tracking", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
    customer = HttpOperator(
        task_id="customer_info", http_conn_id="mm", endpoint="global/customer", method="POST", data="{}"
    )
    symbols = HttpOperator(
        task_id="symbol_info", http_conn_id="mm", endpoint="global/symbols", method="POST", data="{}"
    )

    @task
    def build_order(customer: Any, symbols: Any) -> dict[str, Any]:
        return {}

    order = HttpOperator(
        task_id="place_and_track_order", http_conn_id="mm", endpoint="global/order", method="POST", data="{}"
    )

    @task
    def fill_report(result: Any) -> None:
        return None

    customer >> symbols
    build_order(customer.output, symbols.output) >> order
    fill_report(order.output)
