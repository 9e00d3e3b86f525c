"""Every day at midnight UTC: page the day before's orders, trade records and capital flow, and reconcile them.

orders, trade_records, capital_flow (MultiMarketsQueryToFileOperator: paged queries of the data
interval, within the apiKey's shared call budget, written as JSON Lines + CSV, and Parquet with
pyarrow) -> reconcile (joins them on orderId and writes reconciliation.json + .csv, flagging
executed orders with no trade record, fills with no order, quantities that do not add up and
orders with no capital-flow booking).

Reads only (no order is placed). Params ``start``/``end`` (ISO 8601) re-run any period; empty
(the default, so Trigger works as it is): the data interval, which for a manual run is the last
complete day. Parse-light: no network, connection or Variable access at parse time.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

try:
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.x
    from airflow.decorators import task  # type: ignore[no-redef]
    from airflow.models.dag import DAG  # type: ignore[assignment]
    from airflow.models.param import Param  # type: ignore[assignment]
try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 2.x, 3.0
    from airflow.timetables.interval import CronDataIntervalTimetable  # type: ignore[no-redef,assignment]

from airflow_provider_multimarkets.operators.query_to_file import MultiMarketsQueryToFileOperator

REPORT_DIR = os.environ.get("MULTIMARKETS_REPORT_DIR", "/tmp/multimarkets-reports")
RUN_DIR = "{{ params.report_dir }}/reconciliation/{{ run_id | replace(':', '') | replace('+', '_') }}"
START = "{{ params.start or data_interval_start }}"
END = "{{ params.end or data_interval_end }}"
TRADE_TYPE = 2  # isolated-margin contracts (the OrderApiService / PositionApiService family)

with DAG(
    dag_id="example_multimarkets_daily_reconciliation",
    description="Page a day's orders, trade records and capital flow, and reconcile them on orderId",
    # A data interval per day, the run at midnight covering the day before. Airflow 3's "@daily" is a
    # trigger timetable whose interval is a point in time: it would reconcile an empty period.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["example", "multimarkets", "reporting"],
    params={
        "report_dir": Param(REPORT_DIR, type="string", description="Directory the files and the report go to"),
        "start": Param(
            None,
            type=["null", "string"],
            description="Start of the period, ISO 8601 (e.g. 2026-01-01T00:00:00Z); empty: the data interval",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            description="End of the period, excluded, ISO 8601; empty: the data interval",
        ),
    },
    doc_md=__doc__,
) as dag:
    # [START howto_operator_query_to_file]
    orders = MultiMarketsQueryToFileOperator(
        task_id="orders",
        biz_type="tradeapi.app.OrderApiService.queryOrderPage",
        payload={"tradeType": TRADE_TYPE},
        start=START,
        end=END,
        output_path=RUN_DIR,
        name="orders",
    )
    # [END howto_operator_query_to_file]
    trade_records = MultiMarketsQueryToFileOperator(
        task_id="trade_records",
        biz_type="tradeapi.app.OrderApiService.queryTradeRecordPage",
        payload={"tradeType": TRADE_TYPE, "sortFieldName": "executeTime", "sortType": "asc"},
        start=START,
        end=END,
        output_path=RUN_DIR,
        name="trade_records",
    )
    capital_flow = MultiMarketsQueryToFileOperator(
        task_id="capital_flow",
        biz_type="tradeapi.app.OrderApiService.queryCapitalFlowList",
        payload={"tradeType": TRADE_TYPE},
        start=START,
        end=END,
        output_path=RUN_DIR,
        name="capital_flow",
    )

    @task
    def reconcile(orders: dict[str, Any], trades: dict[str, Any], flows: dict[str, Any], **context: Any) -> dict:
        """Join the three files on orderId; write reconciliation.json and .csv; return the counts."""
        import logging

        from airflow_provider_multimarkets.storage.table_files import read_jsonl
        from airflow_provider_multimarkets.trading.reconciliation import reconcile as join
        from airflow_provider_multimarkets.trading.reports import text_table, write_report

        report = join(
            read_jsonl(orders["paths"]["jsonl"]),
            read_jsonl(trades["paths"]["jsonl"]),
            read_jsonl(flows["paths"]["jsonl"]),
        )
        out_dir = os.path.dirname(orders["paths"]["jsonl"])
        paths = write_report(report, report["rows"], out_dir, "reconciliation")
        flagged = [r for r in report["rows"] if r["issues"]]
        log = logging.getLogger("airflow.task")
        log.info("Reconciliation: %s", report["summary"])
        if flagged:
            log.info("Rows with issues:\n%s", text_table(flagged))
        return {**report["summary"], "paths": paths, "flagged_orders": [r["order_id"] for r in flagged][:100]}

    reconcile(orders.output, trade_records.output, capital_flow.output)
