"""!!! PLACES A REAL MARKET ORDER !!!  Manual only: trigger it with the Params you mean.

The documented order flow: customer info (the isolated-margin account: accountId, digits,
currency) -> symbol info (symbolId, symbolDigits; the price is scaled by them) -> subscribe to
trade pushes, then place ONE market order (never retried on timeouts or 5xx) -> wait until that
order's trade push reaches a final status -> a report of the fill (JSON and CSV).

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
from airflow_provider_multimarkets.operators.order import MultiMarketsMarketOrderOperator

REPORT_DIR = os.environ.get("MULTIMARKETS_REPORT_DIR", "/tmp/multimarkets-reports")

with DAG(
    dag_id="example_multimarkets_order_tracking",
    description="PLACES ONE MARKET ORDER (manual only), tracks it to its fill, reports the fill",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "multimarkets", "places-orders"],
    params={
        "symbol_code": Param("EURAUD", type="string", description="symbolCode to trade (an isolated-margin symbol)"),
        "direction": Param(1, type="integer", enum=[1, 2], description="1 buy, 2 sell"),
        "lots": Param("0.10", type="string", description="requestNum, in lots, as text (e.g. 0.10)"),
        "reference_price": Param(
            "1.67655",
            type="string",
            description="requestPrice before scaling by the symbol's digits (bookkeeping only: a market order)",
        ),
        "report_dir": Param(REPORT_DIR, type="string", description="Directory the pushes and the fill report go to"),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:
    customer = MultiMarketsOperator(
        task_id="customer_info",
        biz_type="customer.app.CustomerWebApiService.findCustomerInfo",
        version="0.0.1",
    )
    symbols = MultiMarketsOperator(
        task_id="symbol_info",
        biz_type="config.app.AppSymbolDubboService.getSymbolBaseList",
        payload={"customerGroupId": "{{ ti.xcom_pull(task_ids='customer_info')['customerGroupId'] }}"},
    )

    @task
    def build_order(customer: dict[str, Any], symbols: list[dict[str, Any]], params: Any = None) -> dict[str, Any]:
        import time

        from airflow_provider_multimarkets.trading.reports import account_list, scale_price

        # accountList: an array in the docs' examples, an object in the schema; account_list reads both
        account = next(a for a in account_list(customer) if a.get("tradeType") == 2)
        symbol = next((s for s in symbols if s["symbolCode"] == params["symbol_code"] and s["tradeType"] == 2), None)
        if symbol is None:
            raise ValueError(f"symbol {params['symbol_code']!r} is not an isolated-margin (tradeType 2) symbol")
        return {
            "accountCurrency": account["currency"],
            "accountDigits": account["digits"],
            "accountId": account["accountId"],
            "bizType": 1,
            "crossLevelNum": 1,
            "direction": int(params["direction"]),
            "entryType": 1,
            "requestNum": str(params["lots"]),
            "requestPrice": scale_price(params["reference_price"], symbol["symbolDigits"]),
            "requestTime": int(time.time() * 1000),
            "symbolId": symbol["symbolId"],
            "tradeType": 2,
        }

    order = MultiMarketsMarketOrderOperator(
        task_id="place_and_track_order",
        order=build_order(customer.output, symbols.output),
        window_seconds=60,
        output_path="{{ params.report_dir }}/order_tracking/{{ run_id | replace(':', '') | replace('+', '_') }}/pushes.jsonl",
        # safe: a retry looks the order up by its thirdPartyOrder and adopts it instead of placing another
        retries=2,
        retry_delay=dt.timedelta(seconds=30),
    )

    @task
    def fill_report(result: dict[str, Any], params: Any = None, run_id: str | None = None) -> dict[str, Any]:
        import logging

        from airflow_provider_multimarkets.trading.reports import text_table, write_report

        fill = result["fill"]
        out_dir = f"{params['report_dir']}/order_tracking/{str(run_id).replace(':', '').replace('+', '_')}"
        paths = write_report({"fill": fill, "order": result["order"]}, [fill], out_dir, "fill")
        logging.getLogger("airflow.task").info("Fill:\n%s", text_table([fill]))
        return {**paths, "order_id": fill["order_id"], "final_status": fill["final_status"]}

    customer >> symbols
    fill_report(order.output)
