"""The client order id (``thirdPartyOrder``) that makes an order task place exactly one order.

``thirdPartyOrder`` is a documented body field of both ``addMarketOrder`` variants (at most 255
characters of ``[A-Za-z0-9_]``) and a filter of the isolated-margin order list
(``tradeapi.app.OrderApiService.queryOrderPage``). The id is derived from the task instance, so it
is the same for every try and every clear of that task instance and differs between task
instances: a retry looks the order up by it before placing, and adopts what it finds.

Pure logic: no Airflow import.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError

MAX_LENGTH = 255
VALID = re.compile(r"^[A-Za-z0-9_]{1,255}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9]+")


def derive_third_party_order(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """``af_<readable part>_<32 hex of SHA-256 over the task instance's key>``, at most 96 characters.

    The hash makes it unique per task instance (whatever the names' lengths or characters); the
    readable part helps a person find the order in the platform's back office.
    """
    key = "\x1f".join((dag_id, run_id, task_id, str(map_index)))
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    readable = "_".join(part for part in (_UNSAFE.sub("_", dag_id)[:24], _UNSAFE.sub("_", task_id)[:24]) if part)
    readable = readable.strip("_")
    suffix = f"m{map_index}_" if map_index >= 0 else ""
    return f"af_{readable}_{suffix}{digest}" if readable else f"af_{suffix}{digest}"


def check_third_party_order(value: Any) -> str:
    if not isinstance(value, str) or not VALID.match(value):
        raise MultiMarketsConfigError(
            f"third_party_order {value!r} is not a valid thirdPartyOrder: use 1 to {MAX_LENGTH} characters of "
            "A-Z, a-z, 0-9 and _ (or leave it unset to derive one from the task instance)."
        )
    return value


def matching_orders(records: Iterable[Mapping[str, Any]], third_party_order: str) -> list[dict[str, Any]]:
    """The order records that carry ``third_party_order`` (the server filter is trusted, and checked)."""
    return [dict(r) for r in records if isinstance(r, Mapping) and r.get("thirdPartyOrder") == third_party_order]


def record_order_id(record: Mapping[str, Any]) -> Any:
    """An order record's id: ``id`` in the documented order list (``orderId`` where a server sends that)."""
    return record.get("orderId", record.get("id"))
