"""``MultiMarketsOperator``: one signed Open API call, its ``data`` returned to XCom."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow_provider_multimarkets._compat import BaseOperator, Context
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook, check_hook_params


class MultiMarketsOperator(BaseOperator):
    """Sign and send one Open API call (``POST {host}/global/{biz_type}``) and return its ``data``.

    :param biz_type: the interface's bizType, e.g.
        ``customer.app.CustomerWebApiService.findCustomerInfo``. Templated.
    :param payload: the JSON body (a dict, templated; ``render_template_as_native_obj`` keeps
        numbers as numbers). ``None`` sends ``{}``.
    :param version: the ``version`` header (e.g. ``0.0.1``); default: the one the vendor's OpenAPI
        documents for ``biz_type`` (the provider's endpoint catalogue).
    :param group: the ``group`` header (e.g. ``tradeApi``); documented default as for ``version``.
    :param idempotent: set ``False`` for calls that must never run twice, such as order
        placement: only failures where the request provably was not sent are then retried.
    :param check_payload: check the payload against the documented body (required fields, JSON
        types) before signing, and fail naming the field; ``False`` sends it as it is.
    :param hook_params: the hook's own arguments for this task (templated), e.g.
        ``{"timeout": 60, "max_retries": 5, "retry_backoff": 2, "rate_limit_per_minute": 50}``; they
        override the connection's extras of the same names. Unknown keys are a config error.
    :param multimarkets_conn_id: the ``multimarkets`` connection to use.
    """

    template_fields: Sequence[str] = ("biz_type", "payload", "version", "group", "hook_params", "multimarkets_conn_id")
    template_fields_renderers = {"payload": "json"}
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        biz_type: str,
        payload: dict[str, Any] | str | None = None,
        version: str | None = None,
        group: str | None = None,
        idempotent: bool = True,
        check_payload: bool = True,
        hook_params: dict[str, Any] | None = None,
        multimarkets_conn_id: str = MultiMarketsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hook_params = check_hook_params(hook_params, self.task_id)
        self.check_payload = check_payload
        self.biz_type = biz_type
        self.payload = payload
        self.version = version
        self.group = group
        self.idempotent = idempotent
        self.multimarkets_conn_id = multimarkets_conn_id

    @cached_property
    def hook(self) -> MultiMarketsHook:
        return MultiMarketsHook.for_task(self.multimarkets_conn_id, self.hook_params, self.task_id)

    def _payload(self) -> dict[str, Any] | None:
        payload = self.payload
        if isinstance(payload, str):
            import json

            try:
                payload = json.loads(payload) if payload.strip() else None
            except ValueError:
                raise MultiMarketsConfigError(
                    f"{self.task_id}: payload rendered to a string that is not JSON. Pass a dict, or set "
                    "render_template_as_native_obj=True on the DAG."
                ) from None
        if payload is not None and not isinstance(payload, dict):
            raise MultiMarketsConfigError(
                f"{self.task_id}: payload must be a dict (the JSON body), got {type(payload).__name__}."
            )
        return payload

    def execute(self, context: Context) -> Any:
        with self.hook as hook:
            data = hook.call(
                self.biz_type,
                self._payload(),
                version=self.version,
                group=self.group,
                idempotent=self.idempotent,
                check=self.check_payload,
            )
        self.log.info("MultiMarkets %s succeeded.", self.biz_type)
        return data
