"""Message WebSocket frames (pure logic: no Airflow, no network): the client's frames and the server's frame kinds.

Client frames follow the documented shape (``head``, ``device``, ``seqId``, ``trace``, optional
``data``). Server pushes carry ``msgCode``, ``timestamp``, ``trace``, ``seqId`` and ``content``.

Frame kinds, as the vendor's own H5 socket client handles them (``CTradeExchange/trade-h5``,
``src/plugins/socket/msgSocketEvent.js`` and ``socket.js``; the Open API pages document only
``trade``):

* ``subscribe_success`` answers ``login`` (logged in); ``subscribe_fail`` refuses it (the token is
  invalid or expired). Neither is a push.
* ``notice``: ``content.updateType`` 0 none, 1 refresh positions, 2 refresh pending orders,
  3 refresh funds, 4 log out (kick-out), 5 positions and orders, 6 funds and orders. A notice is a
  push, except updateType 4, which ends the session.
* ``disconnect``: the session was taken over (logged in elsewhere); ``UserForceLogoutRet``: a
  forced log-out. Both end the session.
* Text frames ``f(...)`` (trade type 1) and ``g(...)`` (trade type 2): account and position
  profit and loss, ``f(profitLoss,occupyMargin,availableMargin,marginRadio,netWorth,balance);
  (positionId,profitLoss[,previewStopPrice]);...``. Snapshots, each superseding the last: they are
  parsed and counted as their own kind (:func:`parse_pnl_frame`), not written as pushes.

Duplicates: after a reconnect a server may send again the pushes it was delivering when the
connection dropped. The push log recognises them by the push's content identity (see
:mod:`..storage.push_log`), never by ``seqId``/``trace``, which are per connection.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from airflow_provider_multimarkets.messaging.codec import frame_loads

CLIENT_MSG_TYPES = ("login", "subscribe_asset", "cancel_subscribe_asset", "ping", "logout")
#: Frames that answer a client frame rather than push data (``pong`` answers ``ping``,
#: ``subscribe_success`` answers ``login`` in the vendor client).
ACK_CODES = frozenset(
    {"login", "subscribe_success", "subscribe_asset", "cancel_subscribe_asset", "logout", "pong", "error"}
)
#: The answer to a refused ``login`` (vendor client: the token is no longer valid).
LOGIN_REFUSED_CODE = "subscribe_fail"
#: Frames that end the session on the server side (vendor client: forced logout).
FORCED_LOGOUT_CODES = frozenset({"UserForceLogoutRet"})
#: The session was taken over by another login with the same credentials (vendor client).
DISPLACED_CODE = "disconnect"
NOTICE_CODE = "notice"
NOTICE_UPDATE_TYPES = {
    0: "no action",
    1: "refresh positions",
    2: "refresh pending orders",
    3: "refresh funds",
    4: "log out",
    5: "refresh positions and pending orders",
    6: "refresh funds and pending orders",
}
NOTICE_LOGOUT = 4
#: Every msgCode that is not simply a push: frames with any other msgCode are staged at once (the hot path).
CONTROL_CODES = ACK_CODES | FORCED_LOGOUT_CODES | {LOGIN_REFUSED_CODE, DISPLACED_CODE, NOTICE_CODE}
#: Text frames of account and position profit and loss, by their first two characters: the trade type.
PNL_PREFIXES = {"f(": 1, "g(": 2}
PNL_ACCOUNT_FIELDS = ("profitLoss", "occupyMargin", "availableMargin", "marginRadio", "netWorth", "balance")
#: positions kept of one P&L frame in a summary (the count is always reported)
PNL_MAX_POSITIONS = 100


def build_frame(
    msg_type: str,
    token: str,
    seq_id: int,
    *,
    lang: str = "en-US",
    device: int = 1,
    data: dict[str, Any] | None = None,
    now_ms: int | None = None,
) -> str:
    """One client frame as documented (Msg Subscribe page), compact JSON."""
    if msg_type not in CLIENT_MSG_TYPES:
        raise ValueError(f"unknown msgType {msg_type!r}")
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    frame: dict[str, Any] = {
        "head": {"msgType": msg_type, "token": token, "sendTime": ms, "lang": lang},
        "device": device,
        "seqId": seq_id,
        "trace": f"x-{ms}-{seq_id}",
    }
    if data is not None:
        frame["data"] = data
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def parse_server_frame(text: str | bytes) -> dict[str, Any] | None:
    """The frame as a dict, or ``None`` when it is not a JSON object (malformed)."""
    try:
        frame = frame_loads()(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return frame if isinstance(frame, dict) else None


def ack_code(frame: dict[str, Any]) -> str | None:
    content = frame.get("content")
    if isinstance(content, dict) and "code" in content:
        return str(content["code"])
    return None


@dataclass(frozen=True)
class SessionEnd:
    """A frame after which the server no longer serves this session: why, and whether the token is at fault."""

    auth: bool
    cause: str
    refused: bool = False
    """the login itself was refused (the token), rather than a session ended later"""


def content_of(frame: dict[str, Any]) -> dict[str, Any]:
    """A frame's ``content`` object (empty when it has none)."""
    content = frame.get("content")
    return content if isinstance(content, dict) else {}


