"""Baseline for parse cost: the shape of example_multimarkets_msg_token written with HttpOperator."""

from __future__ import annotations

import datetime as dt

from airflow.providers.http.operators.http import HttpOperator
from airflow.sdk import DAG

with DAG("http_msg_token", schedule="@hourly", start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
    token = HttpOperator(
        task_id="get_msg_token", http_conn_id="mm", endpoint="global/getMsgPushToken", method="POST", data="{}"
    )
    subscribe = HttpOperator(
        task_id="subscribe", http_conn_id="mm", endpoint="global/subscribe", method="POST", data="{}"
    )
    report = HttpOperator(task_id="report", http_conn_id="mm", endpoint="global/report", method="POST", data="{}")
    token >> subscribe >> report
