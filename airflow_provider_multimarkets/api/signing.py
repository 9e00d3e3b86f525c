"""Open API request signing (SHA1WithRSA), as documented on the MultiMarkets "Sign" page.

Pure logic: no Airflow import, and ``cryptography`` is imported only when a key is parsed, so
importing this module costs nothing at DAG-parse time.

The recipe (https://docs.multimarkets.org/client-api/open-api/readme/sign and the official
signing demo, github.com/CTradeExchange/sign-demo):

1. drop fields whose value is ``null``;
2. compact JSON of the body with keys sorted as Java ``String.compareTo`` sorts them (UTF-16 code
   units, case-sensitive: a Java ``TreeMap``), no whitespace, non-ASCII characters not escaped;
   numbers as a Java server prints them again after parsing: integers as they are, floating-point
   numbers as ``Double.toString`` (``1.0E16``, ``1.0E-5``, ``0.001``, ``100.0``); control characters
   as ``\u001f`` (upper-case hex, as Jackson and fastjson write them);
3. delete every ``"`` character and append the ``timestamp`` header value;
4. RSASSA-PKCS1-v1_5 with SHA-1 over the bytes of that text in the ``sign_charset`` (UTF-8 by
   default; the demo's ``content.getBytes()`` uses the JVM's default charset), standard base64.

The compact JSON of step 2 is also the exact body that is sent (always UTF-8), so the server
cannot see a text other than the one that was signed.

The docs only show flat bodies. For nested objects the same rule is applied recursively (keys of
nested objects sorted, nested nulls dropped); arrays keep their order. Both choices can be changed
with :class:`CanonicalOptions` (connection extras ``sign_sort_nested`` / ``sign_key_order``).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError, MultiMarketsSigningError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

KEY_ORDERS = ("java", "case_insensitive")
#: charsets a Java gateway may sign with (its JVM's default), by their Java names
SIGN_CHARSETS = ("UTF-8", "GBK", "ISO-8859-1")
_PYTHON_CODECS = {"utf-8": "UTF-8", "gbk": "GBK", "iso8859-1": "ISO-8859-1"}
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/]+={0,2}")
#: where Java's GBK differs from Python's ``gbk``: two characters Java encodes and Python does not,
#: one Python encodes and Java does not, and the private use area, which Java maps by its own table
#: (measured on OpenJDK 17 against every character of the Basic Multilingual Plane)
_JAVA_GBK = {"\u20ac": b"\xa2\xe3", "\u2641": b"\xa8\x92"}
_NOT_IN_JAVA_GBK = re.compile("[\u2295\ue000-\uf8ff]")
_JAVA_GBK_ONLY = re.compile("[\u20ac\u2641]")
#: a ``\u00xx`` escape the encoder wrote with lower-case hex (not one after an escaped backslash)
_LOWER_HEX_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u00([0-9a-f]{2})")


def sign_charset(value: object) -> str:
    """The Java name of a signing charset (``UTF-8``, ``GBK``, ``ISO-8859-1``; ``None``/empty: UTF-8).

    Python's aliases of the three are accepted (``utf8``, ``latin-1``, ``gbk``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "UTF-8"
    if not isinstance(value, str):
        raise ValueError(value)
    try:
        name = codecs.lookup(value.strip()).name
    except LookupError:
        raise ValueError(value) from None
    if name not in _PYTHON_CODECS:
        raise ValueError(value)
    return _PYTHON_CODECS[name]


def java_double(value: float) -> str:
    """``value`` as Java's ``Double.toString`` prints it: the shortest digits that read back as
    ``value`` (two when one would do, the nearer of the two-digit forms: ``4.9E-324``); plain from
    10^-3 to 10^7, else ``d.dddE±n``."""
    if not math.isfinite(value):
        raise ValueError(value)
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    if len(digits) == 1:  # Java writes at least two significant digits: the nearer two-digit form
        sign, digits, exponent = Decimal(f"{abs(value):.1e}").as_tuple()
        assert isinstance(exponent, int)
        sign = int(value < 0)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # digits before the decimal point
    if 1e-3 <= abs(value) < 1e7:
        if point <= 0:
            body = "0." + "0" * -point + text
        elif point >= len(text):
            body = text + "0" * (point - len(text)) + ".0"
        else:
            body = text[:point] + "." + text[point:]
        whole, _, fraction = body.partition(".")
        body = f"{whole}.{fraction.rstrip('0') or '0'}"
    else:
        fraction = text[1:].rstrip("0") or "0"
        body = f"{text[0]}.{fraction}E{point - 1}"
    return ("-" if sign else "") + body


