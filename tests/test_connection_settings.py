"""Connection fields: defaults, normalisation, and an error naming the field and fix for each bad one."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_multimarkets.api.settings import PRODUCTION_BASE_URL, normalize_base_url, settings_from_connection
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError

SECRET = "MIICdQIBADANBgkqhkiG9w0BAQEFAASCAl8wSECRETSECRETSECRET"


def make(**overrides: Any) -> Any:
    parts: dict[str, Any] = {
        "host": "https://prewppc-3.cmfbl.com/openapi-c",
        "port": None,
        "login": "1710e1f6b4b54c15bea72e8669966591",
        "password": SECRET,
        "extra": {"company_id": 439},
    }
    parts.update(overrides)
    return settings_from_connection(**parts)


def test_defaults() -> None:
    s = make()
    assert s.base_url == "https://prewppc-3.cmfbl.com/openapi-c"
    assert s.url_for("getMsgPushToken") == "https://prewppc-3.cmfbl.com/openapi-c/global/getMsgPushToken"
    assert (s.company_id, s.recv_window, s.verify, s.max_retries, s.rate_limit_per_minute) == (439, 5000, True, 3, 100)
    assert s.timeout == (10.0, 30.0)
    assert SECRET not in repr(s)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, PRODUCTION_BASE_URL),
        ("", None, PRODUCTION_BASE_URL),
        ("prewppc-3.cmfbl.com/openapi-c", None, "https://prewppc-3.cmfbl.com/openapi-c"),
        ("prewppc-3.cmfbl.com", None, "https://prewppc-3.cmfbl.com/openapi-c"),
        ("https://prewppc-3.cmfbl.com/openapi-c/", None, "https://prewppc-3.cmfbl.com/openapi-c"),
        ("http://127.0.0.1", 8085, "http://127.0.0.1:8085/openapi-c"),
        ("http://127.0.0.1:9000/openapi-c", 8085, "http://127.0.0.1:9000/openapi-c"),
    ],
)
def test_host_normalisation(host: str | None, port: int | None, expected: str) -> None:
    assert normalize_base_url(host, port) == expected


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("htps://prewppc-3.cmfbl.com", "scheme"),
        ("ftp://prewppc-3.cmfbl.com", "scheme"),
        ("https//prewppc-3.cmfbl.com", "malformed scheme"),
        ("https://prewppc-3.cmfbl.com/openapi-c/global", "/global"),
        ("https://prewppc-3.cmfbl.com/openapi-c/global/getMsgPushToken", "/global"),
        ("https://pre wppc.com", "white space"),
        ("https://", "no host name"),
        ("https://h:port/openapi-c", "port"),
        ("https://h/openapi-c?x=1", "query"),
    ],
)
def test_host_typos(host: str, words: str) -> None:
    with pytest.raises(MultiMarketsConfigError) as info:
        make(host=host)
    assert "'host'" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"login": ""}, "login", "apiKey"),
        ({"login": None}, "login", "apiKey"),
        ({"login": "ab cd"}, "login", "white space"),
        ({"password": ""}, "password", "secretKey"),
        ({"password": None}, "password", "secretKey"),
        ({"extra": {}}, "company_id", "missing"),
        ({"extra": {"company_id": "abc"}}, "company_id", "whole number"),
        ({"extra": {"company_id": True}}, "company_id", "boolean"),
        ({"extra": {"company_id": 1, "recv_window": "5s"}}, "recv_window", "whole number of milliseconds"),
        ({"extra": {"company_id": 1, "recv_window": 0}}, "recv_window", "at least 1"),
        ({"extra": {"company_id": 1, "timeout": "fast"}}, "timeout", "seconds"),
        ({"extra": {"company_id": 1, "timeout": [1, 2, 3]}}, "timeout", "seconds"),
        ({"extra": {"company_id": 1, "timeout": -1}}, "timeout", "seconds"),
        ({"extra": {"company_id": 1, "max_retries": -1}}, "max_retries", "at least 0"),
        ({"extra": {"company_id": 1, "retry_backoff": "x"}}, "retry_backoff", "number"),
        ({"extra": {"company_id": 1, "rate_limit_per_minute": "lots"}}, "rate_limit_per_minute", "whole number"),
        ({"extra": {"company_id": 1, "msg_ws_url": "https://x/openMsg"}}, "msg_ws_url", "wss://"),
        ({"extra": {"company_id": 1, "sign_key_order": "abc"}}, "sign_key_order", "java"),
        ({"extra": {"company_id": 1, "sign_sort_nested": "maybe"}}, "sign_sort_nested", "true or false"),
    ],
)
def test_bad_fields_name_field_and_fix(overrides: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(MultiMarketsConfigError) as info:
        make(**overrides)
    message = str(info.value)
    assert f"'{field}'" in message and words in message
    assert SECRET not in message


def test_extras_parsed(tmp_path: Any) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    s = make(
        extra={
            "company_id": "439",
            "lang": "zh-CN",
            "recv_window": "10000",
            "timeout": [3, 20],
            "verify": str(bundle),
            "max_retries": 5,
            "rate_limit_per_minute": 0,
            "msg_ws_url": "wss://pre-api-test.cmfbl.com/openapi-c/openMsg/{appId}",
            "app_id": "abc",
            "surprise": 1,
        }
    )
    assert s.company_id == 439 and s.lang == "zh-CN" and s.recv_window == 10000
    assert s.timeout == (3.0, 20.0) and s.verify == str(bundle) and s.max_retries == 5
    assert s.rate_limit_per_minute == 0
    assert s.ws_url() == "wss://pre-api-test.cmfbl.com/openapi-c/openMsg/abc"
    assert s.unknown_extras == ("surprise",)
    assert make(extra={"company_id": 1, "verify": "false"}).verify is False
    assert make(extra={"company_id": 1, "timeout": 5}).timeout == (5.0, 5.0)


def test_ws_url_defaults_from_base_url_and_company() -> None:
    assert make().ws_url() == "wss://prewppc-3.cmfbl.com/openapi-c/openMsg/439"
    assert make(host="http://127.0.0.1:1").ws_url() == "ws://127.0.0.1:1/openapi-c/openMsg/439"
