"""One tracked market order per run, with Airflow retries, for the exactly-once kill matrix.

``dag_run.conf``: ``pause_after`` (seconds to linger after the fill, so a scenario can SIGKILL the
task process after it) and ``window_seconds``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.x
    from airflow.models.dag import DAG  # type: ignore[assignment]

from airflow_provider_multimarkets.operators.order import MultiMarketsMarketOrderOperator
from airflow_provider_multimarkets.sandbox.data import ORDER_PROCESS_EXAMPLE

ORDER = dict(ORDER_PROCESS_EXAMPLE)


def _linger(context: Any, result: Any) -> None:
    seconds = float((context["dag_run"].conf or {}).get("pause_after", 0) or 0)
    if seconds:
        time.sleep(seconds)


with DAG(
    "mm_deploy_order",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    tags=["deploy-test", "places-orders"],
):
    MultiMarketsMarketOrderOperator(
        task_id="order",
        order=ORDER,
        window_seconds=30,
        ack_grace=5,
        retries=2,
        retry_delay=dt.timedelta(seconds=3),
        post_execute=_linger,
    )
