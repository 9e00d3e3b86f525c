"""What identifies a push (pure logic): the content key the push log de-duplicates on, and the event identity.

* :func:`push_identity`: the push's text as received without its ``seqId`` (servers number frames
  per connection), as a 96-bit hash. Two pushes share it only when they are the same frame sent
  again; see :mod:`..storage.push_log`.
* :func:`event_identity`: the key downstream tasks de-duplicate asset events on. A trade push that
  names an order is identified by what it says about the order,
  ``trade:<orderId>:<dealId>:<bizType>:<orderStatus>`` (a deal id tells two partial fills apart);
  every other push by a SHA-1 of its canonical JSON without ``seqId``. Both are stable across
  processes, reconnects and triggerer restarts.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from zlib import crc32

from airflow_provider_multimarkets.messaging.frames import content_of, field_text, param_map


def push_identity(frame: dict[str, Any], data: bytes | None = None) -> int:
    """The de-duplication key of a push (see the module docs): a 96-bit integer.

    A 64-bit SipHash (Python's ``hash``) and a CRC-32 of the text without its ``seqId`` member:
    keys are compared only inside one process (a restarted writer recomputes them from the file),
    and with the window bounded to ``dedup_window`` keys, two distinct pushes share one with a
    probability under 1e-19.

    :param data: the frame's text as received, UTF-8 (the fast path); without it, or when its
        ``seqId`` cannot be cut out exactly, the parsed members are used.
    """
    if data is not None:
        seq = frame.get("seqId", _MISSING)
        if type(seq) is int:
            member = b'"seqId":%d' % seq
        elif seq is _MISSING:
            return (hash(data) << 32) ^ crc32(data)
        elif type(seq) is str:
            member = b'"seqId":' + json.dumps(seq, ensure_ascii=False).encode("utf-8", "surrogatepass")
        else:
            member = b""
        if member and data.count(_SEQ_KEY) == 1:
            at = data.find(member)
            if at >= 0:
                rest = data[:at] + data[at + len(member) :]
                return (hash(rest) << 32) ^ crc32(rest)
    parsed = json.dumps(
        {k: v for k, v in frame.items() if k != "seqId"},
        separators=(",", ":"),
        ensure_ascii=False,
        sort_keys=True,
        default=repr,
    ).encode("utf-8", "surrogatepass")
    # the parsed form lives in its own key space (around 2**97), apart from the text form (under 2**95)
    return _PARSED_SPACE + ((hash(parsed) << 32) ^ crc32(parsed))


_PARSED_SPACE = 1 << 97


_SEQ_KEY = b'"seqId"'


_MISSING = object()


_SAFE_KEY = re.compile(r"[^A-Za-z0-9_.:-]")


def event_identity(frame: dict[str, Any]) -> str:
    """The key downstream tasks de-duplicate on (see the module docs)."""
    params = param_map(frame)
    order_id = field_text(params.get("orderId"))
    if frame.get("msgCode") == "trade" and order_id:
        parts = (
            order_id,
            field_text(params.get("dealId")) or "-",
            field_text(content_of(frame).get("bizType")) or "-",
            field_text(params.get("orderStatus")) or "-",
        )
        return _SAFE_KEY.sub("_", "trade:" + ":".join(parts))[:255]
    canonical = json.dumps(
        {k: v for k, v in frame.items() if k != "seqId"},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=repr,
    )
    return "sha1:" + hashlib.sha1(canonical.encode("utf-8", "surrogatepass")).hexdigest()  # noqa: S324 - a key
