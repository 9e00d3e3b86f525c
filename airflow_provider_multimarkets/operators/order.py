"""``MultiMarketsMarketOrderOperator``: exactly one market order per task instance, tracked to a final status.

Every order carries a client order id, ``thirdPartyOrder``, derived from the task instance (the
same for every try and every clear of it). Before placing, any try after the first looks the order
up by that id and adopts what it finds, so a retry after a crash, a lost answer or a clear never
places a second order. A lookup that fails fails the task without placing: it never places blind.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow_provider_multimarkets._compat import BaseOperator, Context
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsConfigError,
    MultiMarketsError,
    MultiMarketsMsgError,
    MultiMarketsOrderError,
    MultiMarketsTransportError,
)
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook

ISOLATED_MARKET_ORDER = "tradeapi.app.OrderApiService.addMarketOrder"
CROSS_MARKET_ORDER = "tradeapi.app.CfdMMOrderApiService.addMarketOrder"
#: The documented order list of isolated-margin orders; it filters by ``thirdPartyOrder``.
ISOLATED_ORDER_PAGE = "tradeapi.app.OrderApiService.queryOrderPage"
#: Order lists by variant. The full-margin ``CfdMMOrderApiService`` documents no list of open or
#: pending orders (only ``queryHistoryCloseOrderList``, closed positions), so its orders cannot be
#: looked up first: a retry of one never places (see ``_find_earlier_order``).
ORDER_LOOKUPS = {ISOLATED_MARKET_ORDER: ISOLATED_ORDER_PAGE}


class MultiMarketsMarketOrderOperator(BaseOperator):
    """Place one market order per task instance and, with ``track=True``, wait for its final status.

    Tracking follows the documented order flow: fetch a msg token, open the message WebSocket,
    log in and subscribe to the order's ``tradeType``; only once the subscription is acknowledged
    place the order, and match ``data.orderId`` with the ``orderId`` of the trade pushes.

    Exactly once: the order body gets ``thirdPartyOrder`` (``third_party_order``, by default derived
    from dag_id, run_id, task_id and map_index). A retry, or a clear, first looks the order up by it
    (``queryOrderPage``) and adopts the order it finds instead of placing another; when the lookup
    fails, the task fails without placing. Airflow's own ``retries`` apply (none are forced).

    :param order: the order body (templated), e.g. the Order Process example; prices are scaled
        integer strings (see :func:`airflow_provider_multimarkets.trading.reports.scale_price`).
    :param biz_type: ``tradeapi.app.OrderApiService.addMarketOrder`` (isolated margin, tradeType 2,
        default) or ``tradeapi.app.CfdMMOrderApiService.addMarketOrder`` (full margin, tradeType 1;
        it has no documented order lookup, so a retry of it fails without placing).
    :param third_party_order: the client order id (templated; ``[A-Za-z0-9_]``, at most 255).
    :param track: subscribe before placing and wait for the final status (default ``True``).
    :param untracked_if_no_ack: place even when the subscription is not acknowledged within
        ``ack_grace`` seconds (the fill is then looked up, not pushed). Default ``False``: no
        acknowledgement, no order.
    :param window_seconds: how long to wait for the final status.
    :param output_path: JSON Lines file of the pushes received while tracking (templated).
    """

    template_fields: Sequence[str] = ("order", "biz_type", "output_path", "third_party_order", "multimarkets_conn_id")
    template_fields_renderers = {"order": "json"}
    ui_color = "#fde8e8"

    def __init__(
        self,
        *,
        order: dict[str, Any] | Any,
        biz_type: str = ISOLATED_MARKET_ORDER,
        version: str | None = "0.0.1",
        group: str | None = "tradeApi",
        third_party_order: str | None = None,
        track: bool = True,
        untracked_if_no_ack: bool = False,
        ack_grace: float = 10.0,
        trade_types: str | None = None,
        window_seconds: float = 60.0,
        output_path: str | None = None,
        ping_interval: float = 15.0,
        multimarkets_conn_id: str = MultiMarketsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        if biz_type == CROSS_MARKET_ORDER:
            kwargs.setdefault("retries", 0)  # no documented lookup: a retry could only fail (see _find_earlier_order)
        super().__init__(**kwargs)
        self.order = order
        self.biz_type = biz_type
        self.version = version
        self.group = group
        self.third_party_order = third_party_order
        self.track = track
        self.untracked_if_no_ack = untracked_if_no_ack
        self.ack_grace = ack_grace
        self.trade_types = trade_types
        self.window_seconds = window_seconds
        self.output_path = output_path
        self.ping_interval = ping_interval
        self.multimarkets_conn_id = multimarkets_conn_id

    @cached_property
    def hook(self) -> MultiMarketsHook:
        return MultiMarketsHook(self.multimarkets_conn_id)

    # ---- identity and lookup -------------------------------------------------------------------

    def _client_order_id(self, context: Context) -> str:
        from airflow_provider_multimarkets.trading.order_identity import (
            check_third_party_order,
            derive_third_party_order,
        )

        if self.third_party_order:
            return check_third_party_order(self.third_party_order)
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        return derive_third_party_order(ti.dag_id, ti.run_id, ti.task_id, -1 if map_index is None else int(map_index))

    def lookup(self, order: dict[str, Any], third_party_order: str) -> list[dict[str, Any]]:
        """The orders the platform holds with ``third_party_order`` (the documented order list)."""
        from airflow_provider_multimarkets.trading.order_identity import matching_orders

        page_biz = ORDER_LOOKUPS[self.biz_type]
        query: dict[str, Any] = {
            "tradeType": order["tradeType"],
            "thirdPartyOrder": third_party_order,
            "current": 1,
            "size": 20,
        }
        if order.get("accountId") is not None:
            query["accountId"] = order["accountId"]
        page = self.hook.call(page_biz, query, version="0.0.1", group="tradeApi")
        records = page.get("records") if isinstance(page, dict) else None
        if not isinstance(records, list):
            raise MultiMarketsOrderError(
                f"{page_biz} answered without a records list ({type(page).__name__}); cannot tell whether order "
                f"thirdPartyOrder={third_party_order} exists.",
                third_party_order=third_party_order,
            )
        return matching_orders(records, third_party_order)

    def _find_earlier_order(self, order: dict[str, Any], third_party_order: str) -> dict[str, Any] | None:
        """On a retry or clear: the order an earlier try placed, or ``None`` when there is none."""
        from airflow_provider_multimarkets.trading.order_identity import record_order_id

        if self.biz_type not in ORDER_LOOKUPS:
            raise MultiMarketsOrderError(
                f"This is a retry of a {self.biz_type} order task. The full-margin interface documents no order "
                f"lookup by thirdPartyOrder, so an earlier try's order cannot be ruled out; nothing was placed. "
                f"Look for thirdPartyOrder={third_party_order} in the platform before clearing the task with a "
                "new third_party_order.",
                third_party_order=third_party_order,
            )
        try:
            found = self.lookup(order, third_party_order)
        except MultiMarketsError as exc:
            raise MultiMarketsOrderError(
                f"Nothing was placed: this try must first look up order thirdPartyOrder={third_party_order} "
                f"(an earlier try may have placed it), and the lookup failed: {exc}",
                third_party_order=third_party_order,
            ) from None
        if len(found) > 1:
            ids = ", ".join(str(record_order_id(r)) for r in found)
            raise MultiMarketsOrderError(
                f"Nothing was placed: {len(found)} orders carry thirdPartyOrder={third_party_order} ({ids}). "
                "Resolve them in the platform; this task will not add another.",
                third_party_order=third_party_order,
                order_ids=[record_order_id(r) for r in found],
            )
        if found:
            self.log.warning(
                "Order thirdPartyOrder=%s was already placed by an earlier try (orderId %s): adopting it, not "
                "placing another.",
                third_party_order,
                record_order_id(found[0]),
            )
            return found[0]
        self.log.info("No order with thirdPartyOrder=%s yet: placing it.", third_party_order)
        return None

    # ---- placing ---------------------------------------------------------------------------------

    def _place(self, order: dict[str, Any], context: Context) -> dict[str, Any]:
        third_party_order = order["thirdPartyOrder"]
        try:
            data = self.hook.call(self.biz_type, order, version=self.version, group=self.group, idempotent=False)
        except MultiMarketsError as exc:
            raise self._placement_failure(order, exc) from None
        if not isinstance(data, dict) or "orderId" not in data:
            raise MultiMarketsOrderError(
                f"{self.biz_type} succeeded but returned no orderId; order thirdPartyOrder={third_party_order} "
                "WAS placed. Look it up in the platform.",
                third_party_order=third_party_order,
            )
        self.log.info(
            "Order placed: orderId=%s positionId=%s executePrice=%s thirdPartyOrder=%s",
            data["orderId"],
            data.get("positionId"),
            data.get("executePrice"),
            third_party_order,
        )
        self._record(context, {"orderId": data["orderId"], "thirdPartyOrder": third_party_order, "source": "placed"})
        return data

    def _placement_failure(self, order: dict[str, Any], exc: MultiMarketsError) -> MultiMarketsOrderError:
        """Say truthfully what is known: not placed only when the request provably never left."""
        third_party_order = order["thirdPartyOrder"]
        never_sent = isinstance(exc, MultiMarketsTransportError) and not exc.maybe_sent
        rejected = isinstance(exc, MultiMarketsApiError) or (exc.http_status in (418, 429))
        if never_sent or rejected:
            why = "the request never left this worker" if never_sent else "the gateway rejected it"
            return MultiMarketsOrderError(
                f"The order was NOT placed ({why}): {exc}", third_party_order=third_party_order, placed=False
            )
        if self.biz_type not in ORDER_LOOKUPS:
            lookup = "the full-margin interface documents no lookup to check"
        else:
            try:
                found = self.lookup(order, third_party_order)
            except MultiMarketsError as lookup_exc:
                lookup = f"the lookup failed too ({lookup_exc})"
            else:
                if found:
                    from airflow_provider_multimarkets.trading.order_identity import record_order_id

                    return MultiMarketsOrderError(
                        f"Order {record_order_id(found[0])} (thirdPartyOrder={third_party_order}) WAS placed, but "
                        f"its answer was lost: {exc}. A retry of this task adopts it.",
                        third_party_order=third_party_order,
                        placed=True,
                        order_ids=[record_order_id(r) for r in found],
                    )
                lookup = f"a lookup at {time.strftime('%H:%M:%S')} found none yet"
        return MultiMarketsOrderError(
            f"The order MAY have been placed: the request may have reached the gateway ({exc}); {lookup}. Look for "
            f"thirdPartyOrder={third_party_order}. A retry of this task looks it up before placing.",
            third_party_order=third_party_order,
        )

    def _record(self, context: Context, value: dict[str, Any]) -> None:
        """Put the order's ids in XCom at once, so a crash after placing leaves them in Airflow."""
        try:
            context["ti"].xcom_push(key="order_ids", value=value)
        except Exception as exc:  # never turn a placed order into a failure for want of an XCom
            self.log.warning("Could not record the order ids in XCom (%s): %s", type(exc).__name__, value)

    # ---- execute ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        order = self.order
        if not isinstance(order, dict) or "tradeType" not in order:
            raise MultiMarketsConfigError(
                f"{self.task_id}: order must be a dict with the documented body fields (tradeType, symbolId, ...), got "
                f"{type(order).__name__}. With a templated order, set render_template_as_native_obj=True on the DAG."
            )
        third_party_order = self._client_order_id(context)
        order = {**order, "thirdPartyOrder": third_party_order}
        try_number = int(getattr(context["ti"], "try_number", 1) or 1)
        if try_number > 1:
            existing = self._find_earlier_order(order, third_party_order)
            if existing is not None:
                return self._adopted(existing, order, context)
        self.log.warning("Placing a MARKET ORDER (%s): %s", self.biz_type, order)
        if not self.track:
            return {"order": self._place(order, context), "third_party_order": third_party_order}
        return self._place_tracked(order, context)

    def _adopted(self, record: dict[str, Any], order: dict[str, Any], context: Context) -> dict[str, Any]:
        """An earlier try placed the order: report it, and wait (bounded) for a final status."""
        from airflow_provider_multimarkets.trading.order_identity import record_order_id
        from airflow_provider_multimarkets.trading.order_status import is_final_order_status

        order_id = record_order_id(record)
        self._record(context, {"orderId": order_id, "thirdPartyOrder": order["thirdPartyOrder"], "source": "adopted"})
        deadline = time.monotonic() + (self.window_seconds if self.track else 0)
        while self.track and not is_final_order_status(record.get("status")) and time.monotonic() < deadline:
            time.sleep(2)
            found = self.lookup(order, order["thirdPartyOrder"])
            record = found[0] if found else record
        return {
            "order": {"orderId": order_id, **{k: record.get(k) for k in ("positionId", "executePrice", "symbolName")}},
            "third_party_order": order["thirdPartyOrder"],
            "adopted": True,
            "record": record,
            "fill": {"order_id": order_id, "final_status": record.get("status"), "tracked": False},
        }

    def _place_tracked(self, order: dict[str, Any], context: Context) -> dict[str, Any]:
        import asyncio

        from airflow_provider_multimarkets.messaging.client import MultiMarketsMsgClient, SubscriptionSpec
        from airflow_provider_multimarkets.trading.reports import fill_report

        token = self.hook.get_msg_token()
        placed: dict[str, Any] = {}

        def place() -> str:
            # Runs in a thread and stores its own outcome: a dropped socket that cancels the coroutine
            # waiting for it can neither stop the call nor lose what it answered.
            try:
                placed["order"] = self._place(order, context)
            except BaseException as exc:
                placed["error"] = exc
                raise
            return str(placed["order"]["orderId"])

        async def place_after_subscribed() -> str:
            return await asyncio.get_running_loop().run_in_executor(None, place)

        spec = SubscriptionSpec(
            token=token,
            multimarkets_conn_id=self.multimarkets_conn_id,
            trade_types=self.trade_types or str(order["tradeType"]),
            deadline=time.time() + self.window_seconds,
            output_path=self.output_path or None,
            inline_limit=0 if self.output_path else 100,
            ping_interval=self.ping_interval,
        )
        client = MultiMarketsMsgClient(
            spec,
            on_subscribed=place_after_subscribed,
            ack_grace=self.ack_grace,
            callback_without_ack=self.untracked_if_no_ack,
            log=self.log,
        )

        async def subscribe() -> dict[str, Any]:
            try:
                return await client.subscribe()
            finally:
                await client.close()

        event = asyncio.run(subscribe())  # returns once the placing thread is done
        if "error" in placed:
            raise placed["error"]
        summary = event.get("summary") or {}
        if "order" not in placed:
            raise MultiMarketsOrderError(
                f"The order was NOT placed (thirdPartyOrder={order['thirdPartyOrder']}): the subscription that "
                f"tracks it failed first: {event.get('message')}",
                third_party_order=order["thirdPartyOrder"],
                placed=False,
            )
        if event.get("status") != "success":
            raise MultiMarketsMsgError(
                f"Order {placed['order']['orderId']} (thirdPartyOrder={order['thirdPartyOrder']}) WAS placed, but "
                f"tracking it failed: {event.get('message')}. A retry of this task adopts it."
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
        return {
            "order": placed["order"],
            "third_party_order": order["thirdPartyOrder"],
            "fill": fill,
            "subscription": summary,
        }
