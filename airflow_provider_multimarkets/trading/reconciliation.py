"""Reconcile orders, trade records and capital flow of one period (pure logic: no Airflow, no network).

An order that executed (status completed, partially completed or partially cancelled) should have
trade records whose executed quantity adds up to the order's, and a trade record should belong to
an order of the period. :func:`reconcile` joins the three lists on ``orderId`` and flags:

* ``order_without_trade_record``: an executed order with no trade record;
* ``trade_record_without_order``: a fill whose order is not in the order list;
* ``quantity_mismatch``: the trade records' ``executeNum`` do not add up to the order's;
* ``no_capital_flow``: an executed order with no booking in the capital flow.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from airflow_provider_multimarkets.messaging.frames import field_text
from airflow_provider_multimarkets.trading.order_status import EXECUTED_ORDER_STATUSES, order_status_key
from airflow_provider_multimarkets.trading.reports import finite_number

DISCREPANCIES = ("order_without_trade_record", "trade_record_without_order", "quantity_mismatch", "no_capital_flow")


def _key(value: Any) -> str | None:
    """A join key: a scalar field as text (:func:`~..messaging.frames.field_text`), never a boolean."""
    return None if isinstance(value, bool) else field_text(value)


def reconcile(
    orders: Iterable[dict[str, Any]],
    trades: Iterable[dict[str, Any]],
    flows: Iterable[dict[str, Any]],
    *,
    max_rows: int = 1_000_000,
) -> dict[str, Any]:
    """The reconciliation report: ``summary`` (counts) and ``rows`` (one per order, then one per orphan fill)."""
    by_order: dict[str, dict[str, Any]] = {}
    for order in orders:
        key = _key(order.get("id", order.get("orderId")))
        if key is not None:
            by_order[key] = order
        if len(by_order) > max_rows:
            raise ValueError(f"more than {max_rows} orders: reconcile a shorter period")
    fills: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for count, trade in enumerate(trades, 1):
        if count > max_rows:
            raise ValueError(f"more than {max_rows} trade records: reconcile a shorter period")
        key = _key(trade.get("orderId"))
        if key is not None:
            fills[key].append(trade)
    booked: dict[str, float] = defaultdict(float)
    bookings: dict[str, int] = defaultdict(int)
    for count, flow in enumerate(flows, 1):
        if count > max_rows:
            raise ValueError(f"more than {max_rows} capital-flow records: reconcile a shorter period")
        key = _key(flow.get("orderId"))
        if key is None:
            continue
        bookings[key] += 1
        booked[key] += (finite_number(flow.get("amountIn")) or 0.0) - (finite_number(flow.get("amountOut")) or 0.0)

    rows: list[dict[str, Any]] = []
    for key, order in by_order.items():
        trades_of = fills.get(key, [])
        executed = order_status_key(order.get("status")) in EXECUTED_ORDER_STATUSES
        ordered = finite_number(order.get("executeNum"))
        filled = sum(finite_number(t.get("executeNum")) or 0.0 for t in trades_of)
        issues = []
        if executed and not trades_of:
            issues.append("order_without_trade_record")
        if trades_of and ordered is not None and not math.isclose(filled, ordered, rel_tol=1e-9, abs_tol=1e-9):
            issues.append("quantity_mismatch")
        if executed and not bookings.get(key):
            issues.append("no_capital_flow")
        rows.append(
            {
                "order_id": key,
                "third_party_order": order.get("thirdPartyOrder"),
                "symbol": order.get("symbolName"),
                "status": order.get("status"),
                "order_execute_num": order.get("executeNum"),
                "trade_records": len(trades_of),
                "traded_num": round(filled, 8) if trades_of else None,
                "capital_flow_records": bookings.get(key, 0),
                "capital_flow_net": round(booked[key], 8) if key in booked else None,
                "issues": ",".join(issues),
            }
        )
    for key, trades_of in fills.items():
        if key in by_order:
            continue
        rows.append(
            {
                "order_id": key,
                "third_party_order": trades_of[0].get("thirdPartyOrder"),
                "symbol": trades_of[0].get("symbolName"),
                "status": None,
                "order_execute_num": None,
                "trade_records": len(trades_of),
                "traded_num": round(sum(finite_number(t.get("executeNum")) or 0.0 for t in trades_of), 8),
                "capital_flow_records": bookings.get(key, 0),
                "capital_flow_net": round(booked[key], 8) if key in booked else None,
                "issues": "trade_record_without_order",
            }
        )
    counts = {name: sum(1 for r in rows if name in r["issues"].split(",")) for name in DISCREPANCIES}
    return {
        "summary": {
            "orders": len(by_order),
            "trade_records": sum(len(v) for v in fills.values()),
            "capital_flow_records": sum(bookings.values()),
            "discrepancies": counts,
            "rows_with_issues": sum(1 for r in rows if r["issues"]),
        },
        "rows": rows,
    }
