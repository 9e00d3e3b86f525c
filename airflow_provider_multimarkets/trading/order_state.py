"""What an order task keeps in Airflow's task state store, and what a retry decides from it (pure logic).

Airflow 3.3 gives every task instance a key/value store that outlives its tries and clears
(``context["task_state_store"]``; the UI and the REST API show and edit it). The order operator
writes, under these keys (stable across releases: a retry reads what an older version wrote):

========================================  ==============================================================
key                                       written
========================================  ==============================================================
``multimarkets.third_party_order``        before the order call: the order's ``thirdPartyOrder``
``multimarkets.idempotency_key``          before the order call: the request's ``idempotency-key``
                                          (absent when the connection turns the header off)
``multimarkets.order_call``               before the order call: ``{"biz_type", "sent_at" (UTC ISO),
                                          "try_number", "idempotency_key_sent"}``: the evidence that
                                          the request may have reached the gateway
``multimarkets.order_id``                 right after the answer: ``data.orderId`` (the
                                          ``external_id_key`` of ``ResumableJobMixin``)
``multimarkets.order``                    right after the answer: the answer's ``data``
``multimarkets.final_status``             once the order is final: its status (2 executed, 4
                                          cancelled, 5 partially cancelled, 6 rejected, 7 expired)
``multimarkets.fill``                     with the final status: the fill report (the XCom ``fill``)
========================================  ==============================================================

:func:`before_placing` is the decision of a try that finds no ``order_id``: look the order up,
send the same request again with the same ``idempotency-key`` (the gateway answers a repeat from
its 24-hour cache), refuse, or place. Only "no evidence the order was ever sent" places without a
lookup.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_multimarkets.trading.order_lookup import status_number

PREFIX = "multimarkets."
THIRD_PARTY_ORDER = PREFIX + "third_party_order"
IDEMPOTENCY_KEY = PREFIX + "idempotency_key"
ORDER_CALL = PREFIX + "order_call"
ORDER_ID = PREFIX + "order_id"
ORDER = PREFIX + "order"
FINAL_STATUS = PREFIX + "final_status"
FILL = PREFIX + "fill"
#: every key the order operator writes, in the order it writes them
KEYS = (THIRD_PARTY_ORDER, IDEMPOTENCY_KEY, ORDER_CALL, ORDER_ID, ORDER, FINAL_STATUS, FILL)

#: how long the gateway keeps the answer of an ``idempotency-key`` (docs.hyperex.io, "幂等请求")
IDEMPOTENCY_WINDOW = dt.timedelta(hours=24)
#: a repeat is sent only this long before the window ends at the latest (clocks, a slow retry)
IDEMPOTENCY_MARGIN = dt.timedelta(hours=1)

#: decisions of :func:`before_placing`
LOOKUP = "lookup"
RESEND = "resend"
REFUSE = "refuse"
PLACE = "place"


@dataclass(frozen=True)
class OrderMemory:
    """What the task state store holds for one order task instance (every field may be missing)."""

    third_party_order: str | None = None
    idempotency_key: str | None = None
    order_call: dict[str, Any] | None = None
    order_id: Any = None
    order: dict[str, Any] | None = None
    final_status: int | None = None
    fill: dict[str, Any] | None = None

    @classmethod
    def read(cls, store: Any) -> OrderMemory:
        """Read the keys from a task state store (anything with ``get(key, default)``); ``None``: empty."""
        if store is None:
            return cls()

        def get(key: str) -> Any:
            return store.get(key, None)

        call, order, fill, status = get(ORDER_CALL), get(ORDER), get(FILL), get(FINAL_STATUS)
        tpo, key = get(THIRD_PARTY_ORDER), get(IDEMPOTENCY_KEY)
        return cls(
            third_party_order=tpo if isinstance(tpo, str) else None,
            idempotency_key=key if isinstance(key, str) and key else None,
            order_call=dict(call) if isinstance(call, Mapping) else None,
            order_id=get(ORDER_ID),
            order=dict(order) if isinstance(order, Mapping) else None,
            final_status=status_number(status),
            fill=dict(fill) if isinstance(fill, Mapping) else None,
        )

    @property
    def maybe_sent(self) -> bool:
        """Whether a try started the order call (the evidence is written before the request)."""
        return self.order_call is not None

    def as_dict(self) -> dict[str, Any]:
        """The stored keys and values (for logs, tests and reports)."""
        values = (
            self.third_party_order,
            self.idempotency_key,
            self.order_call,
            self.order_id,
            self.order,
            self.final_status,
            self.fill,
        )
        return {k: v for k, v in zip(KEYS, values, strict=True) if v is not None}


def order_call_record(
    biz_type: str, try_number: int, *, idempotency_key_sent: bool, now: dt.datetime
) -> dict[str, Any]:
    """The ``multimarkets.order_call`` value written right before a request is sent."""
    return {
        "biz_type": biz_type,
        "sent_at": now.astimezone(dt.timezone.utc).isoformat(timespec="seconds"),
        "try_number": try_number,
        "idempotency_key_sent": idempotency_key_sent,
    }


def key_still_cached(memory: OrderMemory, now: dt.datetime) -> bool:
    """Whether the gateway still holds the answer of the stored request's ``idempotency-key``."""
    call = memory.order_call or {}
    if not memory.idempotency_key or not call.get("idempotency_key_sent"):
        return False
    try:
        sent_at = dt.datetime.fromisoformat(str(call.get("sent_at")))
    except ValueError:
        return False
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=dt.timezone.utc)
    return dt.timedelta(0) <= now - sent_at <= IDEMPOTENCY_WINDOW - IDEMPOTENCY_MARGIN


