"""The signature as a Java gateway checks it: the charset table against the vendor's demo, and where our
client's canonical form and a Java server's would disagree, with what we chose.

``tests/data/java_sign_vectors.json`` holds what the vendor's sign demo (``RSASignature.sign``) signed
on OpenJDK 17 for the same texts under ``-Dfile.encoding`` UTF-8, GBK and ISO-8859-1, and what Java's
``Double.toString`` prints (our data, produced once; the demo is not in this repository).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import DEMO_PRIVATE_KEY, DEMO_PUBLIC_KEY, set_connection

from airflow_provider_multimarkets.api.settings import settings_from_connection
from airflow_provider_multimarkets.api.signing import (
    CanonicalOptions,
    Signer,
    canonical_json,
    java_double,
    string_to_sign,
)
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsConfigError,
    MultiMarketsSigningError,
)
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.sandbox import SandboxConfig, java_sign

VECTORS = json.loads((Path(__file__).parent / "data" / "java_sign_vectors.json").read_text(encoding="utf-8"))
SYMBOLS = "config.app.AppSymbolDubboService.getSymbolBaseList"


@pytest.mark.parametrize("case", VECTORS["signatures"], ids=lambda c: f"{c['charset']}-{c['what'][:24]}")
def test_the_charset_table_against_the_vendors_java_demo(case: dict[str, Any]) -> None:
    """Same body, same charset: our client signs what the Java demo signs, or refuses where Java would
    sign '?' for a character its charset lacks; the sandbox's Java model verifies the demo's signature."""
    text = case["text"]
    assert string_to_sign(canonical_json(case["body"]), case["timestamp"]) == text  # the client's text
    server_text = java_sign.text_to_sign(java_sign.parse(canonical_json(case["body"])), str(case["timestamp"]))
    assert server_text == text  # the sandbox's Java canonical form of the body as sent
    signed = java_sign.java_bytes(text, case["charset"])
    assert signed.hex() == case["java_signed_bytes"]  # the bytes the JVM signed, '?' included
    assert java_sign.verify(DEMO_PUBLIC_KEY, signed, case["java_signature"])
    signer = Signer(DEMO_PRIVATE_KEY, case["charset"])
    if b"?" in signed and "?" not in text:  # Java replaced a character: we refuse to sign it
        with pytest.raises(MultiMarketsSigningError, match="sign_charset"):
            signer.sign(text)
    else:
        assert signer.sign(text) == case["java_signature"]


def test_the_table_covers_what_it_must() -> None:
    outcomes = {}
    for case in VECTORS["signatures"]:
        signed = bytes.fromhex(case["java_signed_bytes"])
        outcomes[(case["what"], case["charset"])] = "refused" if b"?" in signed and "?" not in case["text"] else "equal"
    assert outcomes[("Chinese", "UTF-8")] == outcomes[("Chinese", "GBK")] == "equal"
    assert outcomes[("Chinese", "ISO-8859-1")] == "refused"
    assert outcomes[("euro sign, em dash, middle dot", "GBK")] == "equal"  # Java's GBK has the euro, Python's not
    assert outcomes[("an emoji (outside the BMP)", "GBK")] == "refused"
    utf8 = {c["java_signature"] for c in VECTORS["signatures"] if c["what"] == "Chinese"}
    assert len(utf8) == 3  # three charsets, three different signatures of one body


@pytest.mark.parametrize("item", VECTORS["double_to_string"], ids=lambda i: repr(i["value"]))
def test_doubles_print_as_java_prints_them(item: dict[str, Any]) -> None:
    assert java_double(item["value"]) == item["java"]  # the client
    assert java_sign.double_to_string(item["value"]) == item["java"]  # the sandbox's own code


# ---- where the two would disagree: tested, and what we chose ------------------------------------------------


def _raw(sandbox: Any, body_text: str, signed_text: str, *, biz: str = SYMBOLS) -> str:
    """Post ``body_text`` signed over ``signed_text`` (a hand-made signature, not our client's)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key: Any = serialization.load_der_private_key(base64.b64decode(sandbox.private_key), password=None)
    ts = int(time.time() * 1000)
    signature = base64.b64encode(key.sign((signed_text + str(ts)).encode("utf-8"), padding.PKCS1v15(), hashes.SHA1()))
    headers = {
        "companyId": str(sandbox.company_id),
        "trace": f"x-{ts}-j",
        "timestamp": str(ts),
        "apiKey": sandbox.api_key,
        "signature": signature.decode(),
        "Content-Type": "application/json",
    }
    answer = requests.post(f"{sandbox.base_url}/global/{biz}", data=body_text.encode(), headers=headers, timeout=10)
    return str(answer.json()["code"])


def test_python_float_text_would_be_refused_java_text_is_accepted(mm_conn: dict[str, Any], sandbox: Any) -> None:
    """Python prints 1e16 as ``1e+16``, Java as ``1.0E16``: a gateway that parses and prints the body
    again signs the Java form. We chose Java's ``Double.toString`` for floats (body and signature)."""
    old = '{"customerGroupId":12,"price":1e+16}'
    assert _raw(sandbox, old, old.replace('"', "")) == "00012001"
    body = {"customerGroupId": 12, "price": 1e16, "small": 1.5e-5}
    assert canonical_json(body) == '{"customerGroupId":12,"price":1.0E16,"small":1.5E-5}'
    MultiMarketsHook().call(SYMBOLS, body)  # accepted


def test_control_characters_as_java_escapes_them(mm_conn: dict[str, Any], sandbox: Any) -> None:
    """Python's json writes ``\\u001f``, Jackson and fastjson ``\\u001F``: we chose upper-case hex."""
    lower = '{"customerGroupId":12,"note":"a\\u001fb"}'
    assert _raw(sandbox, lower, lower.replace('"', "")) == "00012001"
    assert canonical_json({"note": "a\x1fb", "customerGroupId": 12}) == '{"customerGroupId":12,"note":"a\\u001Fb"}'
    assert canonical_json({"note": "\\u001f"}) == '{"note":"\\\\u001f"}'  # a literal backslash text is left alone
    MultiMarketsHook().call(SYMBOLS, {"customerGroupId": 12, "note": 'a\x1fb\n\t"q"\\'})


def test_case_insensitive_key_order_disagrees_with_a_java_tree_map(
    sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``TreeMap`` orders keys by ``String.compareTo`` (upper case first); ``sign_key_order:
    case_insensitive`` (the MD5 demo's order) is refused by a Java gateway for mixed-case keys. We chose
    ``java`` by default; case_insensitive stays an option for gateways that need it."""
    body = {"customerGroupId": 12, "Zeta": "1", "alpha": "2"}
    set_connection(monkeypatch, sandbox.connection(sign_key_order="case_insensitive"))
    with pytest.raises(MultiMarketsApiError) as refused:
        MultiMarketsHook().call(SYMBOLS, body)
    assert refused.value.code == "00012001"
    set_connection(monkeypatch, sandbox.connection())
    MultiMarketsHook().call(SYMBOLS, body)


def test_nested_objects_and_nulls_agree(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Java server keeps nested objects in the order they came (and their nulls): the client sends
    them sorted (or as given, ``sign_sort_nested: false``) and without nulls, so both agree."""
    body = {"customerGroupId": 12, "outer": {"b": 1, "a": {"d": None, "c": [2, {"y": 1, "x": 2}]}}}
    for sort_nested in (True, False):
        set_connection(monkeypatch, sandbox.connection(sign_sort_nested=sort_nested))
        MultiMarketsHook().call(SYMBOLS, body)


@pytest.mark.parametrize(
    ("client", "server", "remark", "outcome"),
    [
        ("UTF-8", "UTF-8", "价格 1", "accepted"),
        ("GBK", "GBK", "价格 € 1", "accepted"),
        ("ISO-8859-1", "ISO-8859-1", "café", "accepted"),
        ("UTF-8", "GBK", "价格", "00012001"),  # a Java gateway on a GBK JVM signs other bytes
        ("GBK", "UTF-8", "价格", "00012001"),
        ("UTF-8", "GBK", "ascii only", "accepted"),  # ASCII is the same in every charset
        ("ISO-8859-1", "ISO-8859-1", "价格", "refused"),  # nothing sent: Java would sign '??'
        ("GBK", "GBK", "😀", "refused"),
    ],
)
def test_sign_charset_on_both_sides(
    sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch, client: str, server: str, remark: str, outcome: str
) -> None:
    sb = sandbox_factory(SandboxConfig(sign_charset=server))
    set_connection(monkeypatch, sb.connection(sign_charset=client, max_retries=0))
    hook = MultiMarketsHook()
    body = {"customerGroupId": 12, "remark": remark}
    if outcome == "accepted":
        assert isinstance(hook.call(SYMBOLS, body), list)
    elif outcome == "refused":
        with pytest.raises(MultiMarketsSigningError, match="'sign_charset'") as info:
            hook.call(SYMBOLS, body)
        assert sb.state.received[SYMBOLS] == 0 and client in str(info.value)
    else:
        with pytest.raises(MultiMarketsApiError) as info:
            hook.call(SYMBOLS, body)
        assert info.value.code == outcome


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "UTF-8"),
        ("", "UTF-8"),
        ("utf8", "UTF-8"),
        ("gbk", "GBK"),
        ("latin-1", "ISO-8859-1"),
        ("ISO-8859-1", "ISO-8859-1"),
    ],
)
def test_sign_charset_extra(value: Any, expected: str) -> None:
    extra: dict[str, Any] = {"company_id": 439}
    if value is not None:
        extra["sign_charset"] = value
    settings = settings_from_connection(host=None, port=None, login="k", password="p", extra=extra)
    assert settings.sign_charset == expected


@pytest.mark.parametrize("value", ["gb18030", "ascii", "UTF-16", 8])
def test_an_unsupported_sign_charset_names_the_extra(value: Any) -> None:
    with pytest.raises(MultiMarketsConfigError, match="'sign_charset' must be one of UTF-8, GBK, ISO-8859-1"):
        settings_from_connection(
            host=None, port=None, login="k", password="p", extra={"company_id": 439, "sign_charset": value}
        )


def test_the_signer_repr_names_its_charset_never_the_key() -> None:
    signer = Signer(DEMO_PRIVATE_KEY, "GBK")
    assert repr(signer) == "<Signer RSA-1024 GBK key=***>" and signer.charset == "GBK"
    assert CanonicalOptions().key_order == "java"
