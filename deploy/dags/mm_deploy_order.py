"""Tracked market orders with Airflow retries, for the exactly-once kill matrix.

One DAG per margin variant and mode, each with one task ``order`` (``retries=2``, ``retry_delay``
3 s): ``mm_deploy_order`` (isolated margin), ``mm_deploy_order_full`` (full margin,
``CfdMMOrderApiService``; its connection ``mm_full`` points at its own sandbox), and their
deferrable twins ``mm_deploy_order_deferred`` and ``mm_deploy_order_full_deferred``.

``dag_run.conf``: ``pause_after`` (seconds to linger after the task's work, so a scenario can
SIGKILL the task process after the fill).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.x
    from airflow.models.dag import DAG  # type: ignore[assignment]

from airflow_provider_multimarkets.operators.order import CROSS_MARKET_ORDER, MultiMarketsMarketOrderOperator
from airflow_provider_multimarkets.sandbox.data import ORDER_PROCESS_EXAMPLE

ORDER = dict(ORDER_PROCESS_EXAMPLE)
#: a full-margin market order valid on the sandbox's seed data (tradeType 1, BINAN_SOL_USDT)
FULL_MARGIN_ORDER: dict[str, Any] = {
    "accountCurrency": "USDT",
    "accountDigits": 2,
    "accountId": 1034123,
    "bizType": 1,
    "crossLevelNum": 1,
    "direction": 1,
    "requestNum": "0.10",
    "requestPrice": "2225",
    "requestTime": 1698299972000,
    "symbolId": 720,
    "tradeType": 1,
}


def _linger(context: Any, result: Any) -> None:
    seconds = float((context["dag_run"].conf or {}).get("pause_after", 0) or 0)
    if seconds:
        time.sleep(seconds)


for _dag_id, _full, _deferrable in (
    ("mm_deploy_order", False, False),
    ("mm_deploy_order_full", True, False),
    ("mm_deploy_order_deferred", False, True),
    ("mm_deploy_order_full_deferred", True, True),
):
    with DAG(
        _dag_id,
        schedule=None,
        start_date=dt.datetime(2026, 1, 1),
        catchup=False,
        tags=["deploy-test", "places-orders"],
    ) as _dag:
        MultiMarketsMarketOrderOperator(
            task_id="order",
            order=dict(FULL_MARGIN_ORDER if _full else ORDER),
            biz_type=CROSS_MARKET_ORDER if _full else "tradeapi.app.OrderApiService.addMarketOrder",
            multimarkets_conn_id="mm_full" if _full else "multimarkets_default",
            window_seconds=20,
            lookup_timeout=30,
            poll_interval=2,
            login_timeout=5,
            deferrable=_deferrable,
            retries=2,
            retry_delay=dt.timedelta(seconds=3),
            post_execute=_linger,
        )
    globals()[_dag_id] = _dag