def before_placing(
    memory: OrderMemory,
    *,
    has_lookup: bool,
    try_number: int,
    idempotency_key: bool,
    store_cleared_on_success: bool = False,
    now: dt.datetime,
) -> tuple[str, str]:
    """What a try does when the store holds no ``order_id``: ``(decision, why)``.

    * isolated margin (``has_lookup``): a try after the first, or any try that finds the evidence
      of an earlier request, looks the order up by ``thirdPartyOrder`` (``LOOKUP``; it places only
      when the lookup finds none, with the same ``idempotency-key``);
    * full margin (no lookup): the evidence of an earlier request decides. Its ``idempotency-key``
      still cached by the gateway: send the same request with the same key again (``RESEND``: the
      gateway answers the earlier request's order, or places it if the request never arrived).
      Otherwise ``REFUSE``: the order may exist and nothing can tell.
    * no evidence the order was ever sent: ``PLACE``. An empty store proves nothing when the
      deployment clears the store on success (``[state_store] clear_on_success``): then a try after
      the first is treated as if the request may have been sent.
    """
    evidence = memory.maybe_sent or (store_cleared_on_success and try_number > 1)
    if has_lookup:
        if evidence or try_number > 1:
            why = "an earlier try started the order call" if memory.maybe_sent else f"this is try {try_number}"
            return LOOKUP, why
        return PLACE, "no evidence in the task state store that the order was ever sent"
    if not evidence:
        if try_number > 1:
            return PLACE, (
                f"try {try_number}, and the task state store holds no evidence that an earlier try sent the order "
                "(it is written before every request)"
            )
        return PLACE, "first try"
    if not memory.maybe_sent:  # cleared on success: the key is derived again, the same for every try
        if idempotency_key:
            return RESEND, (
                "the deployment clears the task state store on success ([state_store] clear_on_success), so an "
                "earlier try may have placed the order; the same idempotency-key is sent again"
            )
        return REFUSE, (
            "the deployment clears the task state store on success ([state_store] clear_on_success), so an earlier "
            "try may have placed the order, and the idempotency-key header is off"
        )
    if idempotency_key and key_still_cached(memory, now):
        return RESEND, (
            f"an earlier try sent the order call at {(memory.order_call or {}).get('sent_at')} with "
            f"idempotency-key {memory.idempotency_key}; the gateway answers a repeat from its cache"
        )
    if not memory.idempotency_key or not (memory.order_call or {}).get("idempotency_key_sent"):
        reason = "it was sent without an idempotency-key"
    elif not idempotency_key:
        reason = "the connection now turns the idempotency-key header off"
    else:
        reason = "its idempotency-key is older than the gateway's 24-hour cache"
    return REFUSE, (
        f"an earlier try sent the order call at {(memory.order_call or {}).get('sent_at')} and got no answer that "
        f"was stored; the full-margin interface documents no order lookup, and {reason}"
    )
