"""What identifies a push (pure logic): one content key, hashed two ways.

The **content key** of a push is what it says without its ``seqId`` (servers number frames per
connection, so a push delivered again after a reconnect may carry a new one):

* :func:`content_key`: the push's text as received with its ``seqId`` member cut out, when that
  can be done exactly (the fast path, no re-encoding); otherwise :func:`canonical_content`;
* :func:`canonical_content`: its members but ``seqId`` as compact JSON with sorted keys (UTF-8),
  which does not depend on how the server formatted the text.

Two hashes of it, for two uses:

* :func:`push_identity`: the key the push log de-duplicates on, inside one process (a restarted
  writer recomputes it from the file): a fast 96-bit hash of :func:`content_key`, see
  :mod:`..storage.push_log`.
* :func:`event_identity`: the key downstream tasks de-duplicate asset events on, stable across
  processes, hosts, reconnects and triggerer restarts. A trade push that names an order is
  identified by what it says about the order, ``trade:<orderId>:<dealId>:<bizType>:<orderStatus>``
  (a deal id tells two partial fills apart); every other push by ``sha1:`` and the SHA-1 of its
  :func:`canonical_content`. (Python's ``hash`` is salted per process, so it never makes an event
  identity.)
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from zlib import crc32

from airflow_provider_multimarkets.messaging.frames import content_of, field_text, param_map


def canonical_content(frame: dict[str, Any]) -> bytes:
    """A push's members but ``seqId`` as compact JSON with sorted keys, UTF-8 (see the module docs)."""
    return json.dumps(
        {k: v for k, v in frame.items() if k != "seqId"},
        separators=(",", ":"),
        ensure_ascii=False,
        sort_keys=True,
        default=repr,
    ).encode("utf-8", "surrogatepass")


def _text_without_seq(frame: dict[str, Any], data: bytes) -> bytes | None:
    """``data`` (the push's text) with its top-level ``seqId`` member cut out; ``None`` when that
    cannot be done exactly (``seqId`` appears more than once, or as a value other than a number or
    a string)."""
    seq = frame.get("seqId", _MISSING)
    if type(seq) is int:
        member = b'"seqId":%d' % seq
    elif seq is _MISSING:
        return data
    elif type(seq) is str:
        member = b'"seqId":' + json.dumps(seq, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        return None
    if data.count(_SEQ_KEY) == 1:
        at = data.find(member)
        if at >= 0:
            return data[:at] + data[at + len(member) :]
    return None


def content_key(frame: dict[str, Any], data: bytes | None = None) -> bytes:
    """The content key of a push (see the module docs): its text without ``seqId`` when ``data``
    (the text as received, UTF-8) allows it, else :func:`canonical_content`."""
    if data is not None:
        rest = _text_without_seq(frame, data)
        if rest is not None:
            return rest
    return canonical_content(frame)


def push_identity(frame: dict[str, Any], data: bytes | None = None) -> int:
    """The push log's de-duplication key of a push: a 96-bit hash of its :func:`content_key`.

    A 64-bit SipHash (Python's ``hash``) and a CRC-32: keys are compared only inside one process
    (a restarted writer recomputes them from the file), and with the window bounded to
    ``dedup_window`` keys, two distinct pushes share one with a probability under 1e-19. A key
    from the parsed form lives in its own space (around 2**97), apart from the text form (under
    2**95).

    :param data: the frame's text as received, UTF-8 (the fast path); without it, or when its
        ``seqId`` cannot be cut out exactly, the parsed members are used.
    """
    if data is not None:
        seq = frame.get("seqId")
        if type(seq) is int and data.count(_SEQ_KEY) == 1:  # the usual push: _text_without_seq, inline
            member = b'"seqId":%d' % seq
            at = data.find(member)
            if at >= 0:
                cut = data[:at] + data[at + len(member) :]
                return (hash(cut) << 32) ^ crc32(cut)
        rest = _text_without_seq(frame, data)
        if rest is not None:
            return (hash(rest) << 32) ^ crc32(rest)
    parsed = canonical_content(frame)
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
    return "sha1:" + hashlib.sha1(canonical_content(frame)).hexdigest()  # noqa: S324 - a key, not a secret
