"""``MultiMarketsMsgSubscribeTrigger``: listen on the message WebSocket without holding a worker slot.

A thin trigger around the hook-side client
(:class:`~airflow_provider_multimarkets.messaging.client.MultiMarketsMsgClient`), which holds the
protocol, the push log and the reconnect rules. A triggerer that is killed loses nothing counted:
the trigger that a new triggerer starts with the same arguments resumes from the push log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_multimarkets.messaging.client import MultiMarketsMsgClient, SubscriptionSpec


class MultiMarketsMsgSubscribeTrigger(BaseTrigger):
    """Subscribe to account/position/trade pushes and stop on the first condition that holds.

    Its keyword arguments are the fields of
    :class:`~airflow_provider_multimarkets.messaging.client.SubscriptionSpec` (``token``,
    ``multimarkets_conn_id``, ``trade_types``, ``deadline``, ``max_messages``, ``until_order_id``,
    ``output_path``, ...): JSON values, so :meth:`serialize` round-trips them.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.spec = SubscriptionSpec(**kwargs)
        self._client: MultiMarketsMsgClient | None = None

    def __repr__(self) -> str:  # never the token
        return (
            f"<MultiMarketsMsgSubscribeTrigger conn_id={self.spec.multimarkets_conn_id!r} "
            f"trade_types={self.spec.trade_types!r}>"
        )

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_provider_multimarkets.triggers.msg_subscribe.MultiMarketsMsgSubscribeTrigger",
            self.spec.as_json(),
        )

    def client(self) -> MultiMarketsMsgClient:
        """The client this trigger runs (its spec, the triggerer's logger)."""
        return MultiMarketsMsgClient(self.spec, log=self.log)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self._client = self.client()
        event = await self._client.subscribe()
        yield TriggerEvent(event)

    async def cleanup(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
