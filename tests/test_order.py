"""Exactly one order per task instance: the client order id, the lookup before placing, truthful
failure messages, and a subscription whose login must be answered before anything is placed."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import pytest
from conftest import ORDER_BIZ_TYPE, ORDER_BODY, FakeTI, order_context, set_connection

from airflow_provider_multimarkets.exceptions import (
    MultiMarketsConfigError,
    MultiMarketsMsgError,
    MultiMarketsOrderError,
)
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.operators.order import (
    CROSS_MARKET_ORDER,
    ISOLATED_ORDER_PAGE,
    MultiMarketsMarketOrderOperator,
)
from airflow_provider_multimarkets.trading.order_identity import check_third_party_order, derive_third_party_order

VALID = re.compile(r"^[A-Za-z0-9_]{1,255}$")


@pytest.fixture(autouse=True)
def _own_push_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test has its own spool: every sandbox numbers its orders from the same id, and a push log
    restored from another test's order would be taken for this one's fill."""
    monkeypatch.setenv("MULTIMARKETS_PUSH_DIR", str(tmp_path / "mm-pushes"))


# ---- the client order id ------------------------------------------------------------------------


def test_derivation_is_stable_and_valid() -> None:
    a = derive_third_party_order("daily_orders", "manual__2026-11-24T02:00:00+00:00", "buy_eurusd")
    assert a == derive_third_party_order("daily_orders", "manual__2026-11-24T02:00:00+00:00", "buy_eurusd")
    assert VALID.match(a) and a.startswith("af_daily_orders_buy_eurusd_")


def test_derivation_differs_between_task_instances() -> None:
    base = ("dag", "scheduled__2026-11-24T00:00:00+00:00", "order")
    ids = {
        derive_third_party_order(*base),
        derive_third_party_order("dag", "scheduled__2026-11-25T00:00:00+00:00", "order"),
        derive_third_party_order("dag", base[1], "order2"),
        derive_third_party_order("dag2", base[1], "order"),
        *(derive_third_party_order(*base, map_index=i) for i in range(50)),
        # names that differ only in characters the readable part folds together
        derive_third_party_order("a.b", base[1], "order"),
        derive_third_party_order("a_b", base[1], "order"),
    }
    assert len(ids) == 56


@pytest.mark.parametrize(
    ("dag_id", "task_id", "map_index"),
    [
        ("d" * 250, "t" * 250, -1),
        ("ünïcødé-dag 名前", "group.sub.task", 12345),
        ("___", "...", 0),
    ],
)
def test_derivation_is_bounded_for_any_names(dag_id: str, task_id: str, map_index: int) -> None:
    value = derive_third_party_order(dag_id, "manual__" + "x" * 300, task_id, map_index)
    assert VALID.match(value) and len(value) <= 255
    assert check_third_party_order(value) == value


@pytest.mark.parametrize("bad", ["", "has space", "x" * 256, "dash-ed", 5, None])
def test_bad_override_is_a_config_error(bad: Any) -> None:
    with pytest.raises(MultiMarketsConfigError, match="thirdPartyOrder"):
        check_third_party_order(bad)


# ---- lookup before placing --------------------------------------------------------------------------


def _context(ti: FakeTI) -> Any:
    return order_context(ti)


def _op(**kwargs: Any) -> MultiMarketsMarketOrderOperator:
    return MultiMarketsMarketOrderOperator(task_id="order", order=dict(ORDER_BODY), track=False, **kwargs)


def _place_directly(third_party_order: str) -> int:
    return int(
        MultiMarketsHook().call(ORDER_BIZ_TYPE, {**ORDER_BODY, "thirdPartyOrder": third_party_order}, idempotent=False)[
            "orderId"
        ]
    )


