"""``MultiMarketsMarketOrderOperator``: exactly one market order per task instance, tracked to a final status.

Every order carries a client order id, ``thirdPartyOrder``, derived from the task instance (the
same for every try and every clear of it), and an ``idempotency-key`` header derived from that id.
On Airflow 3.3+ (``durable=True``, the default) the order's ids are kept in the task state store
(keys in :mod:`~airflow_provider_multimarkets.trading.order_state`): written before the order call,
right after its answer and after the fill, and read first by every retry and clear, through
``ResumableJobMixin``'s reconnect decision. Without a stored order id, a retry looks the order up
by ``thirdPartyOrder`` (isolated margin) or lets the stored ``idempotency-key`` decide (full
margin), and places only when there is no evidence that the order was ever sent. A lookup that
fails fails the task without placing: it never places blind.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_multimarkets._compat import (
    DURABLE_EXECUTION,
    BaseOperator,
    Context,
    ResumableJobMixin,
    airflow_version,
    default_deferrable,
)
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsConcurrentDuplicateError,
    MultiMarketsConfigError,
    MultiMarketsError,
    MultiMarketsMsgError,
    MultiMarketsOrderError,
    MultiMarketsTransportError,
)
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook, check_hook_params
from airflow_provider_multimarkets.trading.order_lookup import ISOLATED_ORDER_PAGE

if TYPE_CHECKING:
    from airflow_provider_multimarkets.trading.order_state import OrderMemory
    from airflow_provider_multimarkets.triggers.order_tracking import OrderTracking

ISOLATED_MARKET_ORDER = "tradeapi.app.OrderApiService.addMarketOrder"
CROSS_MARKET_ORDER = "tradeapi.app.CfdMMOrderApiService.addMarketOrder"
#: Order lists by variant. The full-margin ``CfdMMOrderApiService`` documents no list of open or
#: pending orders (only ``queryHistoryCloseOrderList``, closed positions), so its orders cannot be
#: looked up: the task state store (Airflow 3.3+) and the ``idempotency-key`` decide instead.
ORDER_LOOKUPS = {ISOLATED_MARKET_ORDER: ISOLATED_ORDER_PAGE}


class MultiMarketsMarketOrderOperator(ResumableJobMixin, BaseOperator):
    """Place one market order per task instance and, with ``track=True``, wait for its final status.

    Tracking follows the documented order flow: fetch a msg token, open the message WebSocket,
    log in and subscribe to the order's ``tradeType``; once the login is answered
    (``subscribe_success``) and ``subscribe_asset`` is sent, place the order, and match
    ``data.orderId`` with the ``orderId`` of the trade pushes. With ``deferrable=True`` the
    subscription and the placement run in the worker, then the tracking is handed to the triggerer
    (:class:`~airflow_provider_multimarkets.triggers.order_tracking.MultiMarketsOrderTrackingTrigger`),
    which resumes the same stream with the same token; the XCom is the same.

    Exactly once: the order body gets ``thirdPartyOrder`` (``third_party_order``, by default derived
    from dag_id, run_id, task_id and map_index) and the request an ``idempotency-key`` derived from
    it (the connection extra ``idempotency_key: false`` turns the header off). On Airflow 3.3+,
    ``durable=True`` keeps the order in the task state store: a retry or a clear of a final order
    returns its result at once, an open one is tracked, not placed; without a stored ``orderId`` a
    retry looks the order up (``queryOrderPage``) or, for the full-margin variant, lets the stored
    ``idempotency-key`` decide. Airflow's own ``retries`` apply.

    :param order: the order body (templated), e.g. the Order Process example; prices are scaled
        integer strings (see :func:`airflow_provider_multimarkets.trading.reports.scale_price`).
    :param biz_type: ``tradeapi.app.OrderApiService.addMarketOrder`` (isolated margin, tradeType 2,
        default) or ``tradeapi.app.CfdMMOrderApiService.addMarketOrder`` (full margin, tradeType 1;
        it has no documented order lookup: with durable execution its retries are safe, without it
        ``retries`` defaults to 0 and a retry fails without placing).
    :param third_party_order: the client order id (templated; ``[A-Za-z0-9_]``, at most 255).
    :param track: subscribe before placing and wait for the final status (default ``True``).
        ``track=False`` places and returns at once; wait with
        :class:`~airflow_provider_multimarkets.sensors.order_status.MultiMarketsOrderStatusSensor`.
    :param window_seconds: how long to wait for the order's final trade push.
    :param lookup_timeout: when the stream cannot prove the outcome (no final push in the window, or
        the stream failed), how long to poll the order lookup (isolated margin) after the window.
    :param poll_interval: seconds between those lookups.
    :param login_timeout: how long to wait for the answer to the login (``subscribe_success``)
        before placing; without it nothing is placed (the fill could not be tracked).
    :param untracked_if_no_login: place even when the login is not answered within
        ``login_timeout`` (the fill is then looked up, not pushed). Default ``False``.
    :param deferrable: hand the tracking to the triggerer once the order is placed, freeing the
        worker slot. Default: ``[operators] default_deferrable``.
    :param durable: keep the order in the task state store (Airflow 3.3+; default ``True``).
        ``False``: a retry relies on the ``thirdPartyOrder`` lookup only, as before 3.3.
    :param output_path: JSON Lines file of the pushes received while tracking (templated). With
        ``deferrable=True``, use a path the triggerer shares, so it resumes the worker's push log.
    :param ack_grace: deprecated: no gateway documents an acknowledgement of ``subscribe_asset``,
        so none is awaited; the value is used as ``login_timeout``.
    :param untracked_if_no_ack: deprecated: use ``untracked_if_no_login``.
    :param hook_params: the hook's own arguments for this task (templated), e.g.
        ``{"timeout": 60, "max_retries": 5, "retry_backoff": 2, "rate_limit_per_minute": 50}``; they
        override the connection's extras of the same names. Unknown keys are a config error.
    """

    template_fields: Sequence[str] = (
        "order",
        "biz_type",
        "output_path",
        "third_party_order",
        "hook_params",
        "multimarkets_conn_id",
    )
    template_fields_renderers = {"order": "json"}
    ui_color = "#fde8e8"
    #: ``ResumableJobMixin``'s key: the order id, stored right after the order call's answer.
    external_id_key = "multimarkets.order_id"

    def __init__(
        self,
        *,
        order: dict[str, Any] | Any,
        biz_type: str = ISOLATED_MARKET_ORDER,
        version: str | None = "0.0.1",
        group: str | None = "tradeApi",
        third_party_order: str | None = None,
        track: bool = True,
        trade_types: str | None = None,
        window_seconds: float = 60.0,
        lookup_timeout: float = 60.0,
        poll_interval: float = 5.0,
        output_path: str | None = None,
        ping_interval: float = 15.0,
        login_timeout: float | None = None,
        untracked_if_no_login: bool | None = None,
        deferrable: bool | None = None,
        durable: bool | None = None,
        ack_grace: float | None = None,
        untracked_if_no_ack: bool | None = None,
        hook_params: dict[str, Any] | None = None,
        multimarkets_conn_id: str = MultiMarketsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        if ack_grace is not None or untracked_if_no_ack is not None:
            _deprecated(task_id, ack_grace, untracked_if_no_ack)
        durable_on = durable is not False
        if durable is not None:
            kwargs["durable"] = durable  # named here so that default_args reach it (as the mixin's own)
        if biz_type == CROSS_MARKET_ORDER and not (DURABLE_EXECUTION and durable_on):
            # no documented lookup and no task state store: a retry could only fail (see _find_earlier_order)
            kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        for name, value in (("window_seconds", window_seconds), ("lookup_timeout", lookup_timeout)):
            if value is None or value < 0:
                raise MultiMarketsConfigError(f"{task_id}: {name} must be >= 0 seconds (always bounded).")
        if not poll_interval or poll_interval <= 0:
            raise MultiMarketsConfigError(f"{task_id}: poll_interval must be > 0 seconds.")
        self.order = order
        self.biz_type = biz_type
        self.version = version
        self.group = group
        self.third_party_order = third_party_order
        self.track = track
        self.trade_types = trade_types
        self.window_seconds = float(window_seconds)
        self.lookup_timeout = float(lookup_timeout)
        self.poll_interval = float(poll_interval)
        self.output_path = output_path
        self.ping_interval = ping_interval
        self.login_timeout = float(
            login_timeout if login_timeout is not None else ack_grace if ack_grace is not None else 10.0
        )
        self.untracked_if_no_login = bool(
            untracked_if_no_login if untracked_if_no_login is not None else untracked_if_no_ack or False
        )
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.multimarkets_conn_id = multimarkets_conn_id
        self.hook_params = check_hook_params(hook_params, self.task_id)
        self._run: _Run | None = None

    @cached_property
    def hook(self) -> MultiMarketsHook:
        return MultiMarketsHook.for_task(self.multimarkets_conn_id, self.hook_params, self.task_id)

    @property
    def has_lookup(self) -> bool:
        return self.biz_type in ORDER_LOOKUPS

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
        from airflow_provider_multimarkets.trading.order_lookup import find_orders

        return find_orders(
            self.hook,
            trade_type=order["tradeType"],
            third_party_order=third_party_order,
            account_id=order.get("accountId"),
        )

    def _find_earlier_order(self, order: dict[str, Any], third_party_order: str) -> dict[str, Any] | None:
        """On a retry or clear: the order an earlier try placed, or ``None`` when there is none."""
        from airflow_provider_multimarkets.trading.order_identity import record_order_id

        if not self.has_lookup:
            raise MultiMarketsOrderError(
                f"This is a retry of a {self.biz_type} order task. The full-margin interface documents no order "
                f"lookup by thirdPartyOrder, so an earlier try's order cannot be ruled out; nothing was placed. "
                f"Look for thirdPartyOrder={third_party_order} in the platform before clearing the task with a "
                "new third_party_order (on Airflow 3.3+, durable=True keeps the order in the task state store and "
                "makes retries of this variant safe).",
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

    # ---- the task state store ------------------------------------------------------------------

    def _memory(self) -> OrderMemory:
        from airflow_provider_multimarkets.trading.order_state import OrderMemory

        return OrderMemory.read(self._job.store)

    def _remember(self, values: dict[str, Any], *, required: bool = False) -> None:
        """Write keys of the task state store (never expiring: they outlive every retry and clear)."""
        store = self._job.store
        if store is None:
            return
        from airflow_provider_multimarkets._compat import NEVER_EXPIRE

        for key, value in values.items():
            if value is None:
                continue
            try:
                store.set(key, value, retention=NEVER_EXPIRE)
            except Exception as exc:
                if required:
                    raise MultiMarketsOrderError(
                        f"The order was NOT placed (thirdPartyOrder={self._job.third_party_order}): the task state "
                        f"store could not record it before the call ({type(exc).__name__}: {exc}). Check the "
                        "Airflow API server, or set durable=False.",
                        third_party_order=self._job.third_party_order,
                        placed=False,
                    ) from None
                self.log.warning("Could not write %s to the task state store (%s): %s", key, type(exc).__name__, exc)

    # ---- placing ---------------------------------------------------------------------------------

    def _idempotency_header(self) -> dict[str, Any]:
        """The keyword that sends the ``idempotency-key`` header, unless the connection turns it off."""
        if not self.hook.settings.idempotency_key:
            return {}
        return {"idempotency_key": self._job.idempotency_key}

    def _place(self, order: dict[str, Any], context: Context) -> dict[str, Any]:
        from airflow_provider_multimarkets.trading import order_state

        job = self._job
        third_party_order = order["thirdPartyOrder"]
        header = self._idempotency_header()
        call = order_state.order_call_record(
            self.biz_type, job.try_number, idempotency_key_sent=bool(header), now=dt.datetime.now(dt.timezone.utc)
        )
        earlier = self._memory().order_call if job.store is not None else None
        if earlier and earlier.get("idempotency_key_sent") and header and earlier.get("sent_at"):
            # the same key again: the gateway's 24-hour cache runs from the first request
            call = {**call, "sent_at": earlier["sent_at"], "resent_at": call["sent_at"]}
        self._remember(
            {
                order_state.THIRD_PARTY_ORDER: third_party_order,
                order_state.IDEMPOTENCY_KEY: job.idempotency_key if header else None,
                order_state.ORDER_CALL: call,
            },
            required=True,
        )
        try:
            data = self.hook.call(
                self.biz_type, order, version=self.version, group=self.group, idempotent=False, **header
            )
        except MultiMarketsError as exc:
            raise self._placement_failure(order, exc) from None
        if not isinstance(data, dict) or "orderId" not in data:
            raise MultiMarketsOrderError(
                f"{self.biz_type} succeeded but returned no orderId; order thirdPartyOrder={third_party_order} "
                "WAS placed. Look it up in the platform.",
                third_party_order=third_party_order,
            )
        self._remember({order_state.ORDER_ID: data["orderId"], order_state.ORDER: data})
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
        not_sent = exc.call_sent is False  # the shared call budget or ban breaker sent nothing
        never_sent = not_sent or (isinstance(exc, MultiMarketsTransportError) and not exc.maybe_sent)
        duplicate = isinstance(exc, MultiMarketsConcurrentDuplicateError)
        rejected = not duplicate and (isinstance(exc, MultiMarketsApiError) or (exc.http_status in (418, 429)))
        if never_sent or rejected:
            why = (
                "no call was sent: the apiKey's shared call budget held it back"
                if not_sent
                else "the request never left this worker"
                if never_sent
                else "the gateway rejected it"
            )
            return MultiMarketsOrderError(
                f"The order was NOT placed ({why}): {exc}", third_party_order=third_party_order, placed=False
            )
        if duplicate:
            lead = (
                f"This request was NOT placed: the gateway refused it as a concurrent duplicate of a request with the "
                f"same idempotency-key ({exc}), which an earlier try of this task sent and which may still be "
                "processed"
            )
        else:
            lead = f"The order MAY have been placed: the request may have reached the gateway ({exc})"
        if not self.has_lookup:
            return MultiMarketsOrderError(
                f"{lead}; the full-margin interface documents no lookup to check. Look for "
                f"thirdPartyOrder={third_party_order}. A retry of this task sends the same request with the same "
                "idempotency-key (the gateway answers a repeat from its cache) when the task state store holds it.",
                third_party_order=third_party_order,
            )
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
            f"{lead}; {lookup}. Look for thirdPartyOrder={third_party_order}. A retry of this task looks it up before "
            "placing.",
            third_party_order=third_party_order,
        )

    def _record(self, context: Context, value: dict[str, Any]) -> None:
        """Put the order's ids in XCom at once, so a crash after placing leaves them in Airflow."""
        try:
            context["ti"].xcom_push(key="order_ids", value=value)
        except Exception as exc:  # never turn a placed order into a failure for want of an XCom
            self.log.warning("Could not record the order ids in XCom (%s): %s", type(exc).__name__, value)

    # ---- execute ---------------------------------------------------------------------------------

    def _prepare(self, context: Context) -> _Run:
        from airflow_provider_multimarkets.trading.order_identity import derive_idempotency_key

        order = self.order
        if not isinstance(order, dict) or "tradeType" not in order:
            raise MultiMarketsConfigError(
                f"{self.task_id}: order must be a dict with the documented body fields (tradeType, symbolId, ...), got "
                f"{type(order).__name__}. With a templated order, set render_template_as_native_obj=True on the DAG."
            )
        third_party_order = self._client_order_id(context)
        durable = bool(getattr(self, "durable", False)) and DURABLE_EXECUTION
        store = context.get("task_state_store") if durable else None
        return _Run(
            order={**order, "thirdPartyOrder": third_party_order},
            third_party_order=third_party_order,
            idempotency_key=derive_idempotency_key(third_party_order),
            try_number=int(getattr(context["ti"], "try_number", 1) or 1),
            store=store,
        )

    @property
    def _job(self) -> _Run:
        if self._run is None:
            raise RuntimeError("the order operator's run state is read before execute() prepared it")
        return self._run

    def execute(self, context: Context) -> dict[str, Any]:
        self._run = self._prepare(context)
        if self._job.store is not None:
            result = self.execute_resumable(context)  # an earlier try's open order: poll_until_complete's None
            return dict(result) if result is not None else self._finish(context)
        if getattr(self, "durable", False) and DURABLE_EXECUTION:
            self.log.warning(
                "durable=True, but the task context holds no task_state_store: a retry finds an earlier try's order "
                "by its thirdPartyOrder lookup only."
            )
        elif getattr(self, "durable", False):
            self.log.info(
                "Durable execution (the order kept in the task state store) needs Airflow 3.3+; on Airflow %s a "
                "retry finds an earlier try's order by its thirdPartyOrder lookup only.",
                airflow_version(),
            )
        return self._execute_with_lookup(context)

    def _execute_with_lookup(self, context: Context) -> dict[str, Any]:
        """Without the task state store (``durable=False``, or Airflow < 3.3): the behaviour before 3.3."""
        job = self._job
        if job.try_number > 1:
            existing = self._find_earlier_order(job.order, job.third_party_order)
            if existing is not None:
                return self._adopt_and_follow(existing, "lookup", context)
        self._place_and_follow(context)
        return self._finish(context)

    # ---- ResumableJobMixin (Airflow 3.3+) ----------------------------------------------------------

    def submit_job(self, context: Context) -> Any:
        """No ``orderId`` in the store: the stored evidence and the lookup decide whether to place.

        The documented order flow subscribes before placing, so a tracked order's subscription is
        opened here and, without ``deferrable``, tracking goes on in it: ``poll_until_complete``
        then has the outcome.
        """
        from airflow_provider_multimarkets._compat import state_store_cleared_on_success
        from airflow_provider_multimarkets.trading import order_state
        from airflow_provider_multimarkets.trading.order_identity import record_order_id

        job = self._job
        memory = self._memory()
        decision, why = order_state.before_placing(
            memory,
            has_lookup=self.has_lookup,
            try_number=job.try_number,
            idempotency_key=bool(self._idempotency_header()),
            store_cleared_on_success=state_store_cleared_on_success(),
            now=dt.datetime.now(dt.timezone.utc),
        )
        self.log.info("Task state store: no orderId yet; %s: %s.", decision, why)
        if decision == order_state.LOOKUP:
            existing = self._find_earlier_order(job.order, job.third_party_order)
            if existing is not None:
                self._adopt_and_follow(existing, "lookup", context)
                return record_order_id(existing)
        elif decision == order_state.REFUSE:
            raise MultiMarketsOrderError(
                f"Nothing was placed: {why}. Order thirdPartyOrder={job.third_party_order} MAY exist: look for it in "
                "the platform. To place it anyway, delete this task instance's multimarkets.* keys in the task "
                "state store (UI or REST API) and clear the task.",
                third_party_order=job.third_party_order,
            )
        elif decision == order_state.RESEND:
            job.resumed = {"how": "idempotency_key", "try_number": job.try_number}
            self.log.warning(
                "Sending the order request again with idempotency-key %s: the gateway answers with the earlier "
                "try's order if it processed that request, or places it now if it never arrived.",
                job.idempotency_key,
            )
        return self._place_and_follow(context)

    def get_job_status(self, external_id: Any, context: Context) -> str:
        """The stored final status; else the lookup's (isolated margin); else ``unknown`` (tracked)."""
        from airflow_provider_multimarkets.trading.order_lookup import find_orders, record_status

        memory = self._memory()
        if memory.final_status is not None:
            self._job.final_from = "store"
            return str(memory.final_status)
        if self.has_lookup:
            try:
                found = find_orders(
                    self.hook,
                    trade_type=self._job.order["tradeType"],
                    order_id=external_id,
                    account_id=self._job.order.get("accountId"),
                )
            except MultiMarketsError as exc:
                self.log.warning("Order %s: the lookup failed (%s); tracking it.", external_id, exc)
                return "unknown"
            if found:
                self._job.record = found[0]
                self._job.final_from = "lookup"
                status = record_status(found[0])
                return "unknown" if status is None else str(status)
        return "unknown"

    def is_job_succeeded(self, status: str) -> bool:
        """Any final status: the order is done (a rejected order is this task instance's order too)."""
        from airflow_provider_multimarkets.trading.order_status import is_final_order_status

        return is_final_order_status(status)

    def is_job_active(self, status: str) -> bool:
        return not self.is_job_succeeded(status)

    def poll_until_complete(self, external_id: Any, context: Context) -> None:
        """Follow the order to its final status (in the triggerer when deferrable); the XCom is kept in the run."""
        from airflow_provider_multimarkets.trading import order_state

        job = self._job
        # the mixin stored the id with the deployment's default retention: it never expires, as the other keys
        self._remember({order_state.ORDER_ID: external_id})
        if job.outcome is None and job.pending is None:  # an earlier try's order, still open: tracked, not placed
            memory = self._memory()
            job.resumed = {"how": "store", "try_number": job.try_number}
            self.log.warning(
                "Task state store: order %s (thirdPartyOrder=%s) was placed by an earlier try and is not final: "
                "tracking it, not placing another.",
                external_id,
                job.third_party_order,
            )
            answer = memory.order or {"orderId": external_id}
            self._follow(answer, context, record=job.record)
        self._finish(context)

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        """The XCom: this try's result, or the final order an earlier try left in the store."""
        job = self._job
        if job.result is not None:
            return job.result
        from airflow_provider_multimarkets.trading import order_state
        from airflow_provider_multimarkets.trading.reports import fill_from_record

        memory = self._memory()
        answer = memory.order or {"orderId": external_id}
        how = job.final_from or "store"
        if how == "store":
            fill = memory.fill or fill_from_record(answer, {"status": memory.final_status})
        else:
            fill = fill_from_record(answer, job.record)
        self.log.warning(
            "Order %s (thirdPartyOrder=%s) is final (status %s, from the %s): returning it; nothing is placed.",
            external_id,
            job.third_party_order,
            memory.final_status if how == "store" else (job.record or {}).get("status"),
            "task state store" if how == "store" else "order lookup",
        )
        if how == "lookup":
            self._remember(
                {order_state.FINAL_STATUS: (job.record or {}).get("status"), order_state.FILL: fill},
            )
        result: dict[str, Any] = {
            "order": answer,
            "third_party_order": job.third_party_order,
            "fill": fill,
            "adopted": True,
            "adopted_by": "store",
            "resumed": {"how": "store", "try_number": job.try_number},
        }
        if job.record is not None:
            result["record"] = job.record
        return result

    # ---- following an order ---------------------------------------------------------------------------

    def _adopt_and_follow(self, record: dict[str, Any], how: str, context: Context) -> dict[str, Any]:
        """An earlier try placed the order (found by the lookup): report it and follow it to a final status."""
        from airflow_provider_multimarkets.trading import order_state
        from airflow_provider_multimarkets.trading.order_identity import record_order_id
        from airflow_provider_multimarkets.trading.order_lookup import is_final

        job = self._job
        order_id = record_order_id(record)
        job.resumed = {"how": how, "try_number": job.try_number}
        job.record = record
        answer = {"orderId": order_id, **{k: record.get(k) for k in ("positionId", "executePrice", "symbolName")}}
        self._remember({order_state.ORDER_ID: order_id, order_state.ORDER: answer})
        self._record(context, {"orderId": order_id, "thirdPartyOrder": job.third_party_order, "source": "adopted"})
        if is_final(record) or not self.track:
            job.outcome = _event(answer, job, record=record, source="lookup", final=is_final(record))
        else:
            self._follow(answer, context, record=record)
        return self._finish(context)

    def _follow(self, answer: dict[str, Any], context: Context, *, record: dict[str, Any] | None = None) -> None:
        """Track an order that exists: in the triggerer (deferrable) or here, with a new msg token."""
        from airflow_provider_multimarkets.trading.order_lookup import is_final

        job = self._job
        if (record is not None and is_final(record)) or not self.track:
            job.outcome = _event(
                answer, job, record=record, source="lookup" if record else None, final=is_final(record)
            )
            return
        tracking = self._tracking(self.hook.get_msg_token(), answer, context)
        if self.deferrable:
            self._defer(tracking)
        import asyncio

        from airflow_provider_multimarkets.triggers.order_tracking import run_tracking

        job.outcome = asyncio.run(run_tracking(tracking, self.log))

    def _tracking(self, token: str, answer: dict[str, Any], context: Context) -> OrderTracking:
        from airflow_provider_multimarkets.triggers.order_tracking import OrderTracking

        job = self._job
        return OrderTracking(
            token=token,
            order_id=str(answer["orderId"]),
            third_party_order=job.third_party_order,
            multimarkets_conn_id=self.multimarkets_conn_id,
            trade_types=self.trade_types or str(job.order["tradeType"]),
            trade_type=int(job.order["tradeType"]),
            account_id=job.order.get("accountId"),
            lookup=self.has_lookup,
            deadline=time.time() + self.window_seconds,
            lookup_timeout=self.lookup_timeout,
            poll_interval=self.poll_interval,
            output_path=self.output_path or None,
            spool_path=None if self.output_path else _spool_path(context),
            ping_interval=self.ping_interval,
            order=answer,
            resumed=job.resumed,
            hook_params=dict(self.hook_params or {}) or None,
        )

    def _defer(self, tracking: OrderTracking) -> None:
        from airflow_provider_multimarkets.triggers.order_tracking import MultiMarketsOrderTrackingTrigger

        self.log.info(
            "Order %s: tracking handed to the triggerer (the worker slot is free until the final status).",
            tracking.order_id,
        )
        self.defer(
            trigger=MultiMarketsOrderTrackingTrigger(**tracking.as_json()),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.window_seconds + self.lookup_timeout + 300),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back from the triggerer: the same XCom as a tracking done in the worker."""
        self._run = self._prepare(context)
        if not isinstance(event, dict) or "order_id" not in event:
            raise MultiMarketsMsgError(
                f"{self.task_id}: the order tracking trigger ended without an event ({event!r}), e.g. the triggerer "
                f"stopped it. The order WAS placed (thirdPartyOrder={self._job.third_party_order}): a retry of this "
                "task adopts it."
            )
        self._job.outcome = event
        self._job.resumed = event.get("resumed")
        return self._finish(context)

    # ---- placing and tracking in one subscription ----------------------------------------------------

    def _place_and_follow(self, context: Context) -> Any:
        """Place the order (after subscribing, when tracked); leaves the outcome in the run; the order id."""
        job = self._job
        self.log.warning("Placing a MARKET ORDER (%s): %s", self.biz_type, job.order)
        if not self.track:
            answer = self._place(job.order, context)
            job.outcome = _event(answer, job, source=None, final=False)
            return answer["orderId"]
        return self._place_tracked(context)

    def _place_tracked(self, context: Context) -> Any:
        import asyncio

        from airflow_provider_multimarkets.messaging.client import MultiMarketsMsgClient, SubscriptionSpec

        job = self._job
        order = job.order
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

        spool = None if self.output_path else _spool_path(context)
        spec = SubscriptionSpec(
            token=token,
            multimarkets_conn_id=self.multimarkets_conn_id,
            trade_types=self.trade_types or str(order["tradeType"]),
            deadline=time.time() + self.window_seconds,
            output_path=self.output_path or None,
            spool_path=spool,
            inline_limit=0,
            ping_interval=self.ping_interval,
        )
        client = MultiMarketsMsgClient(
            spec,
            on_ready=place_after_subscribed,
            login_grace=self.login_timeout,
            ready_without_login_answer=self.untracked_if_no_login,
            handover=self.deferrable,
            log=self.log,
        )

        async def subscribe() -> dict[str, Any]:
            try:
                return await client.subscribe()
            finally:
                await client.close()

        streamed = asyncio.run(subscribe())  # returns once the placing thread is done
        if "error" in placed:
            raise placed["error"]
        if "order" not in placed:
            raise MultiMarketsOrderError(
                f"The order was NOT placed (thirdPartyOrder={order['thirdPartyOrder']}): the subscription that "
                f"tracks it failed first: {streamed.get('message')}",
                third_party_order=order["thirdPartyOrder"],
                placed=False,
            )
        answer = placed["order"]
        summary = dict(streamed.get("summary") or {})
        summary.pop("messages_inline", None)
        until = summary.get("until") or {}
        if until.get("met"):
            job.outcome = _event(answer, job, source="push", final=True, final_message=until.get("final_message"))
            job.outcome["summary"] = summary
            return answer["orderId"]
        tracking = self._tracking(token, answer, context)
        tracking.deadline = spec.deadline or tracking.deadline
        if self.deferrable:  # handed over: the triggerer resumes this stream (same token, same push log)
            job.pending = tracking
            return answer["orderId"]
        # the stream ended without the final push (window over, or it failed): the lookup decides
        event = _event(answer, job, source=None, final=False)
        event["summary"] = summary
        if streamed.get("status") != "success":
            event["stream_error"] = streamed.get("message")
        if tracking.lookup:
            from airflow_provider_multimarkets.triggers.order_tracking import poll_lookup

            asyncio.run(poll_lookup(tracking, event, self.log))
        elif event["stream_error"]:
            event.update(status="error", message=event["stream_error"])
        job.outcome = event
        return answer["orderId"]

    def _finish(self, context: Context) -> dict[str, Any]:
        """The XCom from the run's outcome (deferring first when a handed-over stream waits); stores the final status."""
        from airflow_provider_multimarkets.trading import order_state
        from airflow_provider_multimarkets.trading.reports import fill_from_record, fill_report

        job = self._job
        if job.result is not None:
            return job.result
        if job.pending is not None:
            pending, job.pending = job.pending, None
            self._defer(pending)
        event = job.outcome or {}
        answer = dict(event.get("order") or {})
        order_id = answer.get("orderId", event.get("order_id"))
        if event.get("status") == "error":
            raise MultiMarketsMsgError(
                f"Order {order_id} (thirdPartyOrder={job.third_party_order}) WAS placed, but tracking it failed: "
                f"{event.get('message')}. A retry of this task adopts it."
            )
        record = event.get("record")
        if event.get("source") == "push":
            fill = fill_report(answer, event.get("final_message"))
        elif record is not None:
            fill = fill_from_record(answer, record)
        else:
            fill = fill_report(answer, None)
        if event.get("final"):
            status = _final_status(event)
            self._remember({order_state.FINAL_STATUS: status, order_state.FILL: fill})
            self.log.info("Order %s reached status %s at %s.", order_id, fill["final_status"], fill["deal_price"])
        elif self.track:
            self.log.warning(
                "Order %s: no final status within %.0f s (and %.0f s of lookups).",
                order_id,
                self.window_seconds,
                self.lookup_timeout if self.has_lookup else 0,
            )
        result: dict[str, Any] = {"order": answer, "third_party_order": job.third_party_order, "fill": fill}
        if event.get("summary") is not None:
            result["subscription"] = event["summary"]
        resumed = event.get("resumed") or job.resumed
        if resumed:
            how = resumed.get("how")
            result["adopted"] = None if how == "idempotency_key" else True
            result["adopted_by"] = how
            result["resumed"] = resumed
        if record is not None:
            result["record"] = record
        job.result = result
        return result