@dataclass(frozen=True)
class CanonicalOptions:
    """How bodies are canonicalised where the docs are silent (nested structures, key case)."""

    sort_nested: bool = True
    """Sort the keys of nested objects too (and drop their nulls). The docs only show flat bodies."""
    key_order: str = "java"
    """``java``: Java ``String.compareTo`` (case-sensitive, UTF-16 code units), as the official demo.
    ``case_insensitive``: the order of the vendor's MD5-signing demo ``jsonSort`` helper."""

    def __post_init__(self) -> None:
        if self.key_order not in KEY_ORDERS:
            raise MultiMarketsConfigError(
                f"sign_key_order must be one of {', '.join(KEY_ORDERS)}, got {self.key_order!r}. "
                "Fix the connection extra 'sign_key_order' or remove it to use the documented 'java' order."
            )


DEFAULT_OPTIONS = CanonicalOptions()


def _java_key(key: str) -> bytes:
    # Java compares UTF-16 code units; big-endian UTF-16 bytes compare the same way.
    return key.encode("utf-16-be", "surrogatepass")


def _case_insensitive_key(key: str) -> tuple[bytes, bytes]:
    return (_java_key(key.lower()), _java_key(key))


#: Deeper bodies are refused with a clear error (no documented body nests more than two levels).
MAX_DEPTH = 32


