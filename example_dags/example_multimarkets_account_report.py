"""Every day: customer info and the symbol list, reported as each account's balances and the symbols
in trading hours (JSON and CSV).

customer_info -> symbol_list (MultiMarketsOperator: one signed call each, XCom: the envelope's
``data``) -> report (accounts.json/.csv and symbols_in_trading_hours.json/.csv under
``report_dir``). Reads only; trigger it from the UI with the defaults.

Parse-light: no network, connection or Variable access at parse time.
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

from airflow_provider_multimarkets.operators.multimarkets import MultiMarketsOperator

REPORT_DIR = os.environ.get("MULTIMARKETS_REPORT_DIR", "/tmp/multimarkets-reports")

with DAG(
    dag_id="example_multimarkets_account_report",
    description="Customer info and symbol list: each account's balances and the symbols in trading hours",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "multimarkets", "reporting"],
    params={"report_dir": Param(REPORT_DIR, type="string", description="Directory the reports go to")},
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:
    # [START howto_operator_multimarkets]
    customer = MultiMarketsOperator(
        task_id="customer_info",
        biz_type="customer.app.CustomerWebApiService.findCustomerInfo",
        version="0.0.1",
    )
    symbols = MultiMarketsOperator(
        task_id="symbol_list",
        biz_type="config.app.AppSymbolDubboService.getSymbolBaseList",
        payload={"customerGroupId": "{{ ti.xcom_pull(task_ids='customer_info')['customerGroupId'] }}"},
    )
    # [END howto_operator_multimarkets]

    @task
    def report(
        customer: dict[str, Any], symbols: list[dict[str, Any]], params: Any = None, run_id: str | None = None
    ) -> dict[str, Any]:
        import logging

        from airflow_provider_multimarkets.trading.reports import account_report, text_table, write_report

        log = logging.getLogger("airflow.task")
        result = account_report(customer, symbols)
        out_dir = f"{params['report_dir']}/account_report/{str(run_id).replace(':', '').replace('+', '_')}"
        paths = write_report(result, result["accounts"], out_dir, "accounts")
        symbol_paths = write_report(result, result["symbols_in_trading_hours"], out_dir, "symbols_in_trading_hours")
        log.info("Accounts:\n%s", text_table(result["accounts"]))
        log.info("Symbols in trading hours: %d of %d", len(result["symbols_in_trading_hours"]), result["symbols_total"])
        return {
            **paths,
            "symbols_csv": symbol_paths["csv"],
            "accounts": len(result["accounts"]),
            "symbols_in_trading_hours": len(result["symbols_in_trading_hours"]),
        }

    customer >> symbols
    report(customer.output, symbols.output)
