"""Scripted faults of the sandbox, settable from Python (tests) and the command line.

HTTP faults are per bizType (``*`` for every bizType) and are used up in order: each matching
request takes the first fault that still has uses left.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

HTTP_FAULT_KINDS = ("status", "delay", "drop", "truncate", "html", "empty", "envelope", "wrong_type")


@dataclass
class HttpFault:
    """One scripted answer.

    :param status: answer with this HTTP status (body: a short JSON error, or ``body``).
    :param delay: seconds to wait before answering (a client read timeout shorter than this
        times out).
    :param drop: close the connection without any answer.
    :param truncate: send the real envelope cut in half.
    :param html: send an HTML error page (with ``status``, default 502).
    :param empty: send an empty body (with ``status``, default 200).
    :param envelope: send an error envelope with this ``code`` (and ``msg``).
    :param wrong_type: send a JSON array instead of an envelope object.
    :param retry_after: the ``Retry-After`` header of a status answer.
    :param after_processing: apply the fault after the request was processed (an order is then
        placed although the client sees a failure), instead of before.
    :param times: how many requests it applies to (``None``: every one).
    """

    status: int | None = None
    delay: float = 0.0
    drop: bool = False
    truncate: bool = False
    html: bool = False
    empty: bool = False
    envelope: str | None = None
    msg: str = "injected fault"
    wrong_type: bool = False
    retry_after: str | None = None
    after_processing: bool = False
    times: int | None = 1
    used: int = field(default=0, compare=False)

    @classmethod
    def parse(cls, spec: str) -> tuple[str, HttpFault]:
        """``BIZTYPE:key=value,key=value`` (command line form), e.g. ``getMsgPushToken:status=503,times=2``."""
        biz_type, _, options = spec.partition(":")
        kwargs: dict[str, Any] = {}
        for item in filter(None, options.split(",")):
            key, _, value = item.partition("=")
            key = key.strip()
            if key in ("status", "times"):
                kwargs[key] = None if value in ("", "inf", "forever") else int(value)
            elif key == "delay":
                kwargs[key] = float(value)
            elif key in ("drop", "truncate", "html", "empty", "wrong_type", "after_processing"):
                kwargs[key] = value.lower() not in ("0", "false", "no")
            elif key in ("envelope", "msg", "retry_after"):
                kwargs[key] = value
            else:
                raise ValueError(f"unknown fault option {key!r} in {spec!r}")
        return biz_type.strip() or "*", cls(**kwargs)


@dataclass
class WsFaults:
    """Faults of the message WebSocket.

    :param drop_after: close each connection after it has pushed this many messages.
    :param drop_times: how many connections ``drop_after`` applies to (``None``: all).
    :param malformed_every: every Nth push is preceded by a frame that is not JSON.
    :param refuse_login: refuse every login as if the token were unknown.
    :param silent: stop reading, answering pings and pushing (a hung server); frames sent meanwhile
        are handled when it is cleared.
    :param refuse_subscribe: answer ``subscribe_asset`` with an error code (no access rights).
    :param drop_on_order: drop every message connection when an order call arrives, this many times.
    """

    drop_after: int | None = None
    drop_times: int | None = None
    malformed_every: int | None = None
    refuse_login: bool = False
    silent: bool = False
    refuse_subscribe: bool = False
    drop_on_order: int = 0
    drops_done: int = 0


class FaultPlan:
    """Thread-safe store of the faults in force."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._http: list[tuple[str, HttpFault]] = []
        self.ws = WsFaults()

    def add(self, biz_type: str, fault: HttpFault) -> HttpFault:
        with self._lock:
            self._http.append((biz_type, fault))
        return fault

    def clear(self) -> None:
        with self._lock:
            self._http.clear()
            self.ws = WsFaults()

    def take(self, biz_type: str) -> HttpFault | None:
        with self._lock:
            for pattern, fault in self._http:
                if pattern not in ("*", biz_type):
                    continue
                if fault.times is not None and fault.used >= fault.times:
                    continue
                fault.used += 1
                return fault
        return None
