"""FillLedger: a JSON Lines file of fill records that holds each event identity once, across processes."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from airflow_provider_multimarkets.storage.files import Flock


def fill_record(payload: dict[str, Any]) -> dict[str, Any]:
    """One line about an order's push, from an event payload: order, symbol, price, lots, status."""
    raw_content = payload.get("content")
    content: dict[str, Any] = raw_content if isinstance(raw_content, dict) else {}
    raw_params = content.get("paramMap")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    return {
        "identity": payload.get("identity"),
        "order_id": params.get("orderId"),
        "symbol": params.get("symbolName") or params.get("symbolId"),
        "price": params.get("dealPrice") or params.get("dealExecutePrice"),
        "lots": params.get("dealAmount") or params.get("requestAmount"),
        "status": params.get("orderStatus"),
        "biz_type": payload.get("bizType"),
        "account_id": content.get("accountId"),
        "push_time_ms": payload.get("timestamp"),
    }


class FillLedger:
    """A JSON Lines file of fill records that holds each event identity once, across processes.

    :meth:`record` claims the identity with a marker file created exclusively (``O_EXCL``), then
    appends the line under an exclusive lock: two tasks that get the same push (a duplicate event)
    write it once. Markers are grouped by the push's day (UTC) under ``<directory>/seen``; remove
    old days to bound the directory.
    """

    def __init__(self, directory: str, name: str = "fills.jsonl") -> None:
        self.directory = directory
        self.path = os.path.join(directory, name)

    def _marker(self, identity: str, push_time_ms: Any) -> str:
        import datetime as dt

        day = "unknown"
        if type(push_time_ms) is int and push_time_ms > 0:
            day = dt.datetime.fromtimestamp(push_time_ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d")
        digest = hashlib.sha1(identity.encode("utf-8", "surrogatepass")).hexdigest()  # noqa: S324 - a file name
        return os.path.join(self.directory, "seen", day, digest)

    def record(self, payload: dict[str, Any], **extra: Any) -> dict[str, Any] | None:
        """Append the fill record of ``payload`` (plus ``extra``); ``None`` when its identity is held already."""
        identity = payload.get("identity")
        if not isinstance(identity, str) or not identity:
            raise ValueError("the event payload has no identity: is it from MultiMarketsPushEventTrigger?")
        row = {**fill_record(payload), **extra}
        marker = self._marker(identity, payload.get("timestamp"))
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        try:
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            return None
        line = (json.dumps(row, separators=(",", ":"), ensure_ascii=False, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            with Flock(fd):
                os.write(fd, line)
        except OSError:
            os.unlink(marker)  # not written: the identity is free again for a retry
            raise
        finally:
            os.close(fd)
        return row
