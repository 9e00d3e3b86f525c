"""A deferrable subscription for the triggerer kill matrix: get a token, listen for a window.

``params``: ``conn_id`` (the sandbox, with its trade stream rate), ``output_path`` (the push log),
``window_seconds``.
"""

from __future__ import annotations

import datetime as dt

try:
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2.x
    from airflow.models.dag import DAG  # type: ignore[assignment]
    from airflow.models.param import Param  # type: ignore[no-redef]

from airflow_provider_multimarkets.operators.msg_subscribe import MultiMarketsMsgSubscribeOperator
from airflow_provider_multimarkets.operators.msg_token import GetMsgTokenOperator

WINDOW_SECONDS = 45

with DAG(
    "mm_deploy_subscribe",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    params={"conn_id": Param("multimarkets_default", type="string"), "output_path": Param("", type="string")},
    tags=["deploy-test"],
):
    token = GetMsgTokenOperator(task_id="get_token", multimarkets_conn_id="{{ params.conn_id }}")
    MultiMarketsMsgSubscribeOperator(
        task_id="subscribe",
        token=token.output,
        trade_types="2",
        window_seconds=WINDOW_SECONDS,
        output_path="{{ params.output_path }}",
        multimarkets_conn_id="{{ params.conn_id }}",
        ping_interval=5,
        deferrable=True,
    )
