"""The signing recipe of the docs (§3) and the computed vectors of the digest (§12)."""

from __future__ import annotations

import base64

import pytest
from conftest import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY

from airflow_provider_multimarkets.api.signing import (
    CanonicalOptions,
    Signer,
    canonical_json,
    load_private_key,
    string_to_sign,
    verify,
)
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError, MultiMarketsSigningError

VECTORS = [
    (
        "{quantity:1,symbol:abc}1589966902000",
        "oXe1qyV/sbayecjhePbj8AKbZqK/fJGWHlFN6duDN2s4861YMQTOZnO51NHFcMd2cCwWvyf4bHZ8dCfK6xYSqGkUWExEkpyfS/Lr9mTUcYMgYxvGsLy2CfspKVUBhXb6GS0xBiOqDeiDiJbty7IBQWVkh5rqwqPDf/06m9YSjNw=",
    ),
    (
        "{companyId:1,customerNo:86001308,lang:zh-CN}1650361143685",
        "vEsU8tOQZ2g1AuoYSgYuMzJWEgV97sBNsQ1Qwso3j841ln6WnqoQ3i7Lcjl9sA5r5OoHzwTYUTlOUcHRpGfEdKoYRiWNoMeN0t2hRxV9wslh4trGCkE5Dvxuh5iU0zUzDDxVooAFWNXrTafMugPA+rLpW3f/F7rwpNMesgk3ftA=",
    ),
    (
        "{}1650361143685",
        "cV8rWwhavBIPogVAFHJErGFK4n8UkMVd2auj7lAI8f2C1B0oY8UtI0JaQnmIcJvRhnAStVPoqU1xr3O7uQx7uKEaWld/nKYTq2xSHNKBsnWRK6WuX0y5OrA40dFxAOPOEWlbdXukUaurCl/3hUisKOTp4ynZyGW2Rw/CsvBS7Ss=",
    ),
]


@pytest.mark.parametrize(("text", "expected"), VECTORS)
def test_digest_vectors(text: str, expected: str) -> None:
    signer = Signer(DEMO_PRIVATE_KEY)
    assert signer.sign(text) == expected
    assert verify(DEMO_PUBLIC_KEY, text, expected)
    assert len(base64.b64decode(expected)) == 128


def test_docs_worked_example_canonical_string() -> None:
    body = {"companyId": 1, "lang": "zh-CN", "customerNo": "86001308"}
    assert string_to_sign(canonical_json(body), 1650361143685) == (
        "{companyId:1,customerNo:86001308,lang:zh-CN}1650361143685"
    )


def test_demo_example_from_body_to_signature() -> None:
    body = {"symbol": "abc", "quantity": 1}
    text = string_to_sign(canonical_json(body), "1589966902000")
    assert text == "{quantity:1,symbol:abc}1589966902000"
    assert Signer(DEMO_PRIVATE_KEY).sign_body(canonical_json(body), 1589966902000) == VECTORS[0][1]


def test_empty_and_none_body() -> None:
    assert canonical_json({}) == "{}"
    assert canonical_json(None) == "{}"
    assert Signer(DEMO_PRIVATE_KEY).sign_body(canonical_json(None), 1650361143685) == VECTORS[2][1]


def test_nulls_dropped_no_whitespace_non_ascii_kept() -> None:
    body = {"b": None, "a": "价格 1", "c": 1.5, "d": True, "e": [3, None, {"z": 1, "y": None}]}
    assert canonical_json(body) == '{"a":"价格 1","c":1.5,"d":true,"e":[3,null,{"z":1}]}'


def test_java_compare_to_order_is_case_sensitive_and_utf16() -> None:
    body = {"b": 1, "B": 2, "a": 3, "_": 4, "\uffff": 5, "\U00010000": 6}
    # Java compareTo: by UTF-16 code unit. 'B'(0x42) < '_'(0x5f) < 'a' < 'b' < U+10000 (D800...) < U+FFFF
    assert list(__import__("json").loads(canonical_json(body))) == ["B", "_", "a", "b", "\U00010000", "\uffff"]


