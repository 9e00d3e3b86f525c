"""The order-status vocabulary of the Open API, defined once (pure logic, no Airflow).

Pushes carry an order's status as ``paramMap.orderStatus`` (a string, ``"2"``), order records of
``queryOrderPage`` as ``status`` (a number, ``2``): the same codes (the Order Process page,
https://docs.multimarkets.org/client-api/open-api/order-process). :func:`order_status_key` brings
either form to the one key the sets and names below use, so no caller compares a number with a
string.
"""

from __future__ import annotations

from typing import Any

#: every documented status, by its key
ORDER_STATUS_NAMES = {
    "1": "received",
    "2": "completed",
    "3": "partially completed",
    "4": "cancelled",
    "5": "partially cancelled",
    "6": "rejected",
    "7": "expired",
}
#: statuses after which an order no longer changes (2 executed, 4 cancelled, 5 partially cancelled,
#: 6 rejected, 7 expired); 1 received and 3 partially executed may still change.
FINAL_ORDER_STATUSES = frozenset({"2", "4", "5", "6", "7"})
#: statuses after which an order has executed quantity
EXECUTED_ORDER_STATUSES = frozenset({"2", "3", "5"})
#: push ``content.bizType`` values that report a failed order (final as well)
FAILED_ORDER_BIZ_TYPES = frozenset({"POSITION_OPEN_FAIL", "ME_POSITION_LIMIT_FAIL"})


def order_status_key(value: Any) -> str | None:
    """The key of a status as a push (``"2"``) or an order record (``2``, ``2.0``) sends it; ``None``
    for no status (a missing field, a boolean, an object)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, str):
        return value.strip()
    return None


def is_final_order_status(value: Any) -> bool:
    """Whether an order with this status (either form) no longer changes."""
    return order_status_key(value) in FINAL_ORDER_STATUSES


def order_status_name(value: Any) -> Any:
    """The documented name of a status (either form); the value itself when it is not documented."""
    key = order_status_key(value)
    return ORDER_STATUS_NAMES.get(key, value) if key is not None else value
