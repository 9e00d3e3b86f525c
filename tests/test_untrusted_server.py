"""Issue 23's query defects: ``hook.paginate`` does not trust the server, and ``epoch_ms`` refuses what is no time.

The paging cases run against the sandbox over loopback with its ``paging_fault`` knob: a server that
ignores ``current`` (page 1 every time), and one whose count says one page (``totalPage`` 1) or none
(0) while its pages are full. Before, the first returned "300 records, 100 distinct" and the others
a silently truncated set.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from conftest import ORDER_BIZ_TYPE, ORDER_BODY, set_connection

from airflow_provider_multimarkets.api.endpoints import epoch_ms
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError, MultiMarketsPagingError
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.sandbox import SandboxConfig

ORDERS = "tradeapi.app.OrderApiService.queryOrderPage"  # counts records (total)
TRADES = "tradeapi.app.OrderApiService.queryTradeRecordPage"  # counts pages (totalPage)
POSITIONS = "tradeapi.app.PositionApiService.queryPositionPage"  # a bare array, no count
QUERIES = {
    ORDERS: {"tradeType": 2},
    TRADES: {"tradeType": 2, "sortFieldName": "executeTime", "sortType": "asc"},
    POSITIONS: {"tradeType": 2},
}


@pytest.fixture
def lying_sandbox(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(fault: str, orders: int) -> Any:
        sb = sandbox_factory(SandboxConfig(paging_fault=fault))
        set_connection(monkeypatch, sb.connection(retry_backoff=0.01))
        hook = MultiMarketsHook()
        for _ in range(orders):
            hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False)
        return sb

    return make


@pytest.mark.parametrize("biz_type", sorted(QUERIES))
def test_a_server_that_ignores_current_is_a_paging_error(lying_sandbox: Any, biz_type: str) -> None:
    sb = lying_sandbox("ignore_current", 5)
    pages: list[Any] = []
    with pytest.raises(MultiMarketsPagingError, match=r"came already on page 1: 4 records so far, 2 distinct") as info:
        pages.extend(MultiMarketsHook().paginate(biz_type, QUERIES[biz_type], page_size=2))
    assert "ignores 'current'" in str(info.value) and "nothing is kept" in str(info.value)
    assert len(pages) == 1 and sb.state.received[biz_type] == 2  # stopped at the first repeated page


@pytest.mark.parametrize(
    ("fault", "biz_type"),
    [("total_page_1", TRADES), ("total_page_0", TRADES), ("total_page_0", ORDERS), ("total_page_1", ORDERS)],
)
def test_a_count_that_ends_the_query_on_a_full_page_is_checked(lying_sandbox: Any, fault: str, biz_type: str) -> None:
    sb = lying_sandbox(fault, 5)
    with pytest.raises(MultiMarketsPagingError) as info:
        list(MultiMarketsHook().paginate(biz_type, QUERIES[biz_type], page_size=2))
    text = str(info.value)
    assert ("server's count is wrong" in text and "nothing is kept" in text) or "records, 2 arrived" in text
    assert sb.state.received[biz_type] <= 2  # at most one page more than the count promised


def test_a_truthful_full_last_page_costs_one_request_more_and_passes(lying_sandbox: Any) -> None:
    sb = lying_sandbox("", 4)
    for biz_type, body in QUERIES.items():
        pages = list(MultiMarketsHook().paginate(biz_type, body, page_size=2))
        assert [len(p) for p in pages] == [2, 2]
        assert sb.state.received[biz_type] == 3  # pages 1, 2 and an empty page 3


def test_a_page_larger_than_size_is_a_paging_error(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    for _ in range(3):
        hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False)
    real_call = hook.call

    def oversized(biz_type: str, payload: Any = None, **kwargs: Any) -> Any:
        return real_call(biz_type, {**payload, "size": 100}, **kwargs)

    hook.call = oversized  # type: ignore[method-assign]
    with pytest.raises(MultiMarketsPagingError, match="holds 3 records, more than size=2"):
        list(hook.paginate(ORDERS, {"tradeType": 2}, page_size=2))


@pytest.mark.parametrize(
    "value",
    ["--5", "²", "١٢٣", "-", "+", "1e3", math.nan, math.inf, -math.inf, 2**70, -(2**70), 1e30, True, b"123", [1]],
    ids=repr,
)
def test_epoch_ms_refuses_what_is_no_time_with_a_clear_error(value: Any) -> None:
    with pytest.raises(MultiMarketsConfigError, match=r"^Not a time: .*(ISO 8601|Unix milliseconds)"):
        epoch_ms(value)


def test_epoch_ms_still_reads_every_time_a_template_renders() -> None:
    assert epoch_ms(" 1795478400000 ") == epoch_ms("+1795478400000") == 1795478400000
    assert epoch_ms(1795478400000.7) == 1795478400000
    assert epoch_ms("-5") == -5
    assert epoch_ms("2026-11-24T00:00:00Z") == epoch_ms(dt.date(2026, 11, 24)) == 1795478400000
    assert epoch_ms(dt.datetime(2026, 11, 24, 8, tzinfo=dt.timezone(dt.timedelta(hours=8)))) == 1795478400000
