"""``MultiMarketsOrderTrackingTrigger``: follow a placed order to its final status without holding a worker slot.

The deferrable order operator subscribes and places in the worker (the documented order flow:
subscribe first, then place), then hands the subscription over to this trigger: it resumes the
same message stream with the same msg token and the same push log (a fill push the worker already
wrote counts at once), and waits for the order's final trade push. When the stream cannot prove
the outcome (the window ends without that push, or the stream fails), it polls the documented
order lookup (``queryOrderPage`` by ``orderIds``, isolated margin) with the hook's ``acall``,
within the apiKey's shared budget. A triggerer killed meanwhile loses nothing: the trigger a new
triggerer starts with the same arguments resumes from the push log.

The same tracking runs in the worker (:func:`run_tracking`) when the operator is not deferrable
and a retry adopts an order that is still open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


@dataclass(kw_only=True)
class OrderTracking:
    """One order to follow: JSON values only, so the trigger serializes it as it is.

    :param token: the msg token of the stream to resume (the worker's, for a handed-over stream).
    :param order_id: the order's ``orderId``.
    :param third_party_order: its ``thirdPartyOrder`` (for messages and the lookup's check).
    :param trade_types: the ``tradeTypes`` subscribed.
    :param trade_type: the order's ``tradeType`` (the lookup's filter).
    :param account_id: the order's ``accountId``, when given (the lookup's filter).
    :param lookup: poll the order lookup when the stream cannot prove the outcome (isolated
        margin; the full-margin interface documents none).
    :param deadline: Unix time at which the stream's window ends.
    :param lookup_timeout: how long after the stream ended the lookup is polled at most.
    :param poll_interval: seconds between lookups.
    :param output_path: the push log (shared with the worker that subscribed).
    :param spool_path: without ``output_path``, the local push log of the task instance.
    :param order: the order call's answer (``data``), echoed in the event.
    :param resumed: how the try found the order (``{"how": ..., "try_number": ...}``), echoed.
    :param hook_params: keyword arguments of the hook that makes the lookups (``timeout``, ...).
    """

    token: str
    order_id: str
    third_party_order: str | None = None
    multimarkets_conn_id: str = "multimarkets_default"
    trade_types: str = "2"
    trade_type: int = 2
    account_id: Any = None
    lookup: bool = True
    deadline: float = 0.0
    lookup_timeout: float = 60.0
    poll_interval: float = 5.0
    output_path: str | None = None
    spool_path: str | None = None
    ping_interval: float = 15.0
    order: dict[str, Any] | None = None
    resumed: dict[str, Any] | None = None
    hook_params: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.order_id = str(self.order_id)
        self.trade_types = str(self.trade_types)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def run_tracking(tracking: OrderTracking, log: Any) -> dict[str, Any]:
    """Follow the order: the stream first, then the lookup if the stream cannot prove the outcome.

    The event: ``status`` (``success``, or ``error`` with ``message``), ``final`` (a final status
    was seen), ``source`` (``push``, ``lookup`` or ``None``), ``final_message`` (the push),
    ``record`` (the lookup's record), ``summary`` (the subscription's), ``stream_error``,
    ``lookup_error``, and ``order``/``resumed`` as given. Never raises for what the platform does.
    """
    from airflow_provider_multimarkets.messaging.client import MultiMarketsMsgClient, SubscriptionSpec

    spec = SubscriptionSpec(
        token=tracking.token,
        multimarkets_conn_id=tracking.multimarkets_conn_id,
        trade_types=tracking.trade_types,
        deadline=tracking.deadline,
        until_order_id=tracking.order_id,
        output_path=tracking.output_path,
        spool_path=tracking.spool_path,
        inline_limit=0,
        ping_interval=tracking.ping_interval,
    )
    client = MultiMarketsMsgClient(spec, log=log)
    try:
        streamed = await client.subscribe()
    finally:
        await client.close()
    summary = dict(streamed.get("summary") or {})
    summary.pop("messages_inline", None)
    until = summary.get("until") or {}
    event: dict[str, Any] = {
        "status": "success",
        "order_id": tracking.order_id,
        "third_party_order": tracking.third_party_order,
        "final": bool(until.get("met")),
        "source": "push" if until.get("met") else None,
        "final_message": until.get("final_message"),
        "record": None,
        "summary": summary,
        "stream_error": streamed.get("message") if streamed.get("status") != "success" else None,
        "lookup_error": None,
        "order": tracking.order,
        "resumed": tracking.resumed,
    }
    if event["final"]:
        return event
    if event["stream_error"]:
        log.warning("Order %s: the message stream failed (%s).", tracking.order_id, event["stream_error"])
    if not tracking.lookup:
        if event["stream_error"]:
            event["status"] = "error"
            event["message"] = event["stream_error"]
        return event
    await poll_lookup(tracking, event, log)
    return event


async def poll_lookup(tracking: OrderTracking, event: dict[str, Any], log: Any) -> None:
    """Poll the order lookup until the order is final or ``lookup_timeout`` after the window; updates ``event``."""
    from airflow_provider_multimarkets.exceptions import MultiMarketsError
    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
    from airflow_provider_multimarkets.trading.order_lookup import afind_orders, describe, is_final

    hook = MultiMarketsHook(tracking.multimarkets_conn_id, **(tracking.hook_params or {}))
    end = max(time.time(), tracking.deadline) + tracking.lookup_timeout
    log.info(
        "Order %s: the stream did not show a final status; polling the order lookup for up to %.0f s.",
        tracking.order_id,
        end - time.time(),
    )
    looked = 0
    try:
        while True:
            looked += 1
            try:
                found = await afind_orders(
                    hook,
                    trade_type=tracking.trade_type,
                    order_id=tracking.order_id,
                    account_id=tracking.account_id,
                )
            except MultiMarketsError as exc:
                event["lookup_error"] = str(exc)
                log.warning("Order %s: lookup %d failed: %s", tracking.order_id, looked, exc)
            else:
                event["lookup_error"] = None
                if found:
                    event["record"] = found[0]
                    if is_final(found[0]):
                        event.update(final=True, source="lookup")
                        log.info("Order %s: %s (looked up).", tracking.order_id, describe(found[0]))
                        return
            if time.time() + tracking.poll_interval > end:
                break
            await asyncio.sleep(tracking.poll_interval)
    finally:
        await asyncio.to_thread(hook.close)
    if event["record"] is None and event["lookup_error"]:
        event["status"] = "error"
        event["message"] = f"the order lookup failed {looked} time(s) (last: {event['lookup_error']})" + (
            f", after the stream failed ({event['stream_error']})" if event["stream_error"] else ""
        )
    elif event["record"] is not None:
        event["source"] = "lookup"


class MultiMarketsOrderTrackingTrigger(BaseTrigger):
    """Follow one placed order to its final status (see the module). Keyword arguments: the fields of
    :class:`OrderTracking` (JSON values, so :meth:`serialize` round-trips them)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.tracking = OrderTracking(**kwargs)

    def __repr__(self) -> str:  # never the token
        return (
            f"<MultiMarketsOrderTrackingTrigger order_id={self.tracking.order_id!r} "
            f"conn_id={self.tracking.multimarkets_conn_id!r}>"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_multimarkets.triggers.order_tracking.MultiMarketsOrderTrackingTrigger",
            self.tracking.as_json(),
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_multimarkets._compat import amask_secret

        await amask_secret(self.tracking.token)
        yield TriggerEvent(await run_tracking(self.tracking, self.log))
