"""!!! PLACES A REAL MARKET ORDER !!!  Manual only: trigger it with the Params you mean.

The documented order flow: customer info (the isolated-margin account: accountId, digits,
currency) -> symbol info (symbolId, symbolDigits; the price is scaled by them) -> ONE market order
(never retried on timeouts or 5xx) followed to its final status -> a report of the fill (JSON and
CSV). Param ``flow`` picks how the order is followed:

* ``track`` (default): one deferrable task subscribes to trade pushes, places the order once the
  login is answered, then hands the subscription to the triggerer, which waits for the order's
  final trade push (and looks the order up if the stream cannot prove it). The worker slot is
  free while the order fills.
* ``sensor``: place with ``track=False`` (the task ends with the order's answer), then wait with
  ``MultiMarketsOrderStatusSensor`` (deferrable: the triggerer polls the order list). A rejected or
  cancelled order fails the sensor in the order's own words.

Either way a retry or a clear never places a second order: on Airflow 3.3+ the order's ids are in
the task state store (see the task instance's "Task State" in the UI); before 3.3 a retry looks
the order up by its ``thirdPartyOrder``.

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
from airflow_provider_multimarkets.sensors.order_status import MultiMarketsOrderStatusSensor

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
        "flow": Param(
            "track",
            type="string",
            enum=["track", "sensor"],
            description="track: one deferrable task places and follows the order; sensor: place with "
            "track=False, then wait with MultiMarketsOrderStatusSensor",
        ),
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

    order = build_order(customer.output, symbols.output)

    @task.branch
    def choose_flow(params: Any = None) -> str:
        return "place_and_track_order" if params["flow"] == "track" else "place_order"

    # [START howto_operator_market_order]
    # flow "track": subscribe, place, and follow the order; the triggerer waits for the fill
    tracked = MultiMarketsMarketOrderOperator(
        task_id="place_and_track_order",
        order=order,
        window_seconds=60,
        deferrable=True,
        output_path="{{ params.report_dir }}/order_tracking/{{ run_id | replace(':', '') | replace('+', '_') }}/pushes.jsonl",
        # safe: a retry finds the order in the task state store (or by its thirdPartyOrder) instead of placing another
        retries=2,
        retry_delay=dt.timedelta(seconds=30),
    )
    # [END howto_operator_market_order]

    # [START howto_sensor_order_status]
    # flow "sensor": place without tracking, then wait for the order's final status in the order list
    placed = MultiMarketsMarketOrderOperator(
        task_id="place_order",
        order=order,
        track=False,
        retries=2,
        retry_delay=dt.timedelta(seconds=30),
    )
    wait = MultiMarketsOrderStatusSensor(
        task_id="wait_for_fill",
        third_party_order="{{ ti.xcom_pull(task_ids='place_order')['third_party_order'] }}",
        target_statuses=[2],  # executed; cancelled, rejected or expired fail the task in the order's own words
        deferrable=True,
        poke_interval=5,
        timeout=600,
    )
    # [END howto_sensor_order_status]

    @task(trigger_rule="none_failed_min_one_success")
    def fill_report(params: Any = None, run_id: str | None = None, ti: Any = None) -> dict[str, Any]:
        import logging

        from airflow_provider_multimarkets.trading.reports import fill_from_record, text_table, write_report

        result = ti.xcom_pull(task_ids="place_and_track_order")
        if result is not None:
            fill, placed_order = result["fill"], result["order"]
        else:
            placed_order = ti.xcom_pull(task_ids="place_order")["order"]
            fill = fill_from_record(placed_order, ti.xcom_pull(task_ids="wait_for_fill")["record"])
        out_dir = f"{params['report_dir']}/order_tracking/{str(run_id).replace(':', '').replace('+', '_')}"
        paths = write_report({"fill": fill, "order": placed_order}, [fill], out_dir, "fill")
        logging.getLogger("airflow.task").info("Fill:\n%s", text_table([fill]))
        return {**paths, "order_id": fill["order_id"], "final_status": fill["final_status"]}

    customer >> symbols
    choose_flow() >> [tracked, placed]
    placed >> wait
    [tracked, wait] >> fill_report()