def test_first_try_places_with_the_derived_id(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    ti = FakeTI()
    result = _op().execute(_context(ti))
    tpo = derive_third_party_order("dag", "manual__1", "order")
    assert result["third_party_order"] == tpo
    assert [o["request"]["thirdPartyOrder"] for o in sandbox.state.orders] == [tpo]
    assert ti.xcoms["order_ids"] == {"orderId": result["order"]["orderId"], "thirdPartyOrder": tpo, "source": "placed"}
    assert sandbox.state.received[ISOLATED_ORDER_PAGE] == 0  # a first try does not look up


def test_retry_with_no_match_places(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    _op().execute(_context(FakeTI(try_number=2)))
    assert len(sandbox.state.orders) == 1 and sandbox.state.received[ISOLATED_ORDER_PAGE] == 1


def test_retry_with_one_match_adopts_it(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    order_id = _place_directly(derive_third_party_order("dag", "manual__1", "order"))
    _place_directly(derive_third_party_order("dag", "manual__other", "order"))  # another task instance's
    result = _op().execute(_context(FakeTI(try_number=3)))
    assert result["adopted"] and result["order"]["orderId"] == order_id
    assert len(sandbox.state.orders) == 2  # nothing new


def test_retry_with_two_matches_places_nothing(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    tpo = derive_third_party_order("dag", "manual__1", "order")
    ids = [_place_directly(tpo), _place_directly(tpo)]
    with pytest.raises(
        MultiMarketsOrderError, match=f"Nothing was placed: 2 orders carry thirdPartyOrder={tpo}"
    ) as info:
        _op().execute(_context(FakeTI(try_number=2)))
    assert sorted(info.value.order_ids) == sorted(ids) and len(sandbox.state.orders) == 2


def test_retry_whose_lookup_fails_places_nothing(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, sandbox.connection(retry_backoff=0.01, max_retries=1))
    sandbox.add_fault(ISOLATED_ORDER_PAGE, status=503, times=5)
    with pytest.raises(MultiMarketsOrderError, match="Nothing was placed.*the lookup failed"):
        _op().execute(_context(FakeTI(try_number=2)))
    assert sandbox.state.orders == []


def test_full_margin_retry_never_places(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    op = MultiMarketsMarketOrderOperator(task_id="o", order={"tradeType": 1}, biz_type=CROSS_MARKET_ORDER, track=False)
    assert op.retries == 0  # a default only: the user's retries are kept
    assert (
        MultiMarketsMarketOrderOperator(
            task_id="o2", order={"tradeType": 1}, biz_type=CROSS_MARKET_ORDER, retries=2
        ).retries
        == 2
    )
    with pytest.raises(MultiMarketsOrderError, match="documents no order lookup"):
        op.execute(_context(FakeTI(try_number=2)))
    assert sandbox.state.received[CROSS_MARKET_ORDER] == 0


def test_isolated_order_keeps_the_users_retries() -> None:
    assert MultiMarketsMarketOrderOperator(task_id="o", order={}, retries=3).retries == 3


# ---- truthful outcomes ---------------------------------------------------------------------------------


def test_answer_lost_after_processing_says_it_was_placed(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, sandbox.connection(timeout=[2, 0.4], retry_backoff=0.01))
    sandbox.add_fault(ORDER_BIZ_TYPE, drop=True, after_processing=True)
    with pytest.raises(MultiMarketsOrderError, match=r"Order \d+ \(thirdPartyOrder=af_\w+\) WAS placed") as info:
        _op().execute(_context(FakeTI()))
    assert info.value.placed is True and len(sandbox.state.orders) == 1


def test_answer_lost_and_lookup_empty_says_it_may_exist(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, sandbox.connection(timeout=[2, 0.4], retry_backoff=0.01))
    sandbox.add_fault(ORDER_BIZ_TYPE, drop=True)  # dropped before processing: the client cannot know
    with pytest.raises(
        MultiMarketsOrderError, match="MAY have been placed.*found none yet.*Look for thirdPartyOrder=af_"
    ) as info:
        _op().execute(_context(FakeTI()))
    assert info.value.placed is None and sandbox.state.orders == []


def test_rejected_order_says_not_placed(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    with pytest.raises(MultiMarketsOrderError, match=r"NOT placed \(the gateway rejected it\).*CFDWBWE000013") as info:
        MultiMarketsMarketOrderOperator(task_id="order", order={**ORDER_BODY, "symbolId": 1}, track=False).execute(
            _context(FakeTI())
        )
    assert info.value.placed is False


def test_never_sent_says_not_placed(monkeypatch: pytest.MonkeyPatch, sandbox: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = sandbox.connection(retry_backoff=0.01, max_retries=1)
    conn["host"] = f"http://127.0.0.1:{port}/openapi-c"
    set_connection(monkeypatch, conn)
    with pytest.raises(MultiMarketsOrderError, match=r"NOT placed \(the request never left this worker\)"):
        _op().execute(_context(FakeTI()))


# ---- the subscription comes first ---------------------------------------------------------------------


def _tracked(**kwargs: Any) -> MultiMarketsMarketOrderOperator:
    kwargs.setdefault("window_seconds", 10)
    return MultiMarketsMarketOrderOperator(task_id="order", order=dict(ORDER_BODY), **kwargs)


def test_refused_subscription_places_nothing(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    sandbox.state.faults.ws.refuse_login = True  # subscribe_fail: the documented refusal
    with pytest.raises(MultiMarketsOrderError, match="NOT placed.*refused the msg token"):
        _tracked().execute(_context(FakeTI()))
    assert sandbox.state.orders == []


def test_no_login_answer_places_nothing_unless_opted_in(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    sandbox.state.faults.ws.silent = True
    with pytest.raises(MultiMarketsOrderError, match=r"NOT placed.*did not answer the login"):
        _tracked(login_timeout=0.5).execute(_context(FakeTI()))
    assert sandbox.state.orders == []
    result = _tracked(login_timeout=0.5, untracked_if_no_login=True, window_seconds=2, poll_interval=0.2).execute(
        _context(FakeTI(run_id="r2"))
    )
    sandbox.state.faults.ws.silent = False
    (placed,) = sandbox.state.orders
    assert result["order"]["orderId"] == placed["response"]["orderId"]
    # no push could arrive: the lookup said what became of it
    assert result["fill"]["final_status"] == "completed" and result["fill"]["tracked"] is False
    assert result["record"]["status"] == 2


def test_no_acknowledgement_of_subscribe_asset_is_awaited(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    """Strict mode: the sandbox sends only documented frames (no answer to subscribe_asset, no pong). The
    login answered and subscribe_asset sent, the order is placed and tracked."""
    assert sandbox.state.config.strict_frames
    result = _tracked().execute(_context(FakeTI()))
    assert len(sandbox.state.orders) == 1
    assert result["fill"]["tracked"] and result["fill"]["final_status"] == "completed"
    assert result["subscription"].get("answer_frames", 0) == 0  # nothing but the login answer and pushes came


def test_deprecated_ack_arguments_warn_and_map_to_the_login_ones() -> None:
    with pytest.warns(DeprecationWarning, match="ack_grace and untracked_if_no_ack .* deprecated"):
        op = _tracked(ack_grace=3, untracked_if_no_ack=True)
    assert op.login_timeout == 3 and op.untracked_if_no_login is True
    assert _tracked().login_timeout == 10 and _tracked().untracked_if_no_login is False


def test_socket_dropped_while_placing_still_tracks_the_order(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    sandbox.state.faults.ws.drop_on_order = 1
    result = _tracked().execute(_context(FakeTI()))
    assert len(sandbox.state.orders) == 1
    assert result["order"]["orderId"] == sandbox.state.orders[0]["response"]["orderId"]
    assert result["fill"]["tracked"] and result["subscription"]["reconnects"] >= 1


def test_malformed_push_during_placement_breaks_nothing(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    from airflow_provider_multimarkets.messaging.subscription import SubscriptionRecorder

    recorder = SubscriptionRecorder()
    assert recorder.add({"msgCode": ["trade"], "seqId": [1, 2], "trace": {"x": 1}, "content": []})
    assert not recorder.add({"msgCode": ["trade"], "seqId": [1, 2], "trace": {"x": 1}, "content": []})
    sandbox.state.publish(439, "2", "trade", {"paramMap": [1, 2]})  # queued before the order's own push
    result = _tracked().execute(_context(FakeTI()))
    assert result["fill"]["tracked"] and len(sandbox.state.orders) == 1


# ---- the sandbox's order list follows the spec --------------------------------------------------------------


def test_order_page_validates_and_pages(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    from airflow_provider_multimarkets.exceptions import MultiMarketsApiError

    hook = MultiMarketsHook()
    for i in range(5):
        _place_directly(f"tpo_{i}")
    with pytest.raises(MultiMarketsApiError) as info:
        hook.call(ISOLATED_ORDER_PAGE, {}, version="0.0.1", group="tradeApi", check=False)
    assert info.value.code == "CFDWBWE000005"
    with pytest.raises(MultiMarketsApiError) as info:
        hook.call(ORDER_BIZ_TYPE, {**ORDER_BODY, "thirdPartyOrder": "not valid!"}, idempotent=False)
    assert info.value.code == "CFDWBWE000006"
    page = hook.call(ISOLATED_ORDER_PAGE, {"tradeType": 2, "current": 2, "size": 2}, version="0.0.1", group="tradeApi")
    assert (page["current"], page["size"], page["total"], len(page["records"])) == (2, 2, 5, 2)
    one = hook.call(
        ISOLATED_ORDER_PAGE, {"tradeType": 2, "thirdPartyOrder": "tpo_3"}, version="0.0.1", group="tradeApi"
    )
    assert one["total"] == 1 and one["records"][0]["thirdPartyOrder"] == "tpo_3" and one["records"][0]["status"] == 2
    assert set(one["records"][0]) >= {
        "id",
        "dealId",
        "bizType",
        "direction",
        "status",
        "symbolId",
        "executePrice",
        "positionId",
    }


def test_delayed_fill_push(sandbox: Any, mm_conn: dict[str, Any]) -> None:
    sandbox.state.config.order_push_delay = 0.5
    started = time.monotonic()
    result = _tracked().execute(_context(FakeTI()))
    assert result["fill"]["tracked"] and time.monotonic() - started >= 0.5
    asyncio.set_event_loop_policy(None)


def test_order_refused_on_a_real_error_raises_msg_errors_as_such() -> None:
    assert issubclass(MultiMarketsOrderError, Exception) and not issubclass(
        MultiMarketsMsgError, MultiMarketsOrderError
    )
