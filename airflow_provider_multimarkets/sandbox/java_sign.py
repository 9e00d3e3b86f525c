"""How a Java gateway checks an Open API signature, modelled for the sandbox apart from the client's signing code.

The vendor's sign demo (``CTradeExchange/sign-demo``, ``RSASignature``) signs and verifies a text
with ``SHA1WithRSA`` over ``content.getBytes()``: the JVM's default charset. What the server signs
again is not published; the sandbox does what a Java server built on that demo would do with the
body it received, with nothing taken from the client:

1. parse the body as a Java JSON library does (Jackson: objects keep the order they came in,
   integers stay integers of any size, any number with a fraction or exponent becomes a
   ``double``);
2. put the top-level fields in a ``TreeMap`` (keys ordered by ``String.compareTo``: UTF-16 code
   units), leaving out those whose value is ``null``;
3. write it as compact JSON again: strings escaped as Jackson writes them (``\\"``, ``\\\\``,
   ``\\b \\f \\n \\r \\t``, other control characters as ``\\u00XX`` with upper-case hex), doubles as
   ``Double.toString`` prints them (``1.0E16``, ``1.0E-5``, ``100.0``), nested objects in the order
   they came, their ``null`` members kept;
4. remove every ``"`` and append the ``timestamp`` header;
5. take ``getBytes(charset)`` (a character the charset cannot encode becomes ``?``, as in Java) and
   verify the ``signature`` header with the apiKey's public key.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from functools import lru_cache
from typing import Any

#: the charsets a JVM may have as its default, by their Java names, with the Python codec of each
CHARSETS = {"UTF-8": "utf-8", "GBK": "gbk", "ISO-8859-1": "latin-1"}
_STANDARD_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_HEX = "0123456789ABCDEF"


class JavaJsonError(ValueError):
    """The body is not JSON a Java server could read (or holds a number beyond a double)."""


def _reject_constant(name: str) -> Any:
    raise JavaJsonError(f"{name} is not JSON")


def _double(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # Jackson would read Infinity, and the client could not have signed it
        raise JavaJsonError(f"the number {text[:40]} is beyond the range of a double")
    return value


def parse(text: str) -> Any:
    """The body as a Java JSON library reads it."""
    try:
        return json.loads(text, parse_float=_double, parse_constant=_reject_constant)
    except RecursionError:
        raise JavaJsonError("the body nests too deeply") from None


def _utf16_units(key: str) -> tuple[int, ...]:
    raw = key.encode("utf-16-be", "surrogatepass")
    return tuple(raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2))


def java_string(value: str) -> str:
    out = ['"']
    for char in value:
        if char in _STANDARD_ESCAPES:
            out.append(_STANDARD_ESCAPES[char])
        elif char < " ":
            code = ord(char)
            out.append("\\u00" + _HEX[code >> 4] + _HEX[code & 15])
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def double_to_string(value: float) -> str:
    """Java's ``Double.toString``: the fewest significant digits that read back as ``value``, two at
    least (the nearer two-digit form, so ``Double.MIN_VALUE`` is ``4.9E-324``); plain notation from
    10^-3 up to 10^7, ``d.ddddE±n`` outside it."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0.0:
        return "-0.0" if str(value).startswith("-") else "0.0"
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    for precision in range(2, 18):  # the shortest scientific form (two digits at least) that reads back
        digits_exp = f"{magnitude:.{precision - 1}e}"
        if float(digits_exp) == magnitude:
            break
        # the form of this length on the value's other side may read back when the nearer one does not:
        # an exact tie rounded to even, or a power of two (2**-24 = 5.9604644775390625E-8 reads back from
        # 5.960464477539063E-8, not from 5.960464477539062E-8)
        other = _other_side(digits_exp, magnitude, precision)
        if float(other) == magnitude:
            digits_exp = other
            break
    mantissa, exponent_text = digits_exp.split("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    exponent = int(exponent_text)
    if 1e-3 <= magnitude < 1e7:
        if exponent < 0:
            text = "0." + "0" * (-exponent - 1) + digits
        else:
            whole = digits[: exponent + 1].ljust(exponent + 1, "0")
            fraction = digits[exponent + 1 :] or "0"
            text = f"{whole}.{fraction}"
    else:
        text = f"{digits[0]}.{digits[1:] or '0'}E{exponent}"
    return sign + text


def _other_side(digits_exp: str, magnitude: float, precision: int) -> str:
    """The ``precision``-digit scientific form one unit in the last place from ``digits_exp``, on the other
    side of ``magnitude``."""
    from decimal import Decimal

    mantissa_text, exponent_text = digits_exp.split("e")
    step = Decimal(1).scaleb(1 - precision)
    mantissa = Decimal(mantissa_text) + (step if Decimal(digits_exp) < Decimal(magnitude) else -step)
    exponent = int(exponent_text)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    elif mantissa < 1:
        mantissa, exponent = mantissa * 10, exponent - 1
    return f"{mantissa:.{precision - 1}f}e{exponent}"


def _write(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return double_to_string(value)
    if isinstance(value, str):
        return java_string(value)
    if isinstance(value, list):
        return "[" + ",".join(_write(v) for v in value) + "]"
    if isinstance(value, dict):  # a nested object keeps the order it came in, nulls included
        return "{" + ",".join(java_string(k) + ":" + _write(v) for k, v in value.items()) + "}"
    raise JavaJsonError(f"cannot write {type(value).__name__}")


def canonical(body: dict[str, Any]) -> str:
    """The body as the server writes it again: a ``TreeMap`` of its non-null top-level fields."""
    fields = sorted(((k, v) for k, v in body.items() if v is not None), key=lambda kv: _utf16_units(kv[0]))
    try:
        return "{" + ",".join(java_string(k) + ":" + _write(v) for k, v in fields) + "}"
    except RecursionError:
        raise JavaJsonError("the body nests too deeply") from None


def text_to_sign(body: dict[str, Any], timestamp: str) -> str:
    return canonical(body).replace('"', "") + timestamp


#: Java's GBK, where it is not Python's gbk (OpenJDK 17, every BMP character compared): the euro sign
#: and U+2641 are in Java's table, U+2295 is not; the private use area is Java's own (modelled as ``?``)
_GBK_JAVA = {"\u20ac": b"\xa2\xe3", "\u2641": b"\xa8\x92", "\u2295": b"?"}


def java_bytes(text: str, charset: str) -> bytes:
    """``String.getBytes(charset)``: unencodable characters (and lone surrogates) become ``?``."""
    if charset != "GBK" or not any(c in _GBK_JAVA or "\ue000" <= c <= "\uf8ff" for c in text):
        return text.encode(CHARSETS[charset], errors="replace")
    out = b""
    for char in text:
        if char in _GBK_JAVA:
            out += _GBK_JAVA[char]
        elif "\ue000" <= char <= "\uf8ff":
            out += b"?"
        else:
            out += char.encode("gbk", errors="replace")
    return out


@lru_cache(maxsize=64)
def _public_key(public_key_b64: str) -> Any:
    """The apiKey's public key, parsed once (``None`` if it is not an RSA key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
    except (ValueError, TypeError, binascii.Error):
        return None
    return key if isinstance(key, rsa.RSAPublicKey) else None


def verify(public_key_b64: str, signed: bytes, signature_b64: str) -> bool:
    """``RSASignature.doCheck``: SHA1WithRSA over ``signed`` with an X.509 base64 public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = _public_key(public_key_b64)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError, binascii.Error):
        return False
    if key is None:
        return False
    try:
        key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - the documented algorithm
    except InvalidSignature:
        return False
    return True
