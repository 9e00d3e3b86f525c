"""``MultiMarketsMarketOrderOperator``: place ONE market order and track it to a final status.

This operator places real orders. It is never retried by the provider on timeouts or 5xx
(``idempotent=False``); give the task ``retries=0`` unless a second order per retry is wanted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property, partial
from typing import Any

from airflow_provider_multimarkets._compat import BaseOperator, Context
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError, MultiMarketsMsgError
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

ISOLATED_MARKET_ORDER = "tradeapi.app.OrderApiService.addMarketOrder"
CROSS_MARKET_ORDER = "tradeapi.app.CfdMMOrderApiService.addMarketOrder"


class MultiMarketsMarketOrderOperator(BaseOperator):
    """Place one market order and, with ``track=True``, wait for its trade push to reach a final status.

    Tracking follows the documented order flow: fetch a msg token, open the message WebSocket,
    log in and subscribe to the order's ``tradeType`` first, only then place the order, and match
    ``data.orderId`` with the ``orderId`` of the trade pushes. The order is placed at most once per
    task try, and never if the subscription could not be opened. Runs in the worker (an order is
    never placed from the triggerer, which may re-run a trigger).

    :param order: the order body (templated), e.g. the Order Process example; prices are scaled
        integer strings (see :func:`airflow_provider_multimarkets.reports.scale_price`).
    :param biz_type: ``tradeapi.app.OrderApiService.addMarketOrder`` (isolated margin, tradeType 2,
        default) or ``tradeapi.app.CfdMMOrderApiService.addMarketOrder`` (full margin, tradeType 1).
    :param track: subscribe before placing and wait for the final status (default ``True``).
    :param window_seconds: how long to wait for the final status.
    :param output_path: JSON Lines file of the pushes received while tracking (templated).
    """

    template_fields: Sequence[str] = ("order", "biz_type", "output_path", "multimarkets_conn_id")
    template_fields_renderers = {"order": "json"}
    ui_color = "#fde8e8"

    def __init__(
        self,
        *,
        order: dict[str, Any] | Any,
        biz_type: str = ISOLATED_MARKET_ORDER,
        version: str | None = "0.0.1",
        group: str | None = "tradeApi",
        track: bool = True,
        trade_types: str | None = None,
        window_seconds: float = 60.0,
        output_path: str | None = None,
        ping_interval: float = 15.0,
        multimarkets_conn_id: str = MultiMarketsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.order = order
        self.biz_type = biz_type
        self.version = version
        self.group = group
        self.track = track
        self.trade_types = trade_types
        self.window_seconds = window_seconds
        self.output_path = output_path
        self.ping_interval = ping_interval
        self.multimarkets_conn_id = multimarkets_conn_id

    @cached_property
    def hook(self) -> MultiMarketsHook:
        return MultiMarketsHook(self.multimarkets_conn_id)

    def _place(self, order: dict[str, Any]) -> dict[str, Any]:
        data = self.hook.call(self.biz_type, order, version=self.version, group=self.group, idempotent=False)
        if not isinstance(data, dict) or "orderId" not in data:
            raise MultiMarketsMsgError(f"{self.biz_type} succeeded but returned no orderId: {data!r}")
        self.log.info(
            "Order placed: orderId=%s positionId=%s executePrice=%s",
            data["orderId"],
            data.get("positionId"),
            data.get("executePrice"),
        )
        return data

    def execute(self, context: Context) -> dict[str, Any]:
        order = self.order
        if not isinstance(order, dict) or "tradeType" not in order:
            raise MultiMarketsConfigError(
                f"{self.task_id}: order must be a dict with the documented body fields (tradeType, symbolId, ...), got "
                f"{type(order).__name__}. With a templated order, set render_template_as_native_obj=True on the DAG."
            )
        self.log.warning("Placing a MARKET ORDER (%s): %s", self.biz_type, order)
        if not self.track:
            return {"order": self._place(order)}

        import asyncio

        from airflow_provider_multimarkets.operators.msg_subscribe import _first_event
        from airflow_provider_multimarkets.reports import fill_report
        from airflow_provider_multimarkets.triggers.msg_subscribe import MultiMarketsMsgSubscribeTrigger

        token = self.hook.get_msg_token()
        trigger = MultiMarketsMsgSubscribeTrigger(
            token=token,
            multimarkets_conn_id=self.multimarkets_conn_id,
            trade_types=self.trade_types or str(order["tradeType"]),
            deadline=time.time() + self.window_seconds,
            output_path=self.output_path or None,
            inline_limit=0 if self.output_path else 100,
            ping_interval=self.ping_interval,
        )
        placed: dict[str, Any] = {}

        async def place_after_subscribed() -> str:
            try:
                placed["order"] = await asyncio.get_running_loop().run_in_executor(None, partial(self._place, order))
            except Exception as exc:
                placed["error"] = exc
                raise
            return str(placed["order"]["orderId"])

        trigger.on_subscribed = place_after_subscribed
        event = asyncio.run(_first_event(trigger))
        if "error" in placed:
            raise placed["error"]
        summary = event.get("summary") or {}
        if "order" not in placed:
            raise MultiMarketsMsgError(
                f"The order was NOT placed: the subscription failed first ({event.get('message')})."
            )
        if event.get("status") != "success":
            raise MultiMarketsMsgError(
                f"Order {placed['order']['orderId']} WAS placed, but tracking it failed: {event.get('message')}"
            )
        until = summary.get("until") or {}
        fill = fill_report(placed["order"], until.get("final_message"))
        if not until.get("met"):
            self.log.warning(
                "Order %s: no final status within %.0f s.", placed["order"]["orderId"], self.window_seconds
            )
        else:
            self.log.info(
                "Order %s reached status %s at %s.", fill["order_id"], fill["final_status"], fill["deal_price"]
            )
        summary.pop("messages_inline", None)
        return {"order": placed["order"], "fill": fill, "subscription": summary}