def _detail(frame: dict[str, Any]) -> str:
    content = content_of(frame)
    parts = [str(content[k])[:200] for k in ("code", "msg") if content.get(k) not in (None, "")]
    return f" ({': '.join(parts)})" if parts else ""


def notice_update_type(frame: dict[str, Any]) -> int | None:
    """``content.updateType`` of a ``notice`` as an int (the vendor client compares numbers), else ``None``."""
    value = content_of(frame).get("updateType")
    if type(value) is int:
        return value
    if type(value) is str and value.strip().isdigit():
        return int(value)
    return None


def session_end(frame: dict[str, Any]) -> SessionEnd | None:
    """What ends the session, if this frame does: a refused login, a log-out notice, a forced
    log-out, or the session taken over elsewhere. ``None`` for every other frame."""
    code = frame.get("msgCode")
    if type(code) is not str:
        return None
    if code == LOGIN_REFUSED_CODE or (code == "login" and ack_code(frame) not in (None, "0")):
        return SessionEnd(True, f"{code}{_detail(frame)}", refused=True)
    if code in FORCED_LOGOUT_CODES:
        return SessionEnd(True, f"the platform logged this session out: {code}{_detail(frame)}")
    if code == NOTICE_CODE and notice_update_type(frame) == NOTICE_LOGOUT:
        return SessionEnd(True, "the platform logged this session out (notice, updateType 4: log out)")
    if code == DISPLACED_CODE:
        return SessionEnd(
            False,
            "the platform ended this session because the same credentials logged in elsewhere (disconnect). "
            "Another subscription or client uses this msg token: give each subscription its own token "
            "(one GetMsgTokenOperator per subscription)",
        )
    return None


def is_auth_failure(frame: dict[str, Any]) -> bool:
    """A refused login, or a log-out by the platform (the token is no longer usable)."""
    end = session_end(frame)
    return end is not None and end.auth


def is_push(frame: dict[str, Any]) -> bool:
    """Data, not an answer to a client frame nor a frame that ends the session. A ``msgCode`` that is
    not a string is kept as a push (data)."""
    code = frame.get("msgCode")
    if type(code) is not str:
        return True
    if code == NOTICE_CODE:
        return notice_update_type(frame) != NOTICE_LOGOUT
    return code not in CONTROL_CODES


def parse_pnl_frame(text: str) -> dict[str, Any] | None:
    """An ``f(...)``/``g(...)`` profit-and-loss text frame as a dict, or ``None`` when malformed.

    ``{"tradeType": 1, "account": {"profitLoss": "...", ...}, "positions": [{"positionId": "...",
    "profitLoss": "...", "previewStopPrice": "..."}]}``. Values stay strings, as sent (no float
    rounding); ``previewStopPrice`` is present only when sent.
    """
    trade_type = PNL_PREFIXES.get(text[:2])
    if trade_type is None:
        return None
    parts = text.rstrip().rstrip(";").split(";")
    head = parts[0]
    if not head.endswith(")"):
        return None
    values = head[2:-1].split(",")
    if len(values) != len(PNL_ACCOUNT_FIELDS) or not all(_is_number(v) for v in values):
        return None
    positions = []
    for part in parts[1:]:
        part = part.strip()
        if not (part.startswith("(") and part.endswith(")")):
            return None
        fields = part[1:-1].split(",")
        if len(fields) not in (2, 3) or not fields[0].strip() or not all(_is_number(v) for v in fields[1:]):
            return None
        position = {"positionId": fields[0].strip(), "profitLoss": fields[1].strip()}
        if len(fields) == 3:
            position["previewStopPrice"] = fields[2].strip()
        positions.append(position)
    return {
        "tradeType": trade_type,
        "account": {name: value.strip() for name, value in zip(PNL_ACCOUNT_FIELDS, values, strict=True)},
        "positions": positions,
    }


def _is_number(value: str) -> bool:
    value = value.strip()
    if not value or value.lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def param_map(frame: dict[str, Any]) -> dict[str, Any]:
    """A push's ``content.paramMap`` object (empty when it has none)."""
    params = content_of(frame).get("paramMap")
    return params if isinstance(params, dict) else {}


def field_text(value: Any) -> str | None:
    """A scalar field as text (pushes send numbers as strings or numbers); ``None`` for objects and arrays."""
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)
