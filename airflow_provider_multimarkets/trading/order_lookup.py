"""The documented order list as a lookup: the query for one order, its record, and the record's own words.

``tradeapi.app.OrderApiService.queryOrderPage`` (isolated margin, ``tradeType`` 2) filters by
``thirdPartyOrder`` and by ``orderIds``; its records carry ``id``, ``status`` (1 received, 2
executed, 3 partially executed, 4 cancelled, 5 partially cancelled, 6 rejected, 7 expired) and
``remark`` (the status vocabulary is :mod:`..order_status`'s). The full-margin ``CfdMMOrderApiService`` documents no such list. The functions take
the hook as an argument (``call``/``acall``), so this module imports no Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_multimarkets.exceptions import MultiMarketsOrderError
from airflow_provider_multimarkets.trading.order_identity import matching_orders, record_order_id
from airflow_provider_multimarkets.trading.order_status import (
    is_final_order_status,
    order_status_key,
    order_status_name,
)

ISOLATED_ORDER_PAGE = "tradeapi.app.OrderApiService.queryOrderPage"
VERSION = "0.0.1"
GROUP = "tradeApi"


def order_query(
    *,
    trade_type: int = 2,
    order_id: Any = None,
    third_party_order: str | None = None,
    account_id: Any = None,
) -> dict[str, Any]:
    """The ``queryOrderPage`` body that finds one order, by ``orderId`` or by ``thirdPartyOrder``."""
    if order_id in (None, "") and not third_party_order:
        raise ValueError("an order lookup needs order_id or third_party_order")
    query: dict[str, Any] = {"tradeType": int(trade_type), "current": 1, "size": 20}
    if order_id not in (None, ""):
        query["orderIds"] = str(order_id)
    if third_party_order:
        query["thirdPartyOrder"] = third_party_order
    if account_id not in (None, ""):
        query["accountId"] = int(account_id)
    return query


def matching(page: Any, *, order_id: Any = None, third_party_order: str | None = None) -> list[dict[str, Any]]:
    """The records of an answer that are the order asked for (the server's filter is checked too)."""
    records = page.get("records") if isinstance(page, Mapping) else None
    if not isinstance(records, list):
        what = f"orderId {order_id}" if order_id not in (None, "") else f"thirdPartyOrder={third_party_order}"
        raise MultiMarketsOrderError(
            f"{ISOLATED_ORDER_PAGE} answered without a records list ({type(page).__name__}); cannot tell whether "
            f"order {what} exists.",
            third_party_order=third_party_order or "",
        )
    found: Iterable[dict[str, Any]] = [dict(r) for r in records if isinstance(r, Mapping)]
    if third_party_order:
        found = matching_orders(found, third_party_order)
    if order_id not in (None, ""):
        found = [r for r in found if str(record_order_id(r)) == str(order_id)]
    return list(found)


def find_orders(hook: Any, **query: Any) -> list[dict[str, Any]]:
    """The orders the platform holds for ``order_query(**query)`` (one signed call, within the budget)."""
    page = hook.call(ISOLATED_ORDER_PAGE, order_query(**query), version=VERSION, group=GROUP)
    return matching(page, order_id=query.get("order_id"), third_party_order=query.get("third_party_order"))


async def afind_orders(hook: Any, **query: Any) -> list[dict[str, Any]]:
    """:func:`find_orders` from a coroutine (``hook.acall``: the same signing, budget and errors)."""
    page = await hook.acall(ISOLATED_ORDER_PAGE, order_query(**query), version=VERSION, group=GROUP)
    return matching(page, order_id=query.get("order_id"), third_party_order=query.get("third_party_order"))


def status_number(value: Any) -> int | None:
    """A status in either form (a push's ``"2"``, a record's ``2``) as a number; ``None`` for none."""
    key = order_status_key(value)
    return int(key) if key is not None and key.isdigit() else None


def record_status(record: Mapping[str, Any] | None) -> int | None:
    """A record's ``status`` as a number (``None`` when it has none)."""
    return status_number((record or {}).get("status"))


def is_final(record: Mapping[str, Any] | None) -> bool:
    return is_final_order_status((record or {}).get("status"))


def describe(record: Mapping[str, Any]) -> str:
    """The order in its own words: id, ``thirdPartyOrder``, status and ``remark``, as the platform gave them."""
    status = record_status(record)
    words = order_status_name(status) if status is not None else "no status"
    text = f"order {record_order_id(record)}"
    if record.get("thirdPartyOrder"):
        text += f" (thirdPartyOrder={record['thirdPartyOrder']})"
    text += f": status {record.get('status')} ({words})"
    remark = record.get("remark")
    if remark not in (None, ""):
        text += f", remark {str(remark)[:300]!r}"
    return text
