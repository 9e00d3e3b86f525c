"""Issue 23: every bad input a clear error, nothing lost (files, queries and reports, time and truth).

Each test reproduces the defect first, on real files, real processes and real sockets where the
defect lives there; RELIABILITY.md lists the cases, the counts tried and the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import ORDER_BIZ_TYPE, ORDER_BODY, set_connection

from airflow_provider_multimarkets.exceptions import (
    MultiMarketsConfigError,
    MultiMarketsError,
    MultiMarketsHTTPError,
    PushLogError,
)
from airflow_provider_multimarkets.hooks.multimarkets import HOOK_PARAMS, MultiMarketsHook
from airflow_provider_multimarkets.operators.msg_subscribe import MultiMarketsMsgSubscribeOperator
from airflow_provider_multimarkets.operators.msg_token import GetMsgTokenOperator
from airflow_provider_multimarkets.operators.multimarkets import MultiMarketsOperator
from airflow_provider_multimarkets.operators.order import MultiMarketsMarketOrderOperator
from airflow_provider_multimarkets.operators.query_to_file import MultiMarketsQueryToFileOperator

TOKEN = "getMsgPushToken"

# ---- time and truth: the push log's error is a MultiMarketsError, hook_params ----------------------


def test_push_log_error_is_a_multimarkets_error_and_reaches_the_task_as_it_is(tmp_path: Path) -> None:
    from airflow_provider_multimarkets.operators.report import MultiMarketsPushReportOperator

    assert issubclass(PushLogError, MultiMarketsError)
    op = MultiMarketsPushReportOperator(
        task_id="report", input_path="s3-nowhere-scheme-x://bucket/p/", output_dir=str(tmp_path)
    )
    with pytest.raises(PushLogError, match="No filesystem for the push log URL") as info:
        op.execute({})
    assert info.value.cause == "no filesystem"


OPERATORS: list[tuple[type, dict[str, Any]]] = [
    (MultiMarketsOperator, {"biz_type": TOKEN}),
    (GetMsgTokenOperator, {}),
    (MultiMarketsMsgSubscribeOperator, {"output_path": "/tmp/x.jsonl"}),
    (MultiMarketsMarketOrderOperator, {"order": ORDER_BODY}),
    (
        MultiMarketsQueryToFileOperator,
        {"biz_type": "tradeapi.app.OrderApiService.queryOrderPage", "output_path": "/tmp"},
    ),
]


@pytest.mark.parametrize(("cls", "kwargs"), OPERATORS, ids=[c.__name__ for c, _ in OPERATORS])
def test_every_operator_passes_hook_params_to_its_hook(cls: type, kwargs: dict[str, Any]) -> None:
    params = {"timeout": 7, "max_retries": 0, "retry_backoff": 0.5, "rate_limit_per_minute": 50}
    op = cls(task_id="t", hook_params=params, **kwargs)
    assert "hook_params" in op.template_fields
    if isinstance(op, MultiMarketsQueryToFileOperator):
        hook = MultiMarketsHook.for_task(op.multimarkets_conn_id, op.hook_params, op.task_id)
    else:
        hook = op.hook
    assert {k: hook._overrides[k] for k in HOOK_PARAMS} == params
    with pytest.raises(MultiMarketsConfigError, match=r"t: hook_params has unknown key\(s\) retries: the hook takes"):
        cls(task_id="t", hook_params={"retries": 3}, **kwargs)
    with pytest.raises(MultiMarketsConfigError, match="t: hook_params must be a dict"):
        cls(task_id="t", hook_params=[("timeout", 3)], **kwargs)


def test_hook_params_values_are_checked_with_an_error_naming_them() -> None:
    op = MultiMarketsOperator(task_id="call", biz_type=TOKEN, hook_params={"max_retries": "many"})
    with pytest.raises(MultiMarketsConfigError, match=r"call: hook_params\['max_retries'\] must be a whole number"):
        _ = op.hook
    op = MultiMarketsOperator(task_id="call", biz_type=TOKEN, hook_params={"timeout": -1})
    with pytest.raises(MultiMarketsConfigError, match=r"call: hook_params\['timeout'\] must be seconds > 0"):
        _ = op.hook


def test_hook_params_change_what_the_task_does(sandbox: Any, monkeypatch: pytest.MonkeyPatch, sleeps: Any) -> None:
    """The connection says 3 retries; the task's hook_params say none: one request, not four."""
    set_connection(monkeypatch, sandbox.connection(max_retries=3, retry_backoff=0.01))
    sandbox.add_fault(TOKEN, status=503, times=9)
    op = MultiMarketsOperator(task_id="call", biz_type=TOKEN, hook_params={"max_retries": "0"})
    with pytest.raises(MultiMarketsHTTPError):
        op.execute({})
    assert sandbox.state.received[TOKEN] == 1
    assert ORDER_BIZ_TYPE  # the order operator takes them too (above)
