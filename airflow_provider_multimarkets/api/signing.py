"""Open API request signing (SHA1WithRSA), as documented on the MultiMarkets "Sign" page.

Pure logic: no Airflow import, and ``cryptography`` is imported only when a key is parsed, so
importing this module costs nothing at DAG-parse time.

The recipe (https://docs.multimarkets.org/client-api/open-api/readme/sign and the official
signing demo, github.com/CTradeExchange/sign-demo):

1. drop fields whose value is ``null``;
2. compact JSON of the body with keys sorted as Java ``String.compareTo`` sorts them (UTF-16 code
   units, case-sensitive), no whitespace, non-ASCII characters not escaped;
3. delete every ``"`` character and append the ``timestamp`` header value;
4. RSASSA-PKCS1-v1_5 with SHA-1 over the UTF-8 bytes, standard base64.

The compact JSON of step 2 is also the exact body that is sent, so the server cannot see a text
other than the one that was signed.

The docs only show flat bodies. For nested objects the same rule is applied recursively (keys of
nested objects sorted, nested nulls dropped); arrays keep their order. Both choices can be changed
with :class:`CanonicalOptions` (connection extras ``sign_sort_nested`` / ``sign_key_order``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError, MultiMarketsSigningError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

KEY_ORDERS = ("java", "case_insensitive")
_B64_ALPHABET = re.compile(r"[A-Za-z0-9+/]+={0,2}")


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
    if options.key_order == "java" and _flat_bmp_without_nulls(payload):
        # Fast path (most bodies): the C encoder's sort_keys orders str keys by code point, which for
        # characters of the Basic Multilingual Plane is exactly Java's UTF-16 String.compareTo order.
        try:
            return _check_utf8(_SORTED_ENCODER.encode(payload))
        except (TypeError, ValueError):
            pass  # the general path reports the error
    try:
        text = _ENCODER.encode(_prepare(payload, options, top=True))
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
    return _check_utf8(text)


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


_SCALARS = (str, int, float, bool)
# Built once: json.dumps() with non-default options constructs a new encoder on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_SORTED_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True)


def _flat_bmp_without_nulls(payload: Mapping[str, Any]) -> bool:
    for key, value in payload.items():
        if type(key) is not str or not isinstance(value, _SCALARS) or (not key.isascii() and max(key) > "\uffff"):
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


class Signer:
    """Holds a parsed private key and signs strings. Parse once, sign many times."""

    __slots__ = ("_hash", "_key", "_padding")

    def __init__(self, secret_key: str) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

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

    def sign(self, text: str) -> str:
        raw = self._key.sign(text.encode("utf-8"), self._padding, self._hash)
        return base64.b64encode(raw).decode("ascii")

    def sign_body(self, body_json: str, timestamp: int | str) -> str:
        return self.sign(string_to_sign(body_json, timestamp))

    def __repr__(self) -> str:
        return f"<Signer RSA-{self.key_size} key=***>"


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
