"""Envelope parsing: every answer shape becomes ``data`` or a typed MultiMarketsError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_multimarkets.api.envelope import parse_response, parse_retry_after
from airflow_provider_multimarkets.exceptions import (
    MultiMarketsApiError,
    MultiMarketsBannedError,
    MultiMarketsError,
    MultiMarketsHTTPError,
    MultiMarketsRateLimitError,
    MultiMarketsResponseError,
)

TOKEN_ANSWER = b'{"msg":"Success","fail":false,"trace":"","code":"0","data":"6230de2c-281a-47fe-9d5d-b5f6ac60f482push","bizCode":"","tm":0,"ok":true}'


def env(**fields: object) -> bytes:
    base = {
        "code": "0",
        "msg": "Success",
        "bizCode": "",
        "tm": 1,
        "trace": "x-1",
        "msgParams": None,
        "data": None,
        "ok": True,
        "fail": False,
    }
    base.update(fields)
    return json.dumps(base).encode()


def test_documented_token_answer() -> None:
    assert parse_response(200, TOKEN_ANSWER, biz_type="getMsgPushToken") == "6230de2c-281a-47fe-9d5d-b5f6ac60f482push"


def test_success_without_ok_field_and_with_int_code() -> None:
    assert parse_response(200, b'{"code":"0","data":[1]}') == [1]
    assert parse_response(200, b'{"code":0,"message":"ok","data":{"a":1}}') == {"a": 1}


def test_error_envelope_carries_fields() -> None:
    body = b'{"msg":"Invalid verification code","fail":true,"trace":"x-yhi2311h","code":"P_VERIFY_CODE_ERROR","data":"customer.app.CustomerApiWebService.editApiPermission","bizCode":"MS","tm":96,"msgParams":null,"ok":false}'
    with pytest.raises(MultiMarketsApiError) as info:
        parse_response(200, body, biz_type="customer.app.CustomerApiWebService.editApiPermission")
    err = info.value
    assert (err.code, err.msg, err.trace, err.http_status, err.biz_code) == (
        "P_VERIFY_CODE_ERROR",
        "Invalid verification code",
        "x-yhi2311h",
        200,
        "MS",
    )
    assert "P_VERIFY_CODE_ERROR" in str(err) and "x-yhi2311h" in str(err)


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("00012001", "privateKey issued with this apiKey"),
        ("00012002", "recv_window"),
        ("00012003", "apiKey"),
        ("00012004", "permission"),
        ("00012005", "100 calls per minute"),
        ("00012006", "90 days"),
        ("00012007", "Bind this worker's egress IP"),
    ],
)
def test_gateway_codes_have_meaning_and_hint(code: str, hint: str) -> None:
    with pytest.raises(MultiMarketsApiError) as info:
        parse_response(200, env(code=code, msg="x", ok=False, fail=True))
    assert info.value.meaning
    assert hint in info.value.hint and hint in str(info.value)


def test_gateway_error_with_4xx_status_keeps_the_envelope() -> None:
    with pytest.raises(MultiMarketsApiError) as info:
        parse_response(401, env(code="00012001", msg="sign error", ok=False))
    assert info.value.http_status == 401 and info.value.code == "00012001"


def test_ok_false_with_code_zero_is_an_error() -> None:
    with pytest.raises(MultiMarketsApiError, match="ok=false"):
        parse_response(200, env(ok=False))


def test_msg_params_fill_placeholders() -> None:
    with pytest.raises(MultiMarketsApiError) as info:
        parse_response(
            200, env(code="CFDWBWE000026", msg="quantity must be within %s-%s lots", msgParams="0.01,100", ok=False)
        )
    assert info.value.msg == "quantity must be within 0.01-100 lots"


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (200, b"<html><body>502 Bad Gateway</body></html>", "an HTML page"),
        (200, b"", "an empty body"),
        (200, b"   \n", "an empty body"),
        (200, b'{"code":"0","data":', "truncated or invalid JSON"),
        (200, b"[1,2]", "JSON list, not an object"),
        (200, b'"hello"', "JSON str, not an object"),
        (200, b"plain text", "not JSON"),
        (200, b"\xff\xfe\x00", "not JSON"),
    ],
)
def test_non_envelopes(status: int, body: bytes, words: str) -> None:
    with pytest.raises(MultiMarketsResponseError) as info:
        parse_response(status, body, biz_type="getMsgPushToken", url="https://h/openapi-c/global/getMsgPushToken")
    assert words in str(info.value)
    assert "host" in str(info.value)


def test_object_without_code_and_code_of_wrong_type() -> None:
    with pytest.raises(MultiMarketsResponseError, match="without 'code'"):
        parse_response(200, b'{"data":1}')
    with pytest.raises(MultiMarketsResponseError, match="type list"):
        parse_response(200, b'{"code":[0]}')
    with pytest.raises(MultiMarketsResponseError, match="type bool"):
        parse_response(200, b'{"code":true}')


def test_429_with_retry_after_seconds_and_date() -> None:
    with pytest.raises(MultiMarketsRateLimitError) as info:
        parse_response(429, b"", retry_after="7")
    assert info.value.retry_after == 7 and info.value.http_status == 429
    assert "418" in str(info.value)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") == 0.0


def test_418_says_banned_and_not_to_retry() -> None:
    with pytest.raises(MultiMarketsBannedError) as info:
        parse_response(418, env(code="00012005", ok=False))
    assert "5 minutes" in str(info.value) and "Do not retry" in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 404, 403])
def test_http_errors_without_envelope(status: int) -> None:
    with pytest.raises(MultiMarketsHTTPError) as info:
        parse_response(status, b"<html>oops</html>")
    assert info.value.http_status == status
    assert f"HTTP {status}" in str(info.value)


def test_body_excerpt_is_short_and_single_line() -> None:
    with pytest.raises(MultiMarketsResponseError) as info:
        parse_response(200, b"<html>\n" + b"x" * 5000)
    assert len(info.value.body_excerpt) <= 163 and "\n" not in info.value.body_excerpt


@settings(max_examples=300, deadline=None)
@given(
    status=st.integers(100, 599), body=st.binary(max_size=300), retry_after=st.one_of(st.none(), st.text(max_size=30))
)
def test_arbitrary_bytes_only_raise_multimarkets_errors(status: int, body: bytes, retry_after: str | None) -> None:
    try:
        parse_response(status, body, retry_after=retry_after)
    except MultiMarketsError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from([200, 400, 418, 429, 500]), value=json_values, code=st.one_of(st.none(), json_values))
def test_arbitrary_json_only_raises_multimarkets_errors(status: int, value: object, code: object) -> None:
    if isinstance(value, dict) and code is not None:
        value = dict(value, code=code)
    try:
        parse_response(status, json.dumps(value).encode())
    except MultiMarketsError:
        pass
