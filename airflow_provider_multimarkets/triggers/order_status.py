"""``MultiMarketsOrderStatusTrigger``: poll the order lookup until an order reaches a status the sensor waits for.

Each poll is one signed ``queryOrderPage`` call through the hook's ``acall`` (a worker thread, so
the triggerer's event loop never blocks), within the apiKey's shared call budget. The trigger
ends with an event naming the order's record: ``done`` (a target, failed or final status),
``timeout`` (the deadline passed first) or ``error`` (the lookup failed, or found two orders).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


@dataclass(kw_only=True)
class OrderStatusWait:
    """What the sensor waits for: JSON values only (the trigger's serialized arguments).

    :param order_id: the order's ``orderId`` (or give ``third_party_order``).
    :param third_party_order: the order's ``thirdPartyOrder``.
    :param trade_type: the order list's ``tradeType`` (2, isolated margin).
    :param account_id: restrict the lookup to this account.
    :param target_statuses: statuses that end the wait successfully.
    :param failed_statuses: statuses that end it with a failure.
    :param poll_interval: seconds between lookups.
    :param deadline: Unix time after which the wait ends with ``timeout`` (``None``: no deadline).
    :param hook_params: keyword arguments of the hook (``timeout``, ``max_retries``, ...).
    """

    order_id: str | None = None
    third_party_order: str | None = None
    trade_type: int = 2
    account_id: Any = None
    target_statuses: list[int] = field(default_factory=lambda: [2])
    failed_statuses: list[int] = field(default_factory=lambda: [4, 5, 6, 7])
    poll_interval: float = 10.0
    deadline: float | None = None
    multimarkets_conn_id: str = "multimarkets_default"
    hook_params: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.order_id = None if self.order_id in (None, "") else str(self.order_id)
        self.target_statuses = [int(s) for s in self.target_statuses]
        self.failed_statuses = [int(s) for s in self.failed_statuses]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def query(self) -> dict[str, Any]:
        return {
            "trade_type": self.trade_type,
            "order_id": self.order_id,
            "third_party_order": self.third_party_order,
            "account_id": self.account_id,
        }

    def ends(self, record: dict[str, Any]) -> bool:
        """Whether this record ends the wait: a target or failed status, or any final one."""
        from airflow_provider_multimarkets.trading.order_lookup import is_final, record_status

        status = record_status(record)
        return status in self.target_statuses or status in self.failed_statuses or is_final(record)


def check(wait: OrderStatusWait, found: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One lookup's answer: an event when the wait ends (``done`` or ``error``), else ``None``."""
    from airflow_provider_multimarkets.trading.order_identity import record_order_id

    if len(found) > 1:
        ids = ", ".join(str(record_order_id(r)) for r in found)
        return {
            "status": "error",
            "message": f"{len(found)} orders carry thirdPartyOrder={wait.third_party_order} ({ids}): give order_id.",
            "record": None,
        }
    if found and wait.ends(found[0]):
        return {"status": "done", "record": found[0]}
    return None


class MultiMarketsOrderStatusTrigger(BaseTrigger):
    """Poll the order lookup until the order's status ends the wait (see the module). Keyword
    arguments: the fields of :class:`OrderStatusWait`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.wait = OrderStatusWait(**kwargs)

    def __repr__(self) -> str:
        return (
            f"<MultiMarketsOrderStatusTrigger order_id={self.wait.order_id!r} "
            f"third_party_order={self.wait.third_party_order!r}>"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return "airflow_provider_multimarkets.triggers.order_status.MultiMarketsOrderStatusTrigger", self.wait.as_json()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_multimarkets.exceptions import MultiMarketsError
        from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
        from airflow_provider_multimarkets.trading.order_lookup import afind_orders

        wait = self.wait
        hook = MultiMarketsHook(wait.multimarkets_conn_id, **(wait.hook_params or {}))
        last: dict[str, Any] | None = None
        polls = 0
        try:
            while True:
                polls += 1
                try:
                    found = await afind_orders(hook, **wait.query())
                except MultiMarketsError as exc:
                    yield TriggerEvent({"status": "error", "message": str(exc), "record": last, "polls": polls})
                    return
                event = check(wait, found)
                if event is not None:
                    yield TriggerEvent({**event, "polls": polls})
                    return
                last = found[0] if found else last
                if wait.deadline is not None and time.time() + wait.poll_interval > wait.deadline:
                    yield TriggerEvent({"status": "timeout", "record": last, "polls": polls})
                    return
                self.log.info(
                    "Order %s: %s; next lookup in %.0f s.",
                    wait.order_id or wait.third_party_order,
                    "not found yet" if not found else f"status {found[0].get('status')}",
                    wait.poll_interval,
                )
                await asyncio.sleep(wait.poll_interval)
        finally:
            await asyncio.to_thread(hook.close)