def test_nested_objects_sorted_by_default_and_configurable() -> None:
    body = {"outer": {"b": 1, "a": {"d": 1, "c": 2}}}
    assert canonical_json(body) == '{"outer":{"a":{"c":2,"d":1},"b":1}}'
    flat = CanonicalOptions(sort_nested=False)
    assert canonical_json(body, flat) == '{"outer":{"b":1,"a":{"d":1,"c":2}}}'


def test_case_insensitive_order_option() -> None:
    body = {"b": 1, "B": 2, "a": 3}
    assert canonical_json(body, CanonicalOptions(key_order="case_insensitive")) == '{"a":3,"B":2,"b":1}'
    with pytest.raises(MultiMarketsConfigError, match="sign_key_order"):
        CanonicalOptions(key_order="alphabetical")


def test_quotes_inside_values_are_stripped_too() -> None:
    assert string_to_sign(canonical_json({"remark": 'say "hi"'}), 1) == "{remark:say \\hi\\}1"


def test_unsignable_bodies_have_clear_errors() -> None:
    with pytest.raises(MultiMarketsSigningError, match="must be a JSON object"):
        canonical_json([1, 2])  # type: ignore[arg-type]
    with pytest.raises(MultiMarketsSigningError, match="send decimals as strings"):
        canonical_json({"price": object()})
    with pytest.raises(MultiMarketsSigningError):
        canonical_json({"price": float("nan")})


def test_pem_and_der_give_the_same_signature() -> None:
    from cryptography.hazmat.primitives import serialization

    key = load_private_key(DEMO_PRIVATE_KEY)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    wrapped = "\n".join(DEMO_PRIVATE_KEY[i : i + 64] for i in range(0, len(DEMO_PRIVATE_KEY), 64))
    for secret in (pem, pkcs1, wrapped, f"  {DEMO_PRIVATE_KEY}\n"):
        assert Signer(secret).sign(VECTORS[1][0]) == VECTORS[1][1]


def _ec_key_b64() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return base64.b64encode(der).decode()


TRUNCATED_DOCS_KEY = "MIICeAIBADANBgkqhkiG9w0BAQEFAASCAmIwggJeAgEAAoGBAI5WJjsBgtiuQQZDs5qe8LBDUm2ZSa4gTBJ"


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("", "is empty"),
        ("not base64 at all!!", "not valid base64"),
        (DEMO_PUBLIC_KEY, "public key"),
        ("-----BEGIN PUBLIC KEY-----\nMIGf\n-----END PUBLIC KEY-----", "public key"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "looks like PEM"),
        (TRUNCATED_DOCS_KEY, "may be truncated"),
        ("ec", "not an RSA key"),
    ],
)
def test_bad_keys_name_the_field_and_fix_without_the_secret(secret: str, expected: str) -> None:
    if secret == "ec":
        secret = _ec_key_b64()
    with pytest.raises(MultiMarketsConfigError) as info:
        load_private_key(secret)
    message = str(info.value)
    assert expected in message
    assert "secretKey (RSA private key)' field" in message
    if len(secret) > 8:
        assert secret not in message
        assert secret[10:40] not in message


def test_signer_repr_hides_the_key() -> None:
    signer = Signer(DEMO_PRIVATE_KEY)
    assert "***" in repr(signer)
    assert DEMO_PRIVATE_KEY[:20] not in repr(signer)
    assert signer.public_key_b64() == DEMO_PUBLIC_KEY


def test_verify_rejects_changed_text_and_garbage() -> None:
    text, sig = VECTORS[0]
    assert not verify(DEMO_PUBLIC_KEY, text.replace("abc", "abd"), sig)
    assert not verify(DEMO_PUBLIC_KEY, text, "!!!")
    assert not verify("garbage", text, sig)
