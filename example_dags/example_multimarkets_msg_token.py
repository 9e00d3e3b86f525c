"""Fetch a MultiMarkets message-push token every hour and hand it to downstream work.

Parse-light: no network, connection or Variable access at parse time.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from airflow_provider_multimarkets.operators.msg_token import GetMsgTokenOperator
from airflow_provider_multimarkets.operators.multimarkets import MultiMarketsOperator

with DAG(
    dag_id="example_multimarkets_msg_token",
    schedule="@hourly",
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["example", "multimarkets"],
    doc_md=__doc__,
) as dag:
    get_token = GetMsgTokenOperator(task_id="get_msg_token")
    customer = MultiMarketsOperator(
        task_id="customer_info",
        biz_type="customer.app.CustomerWebApiService.findCustomerInfo",
        version="0.0.1",
    )
    get_token >> customer
