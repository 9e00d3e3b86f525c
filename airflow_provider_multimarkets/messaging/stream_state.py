"""What a push-event watcher needs to resume its message stream anywhere (pure logic: no Airflow, no I/O).

On Airflow 3.3+ the watchers of one connection and trade types share one message stream (one token,
one socket) in the triggerer, and the stream's state lives in Airflow's asset state store, one copy
per watched asset, as the JSON document :meth:`StreamState.to_json` writes:

* the msg token (encrypted by the caller with Airflow's Fernet key), so that a watcher moved to
  any triggerer on any host resumes the same stream and receives what the platform queued for
  it meanwhile;
* **pending**: the pushes some watcher's filter matched that were received but whose events
  Airflow has not yet confirmed stored (ack mode), written before they are handed out: after a
  crash they are handed out again (the only events replayed, each one justified);
* **acked**: short digests of the pushes whose events Airflow stored, for the last
  ``dedupe_seconds`` (bounded): a push the platform sends again after a reconnect is recognised
  and dropped, wherever the stream resumes;
* the **holder** and when it last renewed its lease: a triggerer taking the stream over waits
  for a lease that may still be renewed (another live triggerer holds the stream: it then opens
  a stream of its own instead of taking the other's session), never longer than the lease;
* the watchers the stream served, so that a stream that starts again waits (bounded) for all of
  them before it hands out anything.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: the document's format, checked when read
FORMAT = 1
DEFAULT_LEASE_SECONDS = 20.0
DEFAULT_DEDUPE_SECONDS = 600.0
DEFAULT_DEDUPE_MAX = 1000
#: pending pushes kept at most (beyond: the oldest are dropped with a warning by the caller)
MAX_PENDING = 500


def digest(identity: str) -> str:
    """A push's event identity in 16 hex characters (64 bits): what ``acked`` remembers."""
    return hashlib.sha1(identity.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]


def new_stream_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class StreamState:
    """One message stream (one msg token) and how far the watchers' events got."""

    sid: str
    token: str = field(repr=False)
    fetched_at: float
    holder: str
    renewed_at: float = 0.0
    #: event identity -> the push (received, matched by a watcher, not yet confirmed stored)
    pending: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    #: digest -> push timestamp (ms) of the pushes whose events were stored
    acked: OrderedDict[str, int] = field(default_factory=OrderedDict)
    acked_total: int = 0
    last_identity: str | None = None
    last_ms: int | None = None
    watchers: set[str] = field(default_factory=set)
    #: counts the writes of the stream's state: the copy with the highest is the newest
    version: int = 0
    #: the holder stopped the stream in order: its lease is over at once
    released: bool = False
    dedupe_seconds: float = DEFAULT_DEDUPE_SECONDS
    dedupe_max: int = DEFAULT_DEDUPE_MAX

    # ---- what is known ----------------------------------------------------------------------------

    def known(self, identity: str) -> bool:
        """Already handed out (pending) or already stored (acked): a push sent again."""
        return identity in self.pending or digest(identity) in self.acked

    def add_pending(self, identity: str, frame: dict[str, Any]) -> None:
        self.pending[identity] = frame
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)

    def ack(self, identity: str, timestamp_ms: int | None) -> None:
        """The events of this push were stored: from pending to acked."""
        self.pending.pop(identity, None)
        key = digest(identity)
        self.acked.pop(key, None)
        self.acked[key] = int(timestamp_ms or time.time() * 1000)
        self.acked_total += 1
        self.last_identity, self.last_ms = identity, self.acked[key]
        self.trim()

    def drop(self, identity: str) -> None:
        self.pending.pop(identity, None)

    def trim(self, now_ms: int | None = None) -> None:
        """Keep the acked digests of the last ``dedupe_seconds``, at most ``dedupe_max``."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        horizon = now_ms - int(self.dedupe_seconds * 1000)
        while self.acked and (len(self.acked) > self.dedupe_max or next(iter(self.acked.values())) < horizon):
            self.acked.popitem(last=False)

    # ---- the lease ----------------------------------------------------------------------------------

    def lease_live(self, now: float, lease: float) -> bool:
        return not self.released and self.renewed_at > 0 and now - self.renewed_at < lease

    # ---- the document ----------------------------------------------------------------------------------

    def to_json(self, token_text: str) -> dict[str, Any]:
        """The document stored in the asset state store (``token_text``: the token as the caller
        protects it)."""
        return {
            "format": FORMAT,
            "sid": self.sid,
            "token": token_text,
            "fetched_at": self.fetched_at,
            "holder": self.holder,
            "renewed_at": self.renewed_at,
            "pending": list(self.pending.values()),
            "acked": [[k, v] for k, v in self.acked.items()],
            "position": {"acked": self.acked_total, "last_identity": self.last_identity, "last_ms": self.last_ms},
            "watchers": sorted(self.watchers),
            "version": self.version,
            "released": self.released,
        }

    @classmethod
    def from_json(cls, data: Any, token: str, identity_of: Any) -> StreamState:
        """A stream from its document; ``ValueError`` naming what is wrong with one that is not."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a stream document of this provider (format)")
        try:
            position = data.get("position") or {}
            state = cls(
                sid=str(data["sid"]),
                token=token,
                fetched_at=float(data.get("fetched_at") or 0.0),
                holder=str(data.get("holder") or ""),
                renewed_at=float(data.get("renewed_at") or 0.0),
                acked_total=int(position.get("acked") or 0),
                last_identity=position.get("last_identity"),
                last_ms=position.get("last_ms"),
                watchers={str(w) for w in data.get("watchers") or ()},
                version=int(data.get("version") or 0),
                released=bool(data.get("released")),
            )
            for frame in data.get("pending") or ():
                if isinstance(frame, dict):
                    state.pending[identity_of(frame)] = frame
            for key, stamp in data.get("acked") or ():
                state.acked[str(key)] = int(stamp)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a malformed stream document ({type(exc).__name__}: {exc})") from None
        return state


def newest(documents: Iterable[Any]) -> list[dict[str, Any]]:
    """The stream documents read from the watchers' assets, one per stream (the newest copy of
    each: the highest ``version``), the most recently renewed stream first."""

    def order(doc: dict[str, Any]) -> tuple[int, float]:
        return int(doc.get("version") or 0), float(doc.get("renewed_at") or 0)

    best: dict[str, dict[str, Any]] = {}
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not doc.get("sid"):
            continue
        sid = str(doc["sid"])
        if sid not in best or order(doc) > order(best[sid]):
            best[sid] = doc
    return sorted(best.values(), key=lambda d: float(d.get("renewed_at") or 0), reverse=True)


__all__ = [
    "DEFAULT_DEDUPE_MAX",
    "DEFAULT_DEDUPE_SECONDS",
    "DEFAULT_LEASE_SECONDS",
    "FORMAT",
    "StreamState",
    "digest",
    "new_stream_id",
    "newest",
]
