"""Ten push-event watchers on one stream, for the high-availability scenarios (``deploy/test_ha.py``).

Ten assets ``mm_stream_0`` ... ``mm_stream_9``, each watched by a ``MultiMarketsPushEventTrigger`` on
the connection ``mm_stream`` and trade type 2, each with a filter of its own: the first five match
the sandbox's order pushes (symbol 8390, each with other symbols beside it), the last five do not.
On Airflow 3.3 the ten share one stream: one login, one socket, one token. Each asset schedules a
DAG (``mm_deploy_on_stream_<n>``) that records the fills it was handed in a ledger of its own.
``lease_seconds`` is below the deployment's ``triggerer_health_check_threshold`` (10 s), so a
triggerer taking the watchers over does not wait for the dead one's lease.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

try:
    from airflow.sdk import DAG, Asset, AssetWatcher, task
except ImportError:  # Airflow 2.x: no event-driven scheduling
    AssetWatcher = None

LEDGERS = os.path.join(os.environ.get("MULTIMARKETS_REPORT_DIR", "/tmp/multimarkets-reports"), "stream-ledgers")
MATCHING = 5
WATCHERS = 10

if AssetWatcher is not None:
    from airflow_provider_multimarkets.triggers.push_event import MultiMarketsPushEventTrigger

    for index in range(WATCHERS):
        symbols = ["8390", str(9000 + index)] if index < MATCHING else [str(7000 + index)]
        asset = Asset(
            f"mm_stream_{index}",
            watchers=[
                AssetWatcher(
                    name=f"mm_stream_watcher_{index}",
                    trigger=MultiMarketsPushEventTrigger(
                        multimarkets_conn_id="mm_stream",
                        trade_types="2",
                        symbol_ids=symbols,
                        final_only=True,
                        lease_seconds=8.0,
                        ping_interval=5.0,
                    ),
                )
            ],
        )

        with DAG(
            dag_id=f"mm_deploy_on_stream_{index}",
            schedule=[asset],
            start_date=dt.datetime(2026, 1, 1),
            catchup=False,
            tags=["deploy-test"],
        ):

            @task(task_id="record")
            def record(ledger_name: str = f"mm_stream_{index}", **context: Any) -> dict[str, Any]:
                from airflow_provider_multimarkets.trading.fill_ledger import FillLedger

                ledger = FillLedger(os.path.join(LEDGERS, ledger_name))
                orders = []
                for events in context["triggering_asset_events"].values():
                    for event in events:
                        payload = (event.extra or {}).get("payload")
                        if isinstance(payload, dict):
                            row = ledger.record(payload, run_id=context["run_id"])
                            if row is not None:
                                orders.append(row["order_id"])
                return {"orders": orders}

            record()
