"""On every fill: one DAG run per final trade push, with Airflow 3's event-driven scheduling.

MultiMarketsPushEventTrigger runs in the triggerer as the watcher of the ``multimarkets_fills``
asset: it fetches its own msg token, listens on the message WebSocket, and turns every final
trade push (position opened, closed, or a failed open) into an asset event. Each event queues a
run of this DAG, whose task reads the push from ``triggering_asset_events`` and appends one fill
record (order, symbol, price, lots, status) to ``fills.jsonl``.

At-least-once: after a triggerer restart the last pushes may come again. Every event carries an
``identity`` and the ledger keeps each identity once. Events that arrive within one scheduler
loop are handed to one run, so the task handles a list.

With the sandbox, start it with ``--trade-stream-types 1`` (as the docs show): its synthetic stream
then pushes only to trade type 1, so this watcher (trade type 2) sees only the orders you place,
e.g. with ``example_multimarkets_order_tracking``. Without it every synthetic trade is a fill and
queues a run. The watcher runs while the DAG is unpaused; there is nothing to trigger by hand.

Needs Airflow 3.0 or later (AssetWatcher); on Airflow 2 this file defines no DAG.
Parse-light: the trigger is built from plain values; no network or connection at parse time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

try:
    from airflow.sdk import DAG, Asset, AssetWatcher, task
except ImportError:  # Airflow 2.x: no event-driven scheduling
    AssetWatcher = None

FILLS_DIR = os.path.join(os.environ.get("MULTIMARKETS_REPORT_DIR", "/tmp/multimarkets-reports"), "fills")

if AssetWatcher is not None:
    from airflow_provider_multimarkets.triggers.push_event import MultiMarketsPushEventTrigger

    # [START howto_trigger_push_event]
    fills = Asset(
        "multimarkets_fills",
        watchers=[
            AssetWatcher(
                name="multimarkets_fills_watcher",
                trigger=MultiMarketsPushEventTrigger(
                    multimarkets_conn_id="multimarkets_default",
                    trade_types="2",
                    biz_types=["POSITION_OPEN", "POSITION_CLOSE", "POSITION_OPEN_FAIL"],
                    final_only=True,
                ),
            )
        ],
    )

    # [END howto_trigger_push_event]

    with DAG(
        dag_id="example_multimarkets_on_fill",
        description="One DAG run per final trade push (a fill): each fill recorded once in fills.jsonl",
        schedule=[fills],
        start_date=dt.datetime(2026, 1, 1),
        catchup=False,
        tags=["example", "multimarkets", "event-driven"],
        doc_md=__doc__,
    ) as dag:

        @task
        def record_fills(**context: Any) -> dict[str, Any]:
            """One line per fill in ``fills.jsonl``; an identity already recorded is skipped."""
            from airflow_provider_multimarkets.trading.fill_ledger import FillLedger

            log = logging.getLogger("airflow.task")
            ledger = FillLedger(FILLS_DIR)
            run_id = context["run_id"]
            written, duplicates, orders = 0, 0, []
            for events in context["triggering_asset_events"].values():
                for event in events:
                    payload = (event.extra or {}).get("payload")
                    if not isinstance(payload, dict):
                        continue
                    row = ledger.record(payload, run_id=run_id)
                    if row is None:
                        duplicates += 1
                        log.info("duplicate push %s: recorded already", payload.get("identity"))
                        continue
                    written += 1
                    orders.append(row["order_id"])
                    log.info(
                        "fill: order %s %s %s lots at %s, status %s (%s)",
                        row["order_id"],
                        row["symbol"],
                        row["lots"],
                        row["price"],
                        row["status"],
                        row["biz_type"],
                    )
            log.info("%d fills recorded, %d duplicates skipped, ledger %s", written, duplicates, ledger.path)
            return {"written": written, "duplicates": duplicates, "orders": orders, "ledger": ledger.path}

        record_fills()
