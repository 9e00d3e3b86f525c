"""Every hour: fetch a message-push token, listen to trade pushes for a bounded window, report them.

get_msg_token -> subscribe (deferrable: the triggerer listens, no worker slot is held)
-> report (a JSON and a CSV summary: messages by type, trades by symbol and status).

Parse-light: no network, connection or Variable access at parse time. Settings come from Params
(defaults from the environment: MULTIMARKETS_REPORT_DIR, MULTIMARKETS_EXAMPLE_WINDOW_SECONDS).
"""

from __future__ import annotations

import datetime as dt
import os

try:
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2.x
    from airflow.models.dag import DAG  # type: ignore[assignment]
    from airflow.models.param import Param  # type: ignore[assignment]

from airflow_provider_multimarkets.operators.msg_subscribe import MultiMarketsMsgSubscribeOperator
from airflow_provider_multimarkets.operators.msg_token import GetMsgTokenOperator
from airflow_provider_multimarkets.operators.report import MultiMarketsPushReportOperator

REPORT_DIR = os.environ.get("MULTIMARKETS_REPORT_DIR", "/tmp/multimarkets-reports")
WINDOW_SECONDS = float(os.environ.get("MULTIMARKETS_EXAMPLE_WINDOW_SECONDS", "300"))
RUN_DIR = "{{ params.report_dir }}/msg_token/{{ run_id | replace(':', '') | replace('+', '_') }}"

with DAG(
    dag_id="example_multimarkets_msg_token",
    schedule="@hourly",
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["example", "multimarkets"],
    params={
        "report_dir": Param(REPORT_DIR, type="string", description="Where reports are written"),
        "trade_types": Param("1,2", type="string", description="tradeTypes to subscribe"),
    },
    doc_md=__doc__,
) as dag:
    get_token = GetMsgTokenOperator(task_id="get_msg_token")
    subscribe = MultiMarketsMsgSubscribeOperator(
        task_id="subscribe",
        token=get_token.output,
        trade_types="{{ params.trade_types }}",
        window_seconds=WINDOW_SECONDS,
        max_messages=10_000,
        output_path=f"{RUN_DIR}/pushes.jsonl",
        # explicit: Airflow's default ([operators] default_deferrable = False) would hold a worker slot
        deferrable=True,
    )
    report = MultiMarketsPushReportOperator(
        task_id="report",
        input_path="{{ ti.xcom_pull(task_ids='subscribe')['output_path'] }}",
        output_dir=RUN_DIR,
        name="push_summary",
    )
    subscribe >> report
