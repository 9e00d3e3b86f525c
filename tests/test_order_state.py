"""What a retry decides from the task state store (pure logic): the decision table, the stable keys,
the idempotency-key's derivation and its 24-hour window."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from conftest import FakeTaskStateStore

from airflow_provider_multimarkets.trading import order_state
from airflow_provider_multimarkets.trading.order_identity import derive_idempotency_key, derive_third_party_order
from airflow_provider_multimarkets.trading.order_state import (
    LOOKUP,
    PLACE,
    REFUSE,
    RESEND,
    OrderMemory,
    before_placing,
    order_call_record,
)

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
TPO = derive_third_party_order("dag", "manual__1", "order")


def test_the_keys_are_the_documented_ones() -> None:
    # stable across releases: a retry reads what an earlier version of the provider wrote
    assert order_state.KEYS == (
        "multimarkets.third_party_order",
        "multimarkets.idempotency_key",
        "multimarkets.order_call",
        "multimarkets.order_id",
        "multimarkets.order",
        "multimarkets.final_status",
        "multimarkets.fill",
    )
    from airflow_provider_multimarkets.operators.order import MultiMarketsMarketOrderOperator

    assert MultiMarketsMarketOrderOperator.external_id_key == order_state.ORDER_ID


def test_idempotency_key_is_derived_from_the_third_party_order() -> None:
    key = derive_idempotency_key(TPO)
    assert key == derive_idempotency_key(TPO) and key.startswith("mmo_") and len(key) == 44
    assert key != derive_idempotency_key(derive_third_party_order("dag", "manual__2", "order"))
    assert key.isascii() and key.replace("_", "").isalnum()  # header-safe
    assert len(derive_idempotency_key("x" * 255)) == 44


def _memory(*, sent: bool, key: bool = True, age: dt.timedelta = dt.timedelta(minutes=5), **extra: Any) -> OrderMemory:
    if not sent:
        return OrderMemory(**extra)
    call = order_call_record("b", 1, idempotency_key_sent=key, now=NOW - age)
    return OrderMemory(
        third_party_order=TPO, idempotency_key=derive_idempotency_key(TPO) if key else None, order_call=call, **extra
    )


@pytest.mark.parametrize(
    ("has_lookup", "sent", "key_sent", "key_on", "try_number", "age_h", "cleared", "expected"),
    [
        # isolated margin: any try after the first, or any evidence, looks up; else it places
        (True, False, True, True, 1, 0, False, PLACE),
        (True, False, True, True, 2, 0, False, LOOKUP),
        (True, True, True, True, 1, 0, False, LOOKUP),
        (True, True, True, True, 3, 0, False, LOOKUP),
        (True, False, True, True, 2, 0, True, LOOKUP),
        # full margin: the evidence and the idempotency-key decide
        (False, False, True, True, 1, 0, False, PLACE),
        (False, False, True, True, 2, 0, False, PLACE),  # no evidence the order was ever sent
        (False, True, True, True, 2, 1, False, RESEND),
        (False, True, True, True, 2, 22.9, False, RESEND),
        (False, True, True, True, 2, 23.5, False, REFUSE),  # past the cache window (minus the margin)
        (False, True, False, True, 2, 1, False, REFUSE),  # sent without a key
        (False, True, True, False, 2, 1, False, REFUSE),  # the key is off now
        (False, False, True, True, 2, 0, True, RESEND),  # store cleared on success: the derived key again
        (False, False, True, False, 2, 0, True, REFUSE),
        (False, False, True, True, 1, 0, True, PLACE),
    ],
)
def test_decision_table(
    has_lookup: bool,
    sent: bool,
    key_sent: bool,
    key_on: bool,
    try_number: int,
    age_h: float,
    cleared: bool,
    expected: str,
) -> None:
    memory = _memory(sent=sent, key=key_sent, age=dt.timedelta(hours=age_h))
    decision, why = before_placing(
        memory,
        has_lookup=has_lookup,
        try_number=try_number,
        idempotency_key=key_on,
        store_cleared_on_success=cleared,
        now=NOW,
    )
    assert decision == expected, why
    assert why  # every decision says why


def test_refusal_says_why() -> None:
    _, why = before_placing(
        _memory(sent=True, key=False), has_lookup=False, try_number=2, idempotency_key=True, now=NOW
    )
    assert "documents no order lookup" in why and "without an idempotency-key" in why
    _, why = before_placing(
        _memory(sent=True, age=dt.timedelta(hours=30)), has_lookup=False, try_number=2, idempotency_key=True, now=NOW
    )
    assert "older than the gateway's 24-hour cache" in why


def test_a_clock_that_went_backwards_is_no_cache_hit() -> None:
    memory = _memory(sent=True, age=dt.timedelta(hours=-2))
    assert before_placing(memory, has_lookup=False, try_number=2, idempotency_key=True, now=NOW)[0] == REFUSE


def test_memory_reads_what_the_store_holds_and_ignores_junk() -> None:
    store = FakeTaskStateStore(
        {
            order_state.THIRD_PARTY_ORDER: TPO,
            order_state.ORDER_CALL: {"sent_at": NOW.isoformat()},
            order_state.ORDER_ID: 21257492,
            order_state.FINAL_STATUS: "2",
            order_state.FILL: "not a dict",
            order_state.IDEMPOTENCY_KEY: "",
        }
    )
    memory = OrderMemory.read(store)
    assert memory.maybe_sent and memory.order_id == 21257492 and memory.final_status == 2
    assert memory.fill is None and memory.idempotency_key is None
    assert set(memory.as_dict()) == {
        order_state.THIRD_PARTY_ORDER,
        order_state.ORDER_CALL,
        order_state.ORDER_ID,
        order_state.FINAL_STATUS,
    }
    assert OrderMemory.read(None) == OrderMemory()
    assert OrderMemory.read(FakeTaskStateStore({order_state.FINAL_STATUS: True})).final_status is None
