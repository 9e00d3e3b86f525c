"""DAGs used by the end-to-end tests (run with ``dag.test()`` against the sandbox)."""

from __future__ import annotations

import datetime as dt
from typing import Any

try:
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.x
    from airflow.decorators import task  # type: ignore[no-redef]
    from airflow.models.dag import DAG  # type: ignore[assignment]

from airflow_provider_multimarkets.operators.msg_token import GetMsgTokenOperator
from airflow_provider_multimarkets.operators.multimarkets import MultiMarketsOperator

START = dt.datetime(2026, 1, 1)

with DAG("mm_e2e_token", schedule=None, start_date=START, catchup=False) as token_dag:
    get_token = GetMsgTokenOperator(task_id="get_token")
    customer = MultiMarketsOperator(
        task_id="customer",
        biz_type="customer.app.CustomerWebApiService.findCustomerInfo",
        version="0.0.1",
    )

    @task
    def use(token: str, info: dict[str, Any]) -> dict[str, Any]:
        from airflow_provider_multimarkets.trading.reports import account_list

        # a downstream consumer never echoes the token: only its shape
        return {
            "token_suffix": token[-4:],
            "token_length": len(token),
            "accounts": [a["accountId"] for a in account_list(info)],
        }

    use(get_token.output, customer.output)


with DAG("mm_e2e_fail", schedule=None, start_date=START, catchup=False) as fail_dag:
    # check_payload=False: the sandbox, not the client's check, refuses the body (CFDWBWE000005)
    MultiMarketsOperator(
        task_id="symbols",
        biz_type="config.app.AppSymbolDubboService.getSymbolBaseList",
        payload={},
        check_payload=False,
    )


with DAG(
    "mm_e2e_template",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"group": 12},
    render_template_as_native_obj=True,
) as template_dag:
    MultiMarketsOperator(
        task_id="symbols",
        biz_type="config.app.AppSymbolDubboService.getSymbolBaseList",
        payload={"customerGroupId": "{{ params.group }}"},
    )


from airflow_provider_multimarkets.operators.msg_subscribe import MultiMarketsMsgSubscribeOperator  # noqa: E402

for _mode, _deferrable in (("deferrable", True), ("sync", False)):
    with DAG(f"mm_e2e_subscribe_{_mode}", schedule=None, start_date=START, catchup=False) as _dag:
        _token = GetMsgTokenOperator(task_id="get_token")
        MultiMarketsMsgSubscribeOperator(
            task_id="subscribe",
            token=_token.output,
            trade_types="2",
            max_messages=5,
            window_seconds=60,
            ping_interval=1,
            deferrable=_deferrable,
        )
    globals()[f"subscribe_{_mode}_dag"] = _dag
