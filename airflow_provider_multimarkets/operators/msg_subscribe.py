"""``MultiMarketsMsgSubscribeOperator``: receive account/position/trade pushes for a bounded time.

Parse-light: the WebSocket library and asyncio machinery are imported only when the task runs.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_multimarkets._compat import BaseOperator, Context, default_deferrable, mask_secret
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook, check_hook_params

if TYPE_CHECKING:
    from airflow_provider_multimarkets.triggers.msg_subscribe import MultiMarketsMsgSubscribeTrigger


class MultiMarketsMsgSubscribeOperator(BaseOperator):
    """Subscribe to the message WebSocket and return a summary of what arrived.

    Stops on the first of ``max_messages``, ``window_seconds`` and ``until_order_id`` reaching a
    final order status. While it waits, a deferrable task frees its worker slot (the triggerer
    listens). The summary (XCom ``return_value``) holds counts by ``msgCode``, ``content.bizType``
    and ``orderStatus``, first/last timestamps, reconnects and the JSON Lines file, never an
    unbounded list.

    :param token: the msg token (templated), typically ``get_token.output``. Empty: fetch one.
    :param trade_types: ``tradeTypes`` to subscribe (templated), e.g. ``"2"`` or ``"1,2"``.
    :param window_seconds: listen for at most this long (always bounded; templated, e.g.
        ``"{{ params.window_seconds }}"``).
    :param max_messages: stop after this many pushes.
    :param until_order_id: stop when this order's trade push reaches a final status (templated).
    :param output_path: the push log, a JSON Lines file receiving every push (templated). Required
        when more than ``max_inline_messages`` pushes may arrive. A push counts only once it is
        written there, and a subscription started again (a new triggerer, a task retry) restores
        its counts from it and goes on, so make it unique per task instance (template it with
        ``{{ run_id }}``). With ``deferrable=True`` the triggerer writes it: use a path that the
        triggerer and the workers share.
    :param max_inline_messages: without ``output_path``, the pushes (at most this many) are put
        in the summary under ``messages_inline``; they are also kept in a local spool file
        (``$MULTIMARKETS_PUSH_DIR``, default ``$AIRFLOW_HOME/multimarkets-pushes``), so a triggerer
        restarted on the same host loses none.
    :param max_frame_bytes: largest frame accepted (a larger one fails the task, naming this).
    :param ping_interval: seconds between pings (the docs say 15).
    :param max_reconnects: reconnects in a row without a push before the task fails.
    :param deferrable: defer to the triggerer, freeing the worker slot while listening. The default
        is ``[operators] default_deferrable``, which Airflow ships as ``False``: pass
        ``deferrable=True`` to free the slot whatever the deployment's configuration.
    :param hook_params: the hook's own arguments for this task's token call (with ``token`` unset) (templated), e.g.
        ``{"timeout": 60, "max_retries": 5, "retry_backoff": 2, "rate_limit_per_minute": 50}``; they
        override the connection's extras of the same names. Unknown keys are a config error.
    :param multimarkets_conn_id: the ``multimarkets`` connection.
    """

    template_fields: Sequence[str] = (
        "token",
        "trade_types",
        "window_seconds",
        "until_order_id",
        "output_path",
        "hook_params",
        "multimarkets_conn_id",
    )
    ui_color = "#fdf3e8"

    def __init__(
        self,
        *,
        token: str | None = None,
        trade_types: str = "2",
        window_seconds: float | str = 300.0,
        max_messages: int | None = None,
        until_order_id: str | int | None = None,
        output_path: str | None = None,
        max_inline_messages: int = 1000,
        ping_interval: float = 15.0,
        idle_timeout: float | None = None,
        max_reconnects: int = 5,
        reconnect_backoff: float = 1.0,
        max_frame_bytes: int = 4 * 1024 * 1024,
        deferrable: bool | None = None,
        hook_params: dict[str, Any] | None = None,
        multimarkets_conn_id: str = MultiMarketsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hook_params = check_hook_params(hook_params, self.task_id)
        templated = isinstance(window_seconds, str) and "{{" in window_seconds
        self.window_seconds: float | str = window_seconds if templated else _window(window_seconds, kwargs)
        if max_messages is not None and max_messages < 1:
            raise MultiMarketsConfigError(f"{kwargs.get('task_id')}: max_messages must be at least 1.")
        self.token = token
        self.trade_types = trade_types
        self.max_messages = max_messages
        self.until_order_id = until_order_id
        self.output_path = output_path
        self.max_inline_messages = max_inline_messages
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self.max_reconnects = max_reconnects
        self.reconnect_backoff = reconnect_backoff
        self.max_frame_bytes = max_frame_bytes
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.multimarkets_conn_id = multimarkets_conn_id

    @cached_property
    def hook(self) -> MultiMarketsHook:
        return MultiMarketsHook.for_task(self.multimarkets_conn_id, self.hook_params, self.task_id)

    def _check_output(self) -> None:
        may_exceed = self.max_messages is None or self.max_messages > self.max_inline_messages
        if not self.output_path and may_exceed:
            raise MultiMarketsConfigError(
                f"{self.task_id}: set output_path (a JSON Lines file) - more than max_inline_messages="
                f"{self.max_inline_messages} pushes may arrive (max_messages={self.max_messages}), and XCom "
                "only carries the summary."
            )

    def build_trigger(self, token: str, context: Context | None = None) -> MultiMarketsMsgSubscribeTrigger:
        from airflow_provider_multimarkets.storage.paths import spool_path_for
        from airflow_provider_multimarkets.triggers.msg_subscribe import MultiMarketsMsgSubscribeTrigger

        spool_path = None
        ti = (context or {}).get("ti")
        if not self.output_path and ti is not None:
            spool_path = spool_path_for(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", None))

        return MultiMarketsMsgSubscribeTrigger(
            token=token,
            multimarkets_conn_id=self.multimarkets_conn_id,
            trade_types=str(self.trade_types),
            deadline=time.time() + _window(self.window_seconds, {"task_id": self.task_id}),
            max_messages=self.max_messages,
            until_order_id=None if self.until_order_id in (None, "") else str(self.until_order_id),
            output_path=self.output_path or None,
            spool_path=spool_path,
            inline_limit=self.max_inline_messages,
            ping_interval=self.ping_interval,
            idle_timeout=self.idle_timeout,
            max_reconnects=self.max_reconnects,
            reconnect_backoff=self.reconnect_backoff,
            max_frame_bytes=self.max_frame_bytes,
        )

    def execute(self, context: Context) -> Any:
        self.window_seconds = _window(self.window_seconds, {"task_id": self.task_id})
        self._check_output()
        token = (self.token or "").strip()
        if token:
            mask_secret(token)
        else:
            self.log.info("No token given: fetching a msg token with getMsgPushToken.")
            with self.hook as hook:
                token = hook.get_msg_token()
        trigger = self.build_trigger(token, context)
        if self.deferrable:
            self.defer(
                trigger=trigger,
                method_name="execute_complete",
                timeout=dt.timedelta(seconds=float(self.window_seconds) + 120),
            )
        import asyncio

        event = asyncio.run(_first_event(trigger))
        return self.execute_complete(context, event)

    def execute_complete(self, context: Context, event: dict[str, Any] | None) -> dict[str, Any]:
        from airflow_provider_multimarkets.exceptions import MultiMarketsMsgAuthError, MultiMarketsMsgError
        from airflow_provider_multimarkets.messaging.subscription import format_summary

        if not isinstance(event, dict):
            raise MultiMarketsMsgError(
                f"{self.task_id}: the subscription trigger ended without an event ({event!r}), e.g. the triggerer "
                "stopped it. Nothing written to output_path is lost: a retry of this task resumes from it."
            )
        summary = event.get("summary") or {}
        if event.get("status") != "success":
            error = (
                MultiMarketsMsgAuthError
                if event.get("error_type") == "MultiMarketsMsgAuthError"
                else MultiMarketsMsgError
            )
            raise error(
                f"{event.get('message', 'subscription failed')} (received {summary.get('messages', 0)} pushes first)"
            )
        for line in format_summary(summary):
            self.log.info("%s", line)
        if self.until_order_id not in (None, "") and not (summary.get("until") or {}).get("met"):
            self.log.warning(
                "Order %s did not reach a final status within %.0f s.", self.until_order_id, self.window_seconds
            )
        return summary


def _window(value: Any, kwargs: dict[str, Any]) -> float:
    """``window_seconds`` as a number > 0 (a rendered template is text)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise MultiMarketsConfigError(
            f"{kwargs.get('task_id')}: window_seconds must be a number of seconds, got {value!r}."
        ) from None
    if not seconds > 0 or seconds == float("inf"):
        raise MultiMarketsConfigError(
            f"{kwargs.get('task_id')}: window_seconds must be > 0: a subscription is always bounded in time."
        )
    return seconds


async def _first_event(trigger: MultiMarketsMsgSubscribeTrigger) -> dict[str, Any]:
    try:
        async for event in trigger.run():
            return dict(event.payload)
    finally:
        await trigger.cleanup()
    raise RuntimeError("the subscription trigger ended without an event")  # pragma: no cover
