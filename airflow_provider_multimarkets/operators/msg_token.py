"""``GetMsgTokenOperator``: fetch the message-push token and hand it to downstream tasks."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow_provider_multimarkets._compat import BaseOperator, Context
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook, check_hook_params


class GetMsgTokenOperator(BaseOperator):
    """Call ``getMsgPushToken`` and return the token (the ``return_value`` XCom).

    Feed ``op.output`` to a message subscription or any task that opens the message WebSocket. The
    token is registered with Airflow's secret masker, so it never shows in task logs. As any XCom
    it is stored in the metadata DB and shown in clear in the UI's XCom tab: to keep it out of
    XCom, let ``MultiMarketsMsgSubscribeOperator`` fetch its own token (leave ``token`` unset), or
    set ``push_token=False`` here (the task then only checks that a token can be fetched).

    :param push_token: return the token (the default); ``False`` returns only its length.
    :param hook_params: the hook's own arguments for this task (templated), e.g.
        ``{"timeout": 60, "max_retries": 5, "retry_backoff": 2, "rate_limit_per_minute": 50}``; they
        override the connection's extras of the same names. Unknown keys are a config error.
    :param multimarkets_conn_id: the ``multimarkets`` connection to use.
    """

    template_fields: Sequence[str] = ("hook_params", "multimarkets_conn_id")
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        push_token: bool = True,
        hook_params: dict[str, Any] | None = None,
        multimarkets_conn_id: str = MultiMarketsHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hook_params = check_hook_params(hook_params, self.task_id)
        self.push_token = push_token
        self.multimarkets_conn_id = multimarkets_conn_id

    @cached_property
    def hook(self) -> MultiMarketsHook:
        return MultiMarketsHook.for_task(self.multimarkets_conn_id, self.hook_params, self.task_id)

    def execute(self, context: Context) -> str | dict[str, int]:
        with self.hook as hook:
            token = hook.get_msg_token()
        self.log.info("Fetched a message-push token (%d characters, masked in logs).", len(token))
        return token if self.push_token else {"token_length": len(token)}