class _Run:
    """What one try of the operator knows: the order, its ids, the store, and how it ended."""

    def __init__(
        self, *, order: dict[str, Any], third_party_order: str, idempotency_key: str, try_number: int, store: Any
    ) -> None:
        self.order = order
        self.third_party_order = third_party_order
        self.idempotency_key = idempotency_key
        self.try_number = try_number
        self.store = store
        #: how this try came to an earlier try's order (``{"how", "try_number"}``), if it did
        self.resumed: dict[str, Any] | None = None
        #: the order's record from the lookup, when one was made
        self.record: dict[str, Any] | None = None
        #: where a final status found before tracking came from (``store`` or ``lookup``)
        self.final_from: str | None = None
        #: the tracking event (the trigger's shape), once the order is followed
        self.outcome: dict[str, Any] | None = None
        #: a handed-over stream that waits to be deferred
        self.pending: OrderTracking | None = None
        self.result: dict[str, Any] | None = None


def _event(
    answer: dict[str, Any],
    job: _Run,
    *,
    source: str | None,
    final: bool,
    record: dict[str, Any] | None = None,
    final_message: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An outcome in the shape of the tracking trigger's event."""
    return {
        "status": "success",
        "order_id": str(answer.get("orderId")),
        "third_party_order": job.third_party_order,
        "final": final,
        "source": source,
        "final_message": final_message,
        "record": record,
        "summary": None,
        "stream_error": None,
        "lookup_error": None,
        "order": answer,
        "resumed": job.resumed,
    }


def _final_status(event: dict[str, Any]) -> int | None:
    """The final status of an outcome: the push's ``orderStatus`` (6 for a failed ``bizType``), or the record's."""
    from airflow_provider_multimarkets.messaging.frames import param_map
    from airflow_provider_multimarkets.trading.order_lookup import record_status
    from airflow_provider_multimarkets.trading.order_status import FAILED_ORDER_BIZ_TYPES

    push = event.get("final_message")
    if isinstance(push, dict):
        status = str(param_map(push).get("orderStatus", ""))
        if status.isdigit():
            return int(status)
        content = push.get("content") if isinstance(push.get("content"), dict) else {}
        if str((content or {}).get("bizType", "")) in FAILED_ORDER_BIZ_TYPES:
            return 6
    return record_status(event.get("record"))


def _spool_path(context: Context) -> str | None:
    from airflow_provider_multimarkets.storage.paths import spool_path_for

    ti = context.get("ti")
    if ti is None:
        return None
    return spool_path_for(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", None))


def _deprecated(task_id: Any, ack_grace: float | None, untracked_if_no_ack: bool | None) -> None:
    category: type[Warning] = DeprecationWarning
    try:
        from airflow.exceptions import AirflowProviderDeprecationWarning

        category = AirflowProviderDeprecationWarning
    except ImportError:  # pragma: no cover
        pass
    names = [n for n, v in (("ack_grace", ack_grace), ("untracked_if_no_ack", untracked_if_no_ack)) if v is not None]
    warnings.warn(
        f"{task_id}: {' and '.join(names)} of MultiMarketsMarketOrderOperator are deprecated: no gateway documents an "
        "acknowledgement of subscribe_asset, so none is awaited; the order is placed once the login is answered "
        "(subscribe_success). Use login_timeout and untracked_if_no_login.",
        category,
        stacklevel=3,
    )
