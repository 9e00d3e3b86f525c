"""``MultiMarketsOrderStatusSensor``: wait until an order reaches a final status, and fail in the order's own words.

Parse-light: the hook's HTTP machinery is imported only when the sensor pokes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow_provider_multimarkets._compat import AirflowSensorTimeout, BaseSensorOperator, Context, default_deferrable
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError, MultiMarketsOrderError
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook, check_hook_params

#: every status of the documented order list (1 received ... 7 expired)
ORDER_STATUSES = frozenset(range(1, 8))


class MultiMarketsOrderStatusSensor(BaseSensorOperator):
    """Wait for an order (``order_id`` or ``third_party_order``) to reach a status in ``target_statuses``.

    It looks the order up in the documented order list (``queryOrderPage``, isolated margin, one
    signed call per poke, within the apiKey's shared budget). A status in ``failed_statuses`` fails
    the task with the order's own words (its status and ``remark``); so does a final status that is
    in neither list. With ``deferrable=True`` the triggerer polls
    (:class:`~airflow_provider_multimarkets.triggers.order_status.MultiMarketsOrderStatusTrigger`)
    and no worker slot is held; otherwise it pokes (``mode="poke"`` or ``"reschedule"``).

    The alternative to a tracking order operator: place with
    ``MultiMarketsMarketOrderOperator(track=False)`` and wait here, e.g.
    ``third_party_order="{{ ti.xcom_pull(task_ids='place')['third_party_order'] }}"``.

    XCom ``return_value``: ``order_id``, ``third_party_order``, ``status``, ``status_name`` and the
    order's ``record``.

    :param order_id: the order's ``orderId`` (templated).
    :param third_party_order: the order's ``thirdPartyOrder`` (templated).
    :param trade_type: the order list's ``tradeType`` (2, isolated margin: the full-margin interface
        documents no order list).
    :param account_id: look in this account only (templated).
    :param target_statuses: the statuses that end the wait successfully (default: 2, executed).
    :param failed_statuses: the statuses that fail it (default: 4 cancelled, 5 partially cancelled,
        6 rejected, 7 expired).
    :param deferrable: poll in the triggerer. Default: ``[operators] default_deferrable``.
    :param multimarkets_conn_id: the ``multimarkets`` connection.
    :param hook_params: keyword arguments of :class:`MultiMarketsHook` (``timeout``, ``max_retries``,
        ``retry_backoff``, ``rate_limit_per_minute``).
    """

    template_fields: Sequence[str] = (
        "order_id",
        "third_party_order",
        "account_id",
        "multimarkets_conn_id",
        "hook_params",
    )
    ui_color = "#fdf3e8"

    def __init__(
        self,
        *,
        order_id: str | int | None = None,
        third_party_order: str | None = None,
        trade_type: int = 2,
        account_id: str | int | None = None,
        target_statuses: Sequence[int] = (2,),
        failed_statuses: Sequence[int] = (4, 5, 6, 7),
        deferrable: bool | None = None,
        multimarkets_conn_id: str = MultiMarketsHook.default_conn_name,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 10.0)
        kwargs.setdefault("timeout", 3600.0)
        super().__init__(**kwargs)
        task_id = kwargs.get("task_id")
        if order_id in (None, "") and not third_party_order:
            raise MultiMarketsConfigError(f"{task_id}: give order_id or third_party_order (the order to wait for).")
        targets, failed = (
            _statuses(task_id, "target_statuses", target_statuses),
            _statuses(task_id, "failed_statuses", failed_statuses),
        )
        if not targets:
            raise MultiMarketsConfigError(f"{task_id}: target_statuses is empty: the sensor could never succeed.")
        if targets & failed:
            raise MultiMarketsConfigError(
                f"{task_id}: statuses {sorted(targets & failed)} are both target and failed statuses."
            )
        self.order_id = order_id
        self.third_party_order = third_party_order
        self.trade_type = int(trade_type)
        self.account_id = account_id
        self.target_statuses = sorted(targets)
        self.failed_statuses = sorted(failed)
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.multimarkets_conn_id = multimarkets_conn_id
        self.hook_params = check_hook_params(hook_params, task_id)

    @cached_property
    def hook(self) -> MultiMarketsHook:
        return MultiMarketsHook.for_task(self.multimarkets_conn_id, self.hook_params, self.task_id)

    def _wait(self, deadline: float | None = None) -> Any:
        from airflow_provider_multimarkets.triggers.order_status import OrderStatusWait

        return OrderStatusWait(
            order_id=None if self.order_id in (None, "") else str(self.order_id),
            third_party_order=self.third_party_order or None,
            trade_type=self.trade_type,
            account_id=self.account_id if self.account_id not in (None, "") else None,
            target_statuses=list(self.target_statuses),
            failed_statuses=list(self.failed_statuses),
            poll_interval=float(self.poke_interval),
            deadline=deadline,
            multimarkets_conn_id=self.multimarkets_conn_id,
            hook_params=self.hook_params or None,
        )

    def _look(self) -> dict[str, Any] | None:
        """One lookup: the ending event, or ``None`` while the order is not there yet or still open."""
        from airflow_provider_multimarkets.trading.order_lookup import find_orders
        from airflow_provider_multimarkets.triggers.order_status import check

        wait = self._wait()
        found = find_orders(self.hook, **wait.query())
        event = check(wait, found)
        if event is None:
            what = "not in the order list yet" if not found else f"status {found[0].get('status')}"
            self.log.info("Order %s: %s.", wait.order_id or wait.third_party_order, what)
        return event

    def poke(self, context: Context) -> Any:
        from airflow_provider_multimarkets._compat import PokeReturnValue

        event = self._look()
        if event is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._outcome(event))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        event = self._look()  # an order already final needs no trigger
        if event is not None:
            return self._outcome(event)
        import time

        from airflow_provider_multimarkets.triggers.order_status import MultiMarketsOrderStatusTrigger

        timeout = float(self.timeout)
        self.defer(
            trigger=MultiMarketsOrderStatusTrigger(**self._wait(deadline=time.time() + timeout).as_json()),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=timeout + 120),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if not isinstance(event, dict) or event.get("status") not in ("done", "timeout", "error"):
            raise MultiMarketsOrderError(
                f"{self.task_id}: the order status trigger ended without an event ({event!r}). Clear the task to "
                "wait again: the order is not affected.",
                third_party_order=self.third_party_order or "",
            )
        if event["status"] == "timeout":
            from airflow_provider_multimarkets.trading.order_lookup import describe

            record = event.get("record")
            last = describe(record) if isinstance(record, dict) else "not found in the order list"
            raise AirflowSensorTimeout(
                f"{self.task_id}: order {self.order_id or self.third_party_order} did not reach a status in "
                f"{self.target_statuses} within {float(self.timeout):.0f} s (last seen: {last})."
            )
        return self._outcome(event)

    def _outcome(self, event: dict[str, Any]) -> dict[str, Any]:
        """The XCom for a record that ends the wait; a failed, or unexpected final, status raises."""
        from airflow_provider_multimarkets.trading.order_identity import record_order_id
        from airflow_provider_multimarkets.trading.order_lookup import describe, record_status
        from airflow_provider_multimarkets.trading.order_status import order_status_name

        if event.get("status") == "error":
            raise MultiMarketsOrderError(
                f"{self.task_id}: could not follow order {self.order_id or self.third_party_order}: "
                f"{event.get('message')}",
                third_party_order=self.third_party_order or "",
            )
        record = dict(event["record"])
        status = record_status(record)
        if status in self.target_statuses:
            self.log.info("%s.", describe(record)[0].upper() + describe(record)[1:])
            return {
                "order_id": record_order_id(record),
                "third_party_order": record.get("thirdPartyOrder"),
                "status": status,
                "status_name": order_status_name(status),
                "record": record,
            }
        if status in self.failed_statuses:
            why = "a failed status"
        else:
            why = f"a final status that is neither a target {self.target_statuses} nor a failed status"
        raise MultiMarketsOrderError(
            f"{self.task_id}: {describe(record)}: {why}.",
            third_party_order=str(record.get("thirdPartyOrder") or self.third_party_order or ""),
            placed=True,
            order_ids=[record_order_id(record)],
        )


def _statuses(task_id: Any, name: str, values: Sequence[int]) -> set[int]:
    try:
        statuses = {int(v) for v in values}
    except (TypeError, ValueError):
        raise MultiMarketsConfigError(f"{task_id}: {name} must be order statuses (1 to 7), got {values!r}.") from None
    if not statuses <= ORDER_STATUSES:
        raise MultiMarketsConfigError(
            f"{task_id}: {name} {sorted(statuses - ORDER_STATUSES)} are not order statuses: 1 received, 2 executed, "
            "3 partially executed, 4 cancelled, 5 partially cancelled, 6 rejected, 7 expired."
        )
    return statuses
