"""Fan-out of signed calls for the deployment scenarios: ``calls`` mapped ``MultiMarketsOperator``
tasks (``findCustomerInfo``), as a user spreads per-account work. ``conn_id`` picks the connection
(the scenarios compare the shared budget with limiting off)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

try:
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.x
    from airflow.decorators import task  # type: ignore[no-redef]
    from airflow.models.dag import DAG  # type: ignore[assignment]
    from airflow.models.param import Param  # type: ignore[no-redef]

from airflow_provider_multimarkets.operators.multimarkets import MultiMarketsOperator

with DAG(
    "mm_deploy_fanout",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=16,
    params={"calls": Param(300, type="integer", minimum=1, maximum=2000), "conn_id": "multimarkets_default"},
    tags=["deploy-test"],
):

    @task
    def payloads(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return [{} for _ in range(int((params or {})["calls"]))]

    MultiMarketsOperator.partial(
        task_id="call",
        biz_type="customer.app.CustomerWebApiService.findCustomerInfo",
        version="0.0.1",
        multimarkets_conn_id="{{ params.conn_id }}",
        retries=0,
        # for measuring set-ups with an Airflow pool (the pool is created by the scenario)
        pool=os.environ.get("MM_DEPLOY_POOL", "default_pool"),
    ).expand(payload=payloads())