def _prepare(value: Any, options: CanonicalOptions, top: bool, path: str = "", depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise MultiMarketsSigningError(
            f"The request body nests deeper than {MAX_DEPTH} levels (at {path or 'the top'}). Flatten it: no "
            "documented body nests more than two levels."
        )
    if isinstance(value, Mapping):
        for key in value:
            if type(key) is not str:
                raise MultiMarketsSigningError(
                    f"The request body has a key that is not a string: {key!r} ({type(key).__name__}) at "
                    f"{path or 'the top level'}. JSON keys are strings: write it as the documented field name, "
                    'e.g. "symbolId" (a non-string key would be sent changed, or merged with another).'
                )
        if not top and not options.sort_nested:
            return {k: _prepare(v, options, False, f"{path}.{k}", depth + 1) for k, v in value.items()}
        sort_key = _java_key if options.key_order == "java" else _case_insensitive_key
        items = [(k, v) for k, v in value.items() if v is not None]
        items.sort(key=lambda kv: sort_key(kv[0]))
        return {k: _prepare(v, options, False, f"{path}.{k}" if path else k, depth + 1) for k, v in items}
    if isinstance(value, (list, tuple)):
        return [_prepare(v, options, False, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    return value


def canonical_json(payload: Mapping[str, Any] | None, options: CanonicalOptions = DEFAULT_OPTIONS) -> str:
    """The compact, key-sorted, null-free JSON text that is both signed and sent."""
    if payload is None:
        payload = {}
    if not isinstance(payload, Mapping):
        raise MultiMarketsSigningError(
            f"The request body must be a JSON object (a dict), got {type(payload).__name__}. "
            "Pass the payload as a dict of the documented body fields."
        )
    text: str | None = None
    if options.key_order == "java" and _flat_bmp_without_nulls(payload):
        # Fast path (most bodies): the C encoder's sort_keys orders str keys by code point, which for
        # characters of the Basic Multilingual Plane is exactly Java's UTF-16 String.compareTo order.
        try:
            text = _SORTED_ENCODER.encode(payload)
        except (TypeError, ValueError):
            pass  # the general path reports the error
    if text is None:
        try:
            text = _write(_prepare(payload, options, top=True))
        except MultiMarketsSigningError:
            raise
        except (TypeError, ValueError) as exc:
            raise MultiMarketsSigningError(
                f"The request body cannot be encoded as JSON: {exc}. Use only str, int, float, bool, None, "
                "lists and dicts (send decimals as strings, as the API documents for prices)."
            ) from None
        except RecursionError:
            raise MultiMarketsSigningError(
                "The request body is nested too deeply (or refers to itself) to be encoded. Flatten it."
            ) from None
    if "\\u00" in text:  # a control character: upper-case hex, as a Java JSON library writes it
        text = _LOWER_HEX_ESCAPE.sub(lambda m: f"{m.group(1)}\\u00{m.group(2).upper()}", text)
    return _check_utf8(text)


_quote = json.encoder.encode_basestring  # the C quoter: escapes '"', '\\' and control characters only


def _write(value: Any) -> str:
    """Compact JSON of a prepared body: floats as Java prints them, the rest as ``json`` does."""
    if isinstance(value, str):
        return _quote(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
        return java_double(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_quote(k)}:{_write(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_write(v) for v in value) + "]"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _check_utf8(text: str) -> str:
    """The body is signed and sent as UTF-8: a lone surrogate (e.g. from a bad decode) cannot be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MultiMarketsSigningError(
            f"The request body contains a character that is not valid Unicode ({text[exc.start]!r} at "
            f"position {exc.start}, a lone surrogate), so it cannot be signed or sent as UTF-8. Fix that "
            "string (it usually comes from text decoded with errors='surrogateescape')."
        ) from None
    return text


_SCALARS = (str, int, bool)  # floats take the general path: Java prints them differently
# Built once: json.dumps() with non-default options constructs a new encoder on every call.
_SORTED_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True)


def _flat_bmp_without_nulls(payload: Mapping[str, Any]) -> bool:
    for key, value in payload.items():
        if (
            type(key) is not str
            or not isinstance(value, _SCALARS)
            or isinstance(value, float)
            or (not key.isascii() and max(key) > "\uffff")
        ):
            return False
    return True


def string_to_sign(body_json: str, timestamp: int | str) -> str:
    """The documented signing input: the canonical body without any ``"``, then the timestamp."""
    return body_json.replace('"', "") + str(timestamp)


def load_private_key(secret_key: str) -> RSAPrivateKey:
    """Parse the secretKey: base64 PKCS#8 DER as issued by the platform, or a PEM private key.

    Every error names the field and the fix, and never contains the key material.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    secret = (secret_key or "").strip()
    if not secret:
        raise MultiMarketsConfigError(
            "The secretKey (the form's 'secretKey (RSA private key)' field, the connection password) is empty. Paste the privateKey the platform issued "
            "with the apiKey (base64 PKCS#8, starting 'MII...') into that field."
        )
    if "PUBLIC KEY" in secret:
        raise MultiMarketsConfigError(_PUBLIC_KEY_MSG)
    key: Any
    if secret.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(secret.encode("ascii", "replace"), password=None)
        except (ValueError, TypeError):
            raise MultiMarketsConfigError(
                "The secretKey (the form's 'secretKey (RSA private key)' field, the connection password) looks like PEM but could not be parsed as an "
                "unencrypted private key. Export it without a passphrase, or paste the base64 "
                "PKCS#8 privateKey exactly as the platform issued it."
            ) from None
    else:
        compact = "".join(secret.split())
        if _B64_ALPHABET.fullmatch(compact) and len(compact.rstrip("=")) % 4 not in (0, 2, 3):
            raise MultiMarketsConfigError(
                f"The secretKey (the form's 'secretKey (RSA private key)' field, the connection password) is incomplete base64 ({len(compact)} characters); it may be "
                "truncated. Paste the complete privateKey returned by applyApi (a 1024-bit key is about 848 "
                "base64 characters)."
            )
        try:
            der = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise MultiMarketsConfigError(
                "The secretKey (the form's 'secretKey (RSA private key)' field, the connection password) is not valid base64. Paste the privateKey the "
                "platform issued exactly (base64 PKCS#8 DER, no quotes or line prefixes), or a PEM "
                "'-----BEGIN PRIVATE KEY-----' block."
            ) from None
        try:
            key = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError):
            if _is_public_key_der(der):
                raise MultiMarketsConfigError(_PUBLIC_KEY_MSG) from None
            raise MultiMarketsConfigError(
                "The secretKey (the form's 'secretKey (RSA private key)' field, the connection password) is base64 but not a private key "
                f"({len(der)} bytes decoded; it may be truncated). Paste the complete privateKey "
                "returned by applyApi (a 1024-bit key is about 848 base64 characters)."
            ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MultiMarketsConfigError(
            f"The secretKey (the form's 'secretKey (RSA private key)' field, the connection password) is a {type(key).__name__.lstrip('_')}, not an RSA key. "
            "The Open API signs with SHA1WithRSA: use the RSA privateKey the platform issued."
        )
    return key


_PUBLIC_KEY_MSG = (
    "The secretKey (the form's 'secretKey (RSA private key)' field, the connection password) is an RSA public key (the 'pubKey'). Signing needs the "
    "private key: use the 'privateKey' value returned with the apiKey."
)


def _is_public_key_der(der: bytes) -> bool:
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        return False
    return True


def _java_gbk(text: str) -> bytes:
    """``text`` in Java's GBK (``UnicodeEncodeError`` for a character Java's GBK does not encode here)."""
    refused = _NOT_IN_JAVA_GBK.search(text)
    if refused is not None:
        raise UnicodeEncodeError("gbk", text, refused.start(), refused.start() + 1, "not in Java's GBK")
    if _JAVA_GBK_ONLY.search(text) is None:
        return text.encode("gbk")
    out = bytearray()  # the text between the Java-only characters as gbk, those as Java writes them
    position = 0
    for part in _JAVA_GBK_ONLY.split(text):
        try:
            out += part.encode("gbk")
        except UnicodeEncodeError as exc:
            raise UnicodeEncodeError("gbk", text, position + exc.start, position + exc.end, exc.reason) from None
        position += len(part)
        if position < len(text):
            out += _JAVA_GBK[text[position]]
            position += 1
    return bytes(out)


class Signer:
    """Holds a parsed private key and signs strings. Parse once, sign many times.

    ``charset`` is the charset of the signed bytes (:data:`SIGN_CHARSETS`); a text it cannot encode is
    a :class:`MultiMarketsSigningError` naming the ``sign_charset`` extra (Java would sign ``?`` in
    its place, which any other unencodable character would match)."""

    __slots__ = ("_charset", "_codec", "_hash", "_key", "_padding")

    def __init__(self, secret_key: str, charset: str = "UTF-8") -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            self._charset = sign_charset(charset)
        except ValueError:
            raise MultiMarketsConfigError(
                f"The signing charset {str(charset)[:40]!r} is not supported: the connection extra 'sign_charset' "
                f"must be one of {', '.join(SIGN_CHARSETS)}."
            ) from None
        self._codec = {"UTF-8": "utf-8", "GBK": "gbk", "ISO-8859-1": "latin-1"}[self._charset]
        self._key = load_private_key(secret_key)
        self._padding = padding.PKCS1v15()
        self._hash = hashes.SHA1()  # noqa: S303 - SHA1WithRSA is what the API documents

    @property
    def key_size(self) -> int:
        return int(self._key.key_size)

    def public_key_b64(self) -> str:
        """The X.509 SubjectPublicKeyInfo of this key, base64 (what the platform calls pubKey)."""
        from cryptography.hazmat.primitives import serialization

        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")

    @property
    def charset(self) -> str:
        return self._charset

    def encode(self, text: str) -> bytes:
        """The bytes that are signed: ``text`` in the signing charset as Java encodes it, or a clear error."""
        try:
            if self._charset == "GBK":
                return _java_gbk(text)
            return text.encode(self._codec)
        except UnicodeEncodeError as exc:
            char = text[exc.start]
            raise MultiMarketsSigningError(
                f"The request body contains {char!r} (U+{ord(char):04X}, position {exc.start} of the signed text), "
                f"which the signing charset {self._charset} (connection extra 'sign_charset') cannot encode as a Java "
                "gateway does. Java signs '?' for a character its charset lacks, so the signature would not protect "
                "that text (private-use characters Java maps by its own table). Remove the character, or set "
                "'sign_charset' to the gateway's charset (UTF-8 encodes every character). Nothing was sent."
            ) from None

    def sign(self, text: str) -> str:
        raw = self._key.sign(self.encode(text), self._padding, self._hash)
        return base64.b64encode(raw).decode("ascii")

    def sign_body(self, body_json: str, timestamp: int | str) -> str:
        return self.sign(string_to_sign(body_json, timestamp))

    def __repr__(self) -> str:
        return f"<Signer RSA-{self.key_size} {self._charset} key=***>"


def verify(public_key_b64: str, text: str, signature_b64: str) -> bool:
    """Check a SHA1WithRSA signature with an X.509 base64 public key (used by the sandbox)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
        sig = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError, binascii.Error):
        return False
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(sig, text.encode("utf-8"), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    except InvalidSignature:
        return False
    return True
