"""Every hour: fetch a message-push token, listen to trade pushes for a bounded window, report them.

get_msg_token -> subscribe (deferrable: the triggerer listens, no worker slot is held)
-> report (a JSON and a CSV summary: messages by type, trades by symbol and status).

Trigger it from the UI with the defaults: it listens for ``window_seconds`` (30 s unless
``MULTIMARKETS_EXAMPLE_WINDOW_SECONDS`` says otherwise), so a manual run ends within a minute. Raise
the param for a real hourly capture.

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
WINDOW_SECONDS = float(os.environ.get("MULTIMARKETS_EXAMPLE_WINDOW_SECONDS", "30"))
RUN_DIR = "{{ params.report_dir }}/msg_token/{{ run_id | replace(':', '') | replace('+', '_') }}"

with DAG(
    dag_id="example_multimarkets_msg_token",
    description="Fetch a msg token, listen to trade pushes for a bounded window, report them (JSON + CSV)",
    schedule="@hourly",
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "multimarkets", "subscription"],
    params={
        "report_dir": Param(REPORT_DIR, type="string", description="Directory the pushes and the report go to"),
        "trade_types": Param(
            "1,2", type="string", description="tradeTypes to subscribe, comma-separated (1 and 2: both accounts)"
        ),
        "window_seconds": Param(
            WINDOW_SECONDS,
            type="number",
            minimum=1,
            maximum=3600,
            description="How long to listen, in seconds (the triggerer listens; no worker slot is held)",
        ),
    },
    doc_md=__doc__,
) as dag:
    # [START howto_operator_get_msg_token]
    get_token = GetMsgTokenOperator(task_id="get_msg_token")
    # [END howto_operator_get_msg_token]
    # [START howto_operator_msg_subscribe]
    subscribe = MultiMarketsMsgSubscribeOperator(
        task_id="subscribe",
        token=get_token.output,
        trade_types="{{ params.trade_types }}",
        window_seconds="{{ params.window_seconds }}",
        max_messages=10_000,
        output_path=f"{RUN_DIR}/pushes.jsonl",
        # explicit: Airflow's default ([operators] default_deferrable = False) would hold a worker slot
        deferrable=True,
    )
    # [END howto_operator_msg_subscribe]
    # [START howto_operator_push_report]
    report = MultiMarketsPushReportOperator(
        task_id="report",
        input_path="{{ ti.xcom_pull(task_ids='subscribe')['output_path'] }}",
        output_dir=RUN_DIR,
        name="push_summary",
    )
    # [END howto_operator_push_report]
    subscribe >> report
