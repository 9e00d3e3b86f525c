"""How message frames are decoded and parsed: one JSON parser for the client, the push log and the reports (pure logic)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

_loads: Callable[[str | bytes], Any] | None = None


def frame_loads() -> Callable[[str | bytes], Any]:
    """The JSON parser of frames: ``orjson`` when it is installed (the ``fast`` extra; about 2.7x
    faster on a trade push), else the standard library. A frame ``orjson`` refuses (``NaN``,
    integers over 64 bits, lone surrogates) goes to the standard library, so both accept the same
    frames. One difference remains: ``orjson`` reads an integer beyond 64 bits as a float. The log
    holds every push's text as received, so only the parsed copies (counts, inline results) see
    it. ``MULTIMARKETS_FAST_JSON=0`` turns ``orjson`` off. Every reader of pushes (the client, the
    log's restore, the reports) uses this one parser, so their counts agree."""
    global _loads
    if _loads is not None:
        return _loads
    fast = None
    if os.environ.get("MULTIMARKETS_FAST_JSON", "1").strip().lower() not in ("0", "false", "no", "off"):
        try:
            import orjson
        except ImportError:
            pass
        else:
            fast, fast_error = orjson.loads, orjson.JSONDecodeError
    if fast is None:
        _loads = _bounded(json.loads)
        return _loads
    slow = _bounded(json.loads)

    def loads(text: str | bytes) -> Any:
        try:
            return fast(text)
        except fast_error:  # orjson refuses nesting over 1024 levels too: the same answer below
            return slow(text)

    _loads = loads
    return loads


def _bounded(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse``, with a frame nested too deep for the interpreter's stack a ``ValueError`` (a
    malformed frame) instead of a ``RecursionError``, however deep the caller's own stack is."""

    def loads(text: Any) -> Any:
        try:
            return parse(text)
        except RecursionError:
            raise ValueError("the frame is nested too deeply to parse") from None

    loads.__wrapped__ = parse  # type: ignore[attr-defined]
    return loads


_bytes_loads: Callable[[bytes], Any] | None = None


def bytes_loads() -> Callable[[bytes], Any]:
    """The parser of a text frame's bytes as received: strict UTF-8 JSON, or ``ValueError``.

    ``orjson.loads`` when it is on (see :func:`frame_loads`), which checks the UTF-8 itself; else
    a strict UTF-8 decode and ``json.loads`` (``UnicodeDecodeError`` is a ``ValueError``). What it
    refuses (a BOM, ``NaN``, integers over 64 bits, lone surrogates) the client takes through
    :func:`decode_frame` and :func:`frame_loads`, so both parsers accept the same frames.
    """
    global _bytes_loads
    if _bytes_loads is None:
        loads = frame_loads()
        if loads is json.loads:
            decoder = _bounded(json.JSONDecoder().decode)

            def strict(data: bytes) -> Any:
                return decoder(data.decode("utf-8"))

            _bytes_loads = strict
        else:
            import orjson

            _bytes_loads = orjson.loads
    return _bytes_loads


def decode_frame(raw: str | bytes) -> str | None:
    """The text of a frame: binary frames are decoded (UTF-8, with or without BOM; UTF-16/32 with BOM)."""
    if isinstance(raw, str):
        return raw[1:] if raw.startswith("\ufeff") else raw
    if raw.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    elif raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        encoding = "utf-32"
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        encoding = "utf-8"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return None


#: the deepest nesting of objects and arrays a frame may have (a push is four levels deep): both
#: parsers, and everything that walks a parsed frame, stay far from the interpreter's stack limit
MAX_FRAME_DEPTH = 256


def too_deep(data: str | bytes, limit: int = MAX_FRAME_DEPTH) -> bool:
    """Whether the JSON text nests objects and arrays more than ``limit`` levels deep.

    Almost every frame has fewer brackets than ``limit`` in all (two C-level counts decide);
    only then are they followed, outside strings, to the deepest level.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return False
