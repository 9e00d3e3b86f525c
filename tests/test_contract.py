"""The vendor's contract as the oracle: the catalogue and the sandbox against an independent reading of the spec.

The reading here shares no code with ``scripts/build_endpoint_catalogue.py`` (``referencing``) nor
with ``scripts/build_sandbox_contract.py`` (``jsonschema-path``): it follows ``$ref`` by hand in the
YAML, finds ``version``/``group`` by splitting the descriptions into words, and flattens every
schema into (field path -> type and format) and (object path -> required fields). Every one of the
284 documented bizTypes is compared, and the sandbox is called for every one of them over a real
loopback socket, its answers validated against the spec's own 200 schema.
"""

from __future__ import annotations

import json
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ORDER_BODY, ROOT, set_connection

from airflow_provider_multimarkets.api.endpoints import catalogue, check_payload, endpoint
from airflow_provider_multimarkets.exceptions import MultiMarketsApiError, MultiMarketsConfigError
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
from airflow_provider_multimarkets.sandbox import SandboxConfig
from airflow_provider_multimarkets.sandbox.contract import Contract

SPEC = ROOT.parent / "shared" / "MultiMarkets-ClientAPI.openapi.en.yaml"
pytestmark = pytest.mark.skipif(not SPEC.exists(), reason="the vendor's OpenAPI file is not beside the repository")
DOCUMENTED = 284

# ---- the independent reading --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _spec() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(SPEC.read_text(encoding="utf-8"))


def _deref(node: Any, trail: tuple[str, ...] = ()) -> Any:
    """``node`` with every ``$ref`` replaced by its component; a component inside itself -> a marker."""
    if isinstance(node, list):
        return [_deref(item, trail) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        if name in trail:
            return {"x-recursive": name}
        target = dict(_deref(_spec()["components"]["schemas"][name], (*trail, name)))
        for key, value in node.items():  # a "required" written next to the $ref counts too
            if key == "required":
                target["required"] = sorted(set(target.get("required", [])) | set(value))
        return target
    return {k: (v if k in ("example", "examples") else _deref(v, trail)) for k, v in node.items()}


def _kind(schema: dict[str, Any]) -> str:
    if "x-recursive" in schema or "$ref" in schema:
        return "recursive:" + str(schema.get("x-recursive") or schema["$ref"].split("/")[-1])
    kind = schema.get("type")
    if isinstance(kind, list):  # JSON Schema (the catalogue): ["integer", "null"]
        rest = [k for k in kind if k != "null"]
        return "|".join(rest + (["null"] if "null" in kind else [])) or "any"
    kind = kind if isinstance(kind, str) else "any"
    return f"{kind}|null" if schema.get("nullable") is True and kind not in ("null", "any") else kind


def _flatten(schema: Any, path: str = "$") -> tuple[dict[str, tuple[str, str]], dict[str, list[str]]]:
    """(path -> (type, format)) and (object path -> required) of a schema, OpenAPI or JSON Schema."""
    types: dict[str, tuple[str, str]] = {}
    required: dict[str, list[str]] = {}
    if not isinstance(schema, dict):
        return types, required
    types[path] = (_kind(schema), str(schema.get("format") or ""))
    if schema.get("required"):
        required[path] = sorted(set(schema["required"]))
    for name, sub in (schema.get("properties") or {}).items():
        t, r = _flatten(sub, f"{path}.{name}")
        types.update(t)
        required.update(r)
    if isinstance(schema.get("items"), dict):
        t, r = _flatten(schema["items"], f"{path}[]")
        types.update(t)
        required.update(r)
    return types, required


def _words_values(description: str, name: str) -> list[str]:
    """``name=value`` (or ``name = value``, ``name: value``) anywhere in a description, word by word."""
    text = re.sub(rf"(?<![A-Za-z]){name}\s*[=:\uff1a]\s*", f"{name}=", description)
    values = []
    for word in re.split(r"[\s,;()`]+", text):
        if word.startswith(f"{name}=") and len(word) > len(name) + 1:
            value = word[len(name) + 1 :].rstrip(".-")
            if value and value[0].isalnum():
                values.append(value)
    return values


def _header_examples(operation: dict[str, Any], name: str) -> list[str]:
    found = []
    for parameter in operation.get("parameters") or []:
        if parameter.get("in") == "header" and str(parameter.get("name")).lower() == name:
            example = str(parameter.get("example") or "").strip()
            if example and not example.startswith("{{"):
                found.append(example)
    return found


def _documented(operation: dict[str, Any], name: str) -> list[str]:
    values: list[str] = []
    for value in _header_examples(operation, name) + _words_values(str(operation.get("description") or ""), name):
        if value not in values:
            values.append(value)
    return values


def _body(container: Any) -> dict[str, Any]:
    return ((container or {}).get("content") or {}).get("application/json", {}).get("schema") or {}


@lru_cache(maxsize=1)
def reading() -> dict[str, dict[str, Any]]:
    """bizType -> what the spec says of it, read by this test."""
    out = {}
    for url, item in _spec()["paths"].items():
        if not url.startswith("/global/"):
            continue
        operation = item["post"]
        request = _deref(_body(operation.get("requestBody")))
        envelope = _deref(_body(operation["responses"]["200"]))
        data = (envelope.get("properties") or {}).get("data") or {}
        out[url[len("/global/") :]] = {
            "versions": _documented(operation, "version"),
            "groups": _documented(operation, "group"),
            "request": request,
            "envelope": envelope,
            "data": data,
            "paging": _paging(request, data),
        }
    return out


def _paging(request: dict[str, Any], data: dict[str, Any]) -> tuple[Any, ...] | None:
    fields = request.get("properties") or {}
    if not ("current" in fields and "size" in fields):
        return None
    if data.get("type") == "array":
        return (None, None)
    properties = data.get("properties") or {}
    lists = [name for name, sub in properties.items() if sub.get("type") == "array"]
    for name in ("records", "list", "rows", "recordList"):
        if name in lists:
            break
    else:
        if len(lists) != 1:
            return None
        name = lists[0]
    count = next((c for c in ("total", "totalPage") if (properties.get(c) or {}).get("type") == "integer"), None)
    return (name, count)


# ---- 1. the catalogue: 284 of 284 equal to the reading ----------------------------------------------------


def test_the_catalogue_equals_the_independent_reading_for_every_biz_type() -> None:
    expected = reading()
    endpoints = catalogue()["endpoints"]
    assert len(expected) == DOCUMENTED and set(endpoints) == set(expected)
    equal, differences = 0, {}
    for biz_type, spec in expected.items():
        entry = endpoints[biz_type]
        paging = entry["paging"] and (entry["paging"]["records"], entry["paging"]["total"])
        found = {
            "version": (entry["version"], entry["versions"]),
            "group": (entry["group"], entry["groups"]),
            "request": _flatten(entry["request"]),
            "data": _flatten(entry["response"]),
            "paging": paging,
        }
        wanted = {
            "version": (spec["versions"][0] if spec["versions"] else None, spec["versions"]),
            "group": (spec["groups"][0] if spec["groups"] else None, spec["groups"]),
            "request": _flatten(spec["request"]),
            "data": _flatten(spec["data"]),
            "paging": spec["paging"],
        }
        if found == wanted:
            equal += 1
        else:
            differences[biz_type] = sorted(k for k in found if found[k] != wanted[k])
    assert equal == DOCUMENTED, differences
    # the facts issue 24 found wrong, now as the spec writes them
    deposit = endpoint("fund.app.DepositAppDubboService.createDepositProposal")
    assert deposit is not None and len(deposit.fields) == 25 and len(deposit.required) == 8
    assert endpoint("config.app.AppSymbolDubboService.getSymbolBaseList").required == ("customerGroupId",)  # type: ignore[union-attr]
    for paged in ("findFundPage", "findFundPageWithRealTimeInfo"):
        spec = endpoint(f"config.app.AppSymbolDubboService.{paged}")
        assert (
            spec is not None
            and spec.paging is not None
            and (spec.paging.records_key, spec.paging.total_key)
            == (
                "records",
                "total",
            )
        )
    stock = endpoint("tradeapi.app.StockOrderApiService.placeOrder")
    assert stock is not None and (stock.version, stock.group) == ("0.0.1", "tradeApi")
    sms = endpoint("message.app.VerificationApiService.verifyCodeSend")
    assert sms is not None and sms.versions == ("0.0.1", "0.0.2")


def test_the_sandbox_copy_equals_the_independent_reading_for_every_biz_type() -> None:
    contract = Contract.load()
    expected = reading()
    assert set(contract.interfaces) == set(expected)
    mismatched = [
        biz_type
        for biz_type, spec in expected.items()
        if (contract.versions(biz_type), contract.groups(biz_type)) != (spec["versions"], spec["groups"])
        or _flatten(contract.request_schema(biz_type)) != _flatten(_recursion_cut(spec["request"]))
        or _flatten(contract.response_schema(biz_type)) != _flatten(_recursion_cut(spec["envelope"]))
    ]
    assert mismatched == []


def _recursion_cut(schema: Any) -> Any:
    """The reading with a self-contained schema cut where the sandbox's copy cuts it (to ``{}``)."""
    if isinstance(schema, list):
        return [_recursion_cut(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "x-recursive" in schema:
        return {}
    return {k: _recursion_cut(v) for k, v in schema.items()}


# ---- 1. payloads checked against the request schema ---------------------------------------------------------


def test_payload_check_reads_the_whole_request_schema() -> None:
    order = endpoint("tradeapi.app.OrderApiService.addMarketOrder")
    assert order is not None
    check_payload(order, dict(ORDER_BODY))
    with pytest.raises(MultiMarketsConfigError, match=r"accountId \(int 1180591620717411303424, outside long"):
        check_payload(order, {**ORDER_BODY, "accountId": 2**70})  # beyond a Java long
    check_payload(order, {**ORDER_BODY, "accountId": 2**63 - 1})  # the largest long passes
    with pytest.raises(MultiMarketsConfigError, match=r"missing required field\(s\) accountCurrency, accountDigits"):
        check_payload(order, None)  # None is checked as {}
    with pytest.raises(MultiMarketsConfigError, match=r"missing required field\(s\) requestNum"):
        check_payload(order, {**ORDER_BODY, "requestNum": ""})
    with pytest.raises(MultiMarketsConfigError, match=r"tradeType \(float 2.0, expected integer\)"):
        check_payload(order, {**ORDER_BODY, "tradeType": 2.0})
    check_payload(order, {**ORDER_BODY, "remark": None})  # null members are not sent
    # array items and nested objects (editApiPermission: permissionList[] of {code, status})
    edit = endpoint("customer.app.CustomerApiWebService.editApiPermission")
    assert edit is not None and "permissionList" in edit.fields
    item = edit.request_schema["properties"]["permissionList"]["items"]
    assert item["properties"]["status"]["type"] == "integer"
    body = {k: 1 if v == "integer" else "x" for k, v in edit.fields.items() if k in edit.required}
    with pytest.raises(MultiMarketsConfigError, match=r"permissionList\[1\]\.status \(str '1', expected integer\)"):
        check_payload(
            edit, {**body, "permissionList": [{"code": "trade", "status": 1}, {"code": "trade", "status": "1"}]}
        )
    with pytest.raises(MultiMarketsConfigError, match=r"permissionList \(dict"):
        check_payload(edit, {**body, "permissionList": {"code": "trade"}})


def test_biz_types_with_a_slash_are_callable_through_the_hook(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    assert hook.call("thirdExt/randomKey") is not None
    answer = hook.call("fund.app.DepositAppDubboService/queryDepositProposal", {"tradeType": 2})
    assert isinstance(answer, dict)
    assert sandbox.state.received["thirdExt/randomKey"] == 1  # the URL path carried it as the spec writes it
    for bad in ("../getMsgPushToken", "a//b", "thirdExt/", "/x", "a/./b", "a b"):
        with pytest.raises(MultiMarketsConfigError, match="is not a bizType"):
            hook.call(bad)


# ---- 2. the sandbox: 284 of 284 served, every answer valid against the spec's 200 schema ---------------------


def _example_value(schema: dict[str, Any], name: str, path: str) -> Any:
    kind = schema.get("type")
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if kind == "integer":
        low = schema.get("minimum")
        return max(int(low), 1) if low is not None else 1
    if kind == "number":
        return 1
    if kind == "boolean":
        return False
    if kind == "array":
        return [_example_value(schema.get("items") or {}, name, path + "[]")] * int(schema.get("minItems") or 1)
    if kind == "object" or "properties" in schema:
        return {
            n: _example_value(s, n, f"{path}.{n}")
            for n, s in (schema.get("properties") or {}).items()
            if n in (schema.get("required") or [])
        }
    return "x" * max(int(schema.get("minLength") or 1), 1)


def _as_type(schema: dict[str, Any], value: Any) -> Any:
    kind = schema.get("type")
    if kind == "string":
        return str(value)
    if kind == "integer":
        return int(value)
    if kind == "number":
        return float(value)
    return value


def _mode(biz_type: str) -> int:
    for marker, mode in (("CfdMM", 1), ("CrossLever", 3), ("Spot", 5), ("Stock", 6)):
        if f".{marker}" in biz_type:
            return mode
    return 1 if biz_type.endswith("updatePboOrder") else 2


class Scenario:
    """Orders placed in every margin mode, so that every trading interface has something to show."""

    ACCOUNTS = {
        1: (1034123, "USDT"),
        2: (1034124, "CNY"),
        3: (1034125, "USDT"),
        5: (1034126, "USDT"),
        6: (1034127, "USD"),
    }
    SYMBOLS = {1: (720, "2225"), 2: (8390, "167655"), 3: (1062, "312050"), 5: (1063, "6410000"), 6: (70001, "18925")}

    def __init__(self, hook: MultiMarketsHook, state: Any) -> None:
        self.hook = hook
        now = int(time.time() * 1000)
        self.now = now
        self.positions: dict[int, dict[str, Any]] = {}
        self.pending: dict[int, int] = {}
        self.filled: dict[int, int] = {}
        for mode, biz in (
            (1, "tradeapi.app.CfdMMOrderApiService.addMarketOrder"),
            (2, "tradeapi.app.OrderApiService.addMarketOrder"),
        ):
            opened = hook.call(biz, self.order(mode, 1), idempotent=False)
            closing = hook.call(biz, self.order(mode, 1), idempotent=False)
            hook.call(
                biz, {**self.order(mode, 2), "direction": 2, "positionId": closing["positionId"]}, idempotent=False
            )
            self.positions[mode] = opened
            self.filled[mode] = opened["orderId"]
            self.pending[mode] = hook.call(biz, self.order(mode, 10), idempotent=False)["orderId"]
        for mode in (3, 5):
            self.filled[mode] = hook.call(
                "tradeapi.app.OrderApiService.addOrder", self.lever(mode, 1), idempotent=False
            )["orderId"]
            self.pending[mode] = hook.call(
                "tradeapi.app.OrderApiService.addOrder", self.lever(mode, 13), idempotent=False
            )["orderId"]
        self.positions[3] = {"positionId": self._newest_position(state, 3), "orderId": self.filled[3]}
        self.filled[6] = hook.call("tradeapi.app.StockOrderApiService.placeOrder", self.stock(1), idempotent=False)[
            "orderId"
        ]
        self.pending[6] = hook.call("tradeapi.app.StockOrderApiService.placeOrder", self.stock(12), idempotent=False)[
            "orderId"
        ]
        self.positions[6] = {"positionId": self._newest_position(state, 6), "orderId": self.filled[6]}

    @staticmethod
    def _newest_position(state: Any, mode: int) -> int:
        return max(p for p, v in state.positions.items() if v.get("trade_type") == mode)

    def order(self, mode: int, biz: int) -> dict[str, Any]:
        account, currency = self.ACCOUNTS[mode]
        symbol, price = self.SYMBOLS[mode]
        body = {
            **ORDER_BODY,
            "tradeType": mode,
            "bizType": biz,
            "accountId": account,
            "accountCurrency": currency,
            "symbolId": symbol,
            "requestPrice": price,
            "requestTime": self.now,
        }
        if mode == 1:
            body.pop("entryType")
        return body

    def lever(self, mode: int, biz: int) -> dict[str, Any]:
        account, currency = self.ACCOUNTS[mode]
        symbol, price = self.SYMBOLS[mode]
        return {
            "tradeType": mode,
            "accountId": account,
            "accountCurrency": currency,
            "accountDigits": 2,
            "bizType": biz,
            "direction": 1,
            "symbolId": symbol,
            "requestTime": self.now,
            "requestPrice": price,
            "requestNum": "0.1",
            "operationType": 1,
            "expireType": "1",
        }

    def stock(self, biz: int) -> dict[str, Any]:
        return {
            "tradeType": 6,
            "accountCurrency": "USD",
            "accountDigits": 2,
            "bizType": biz,
            "direction": 1,
            "symbolId": 70001,
            "digits": 2,
            "requestTime": self.now,
            "requestPrice": 18925,
            "requestNum": "10",
        }

    def body(self, biz_type: str, schema: dict[str, Any]) -> dict[str, Any]:
        """A body the spec documents for ``biz_type``, with this scenario's ids where they matter."""
        body = _example_value(schema, "", "$")
        if not isinstance(body, dict):
            body = {}
        mode = _mode(biz_type)
        fields = schema.get("properties") or {}
        known: dict[str, Any] = {
            "tradeType": mode,
            "customerGroupId": 12,
            "accountCurrency": self.ACCOUNTS.get(mode, (0, "CNY"))[1],
            "accountDigits": 2,
            "accountId": self.ACCOUNTS.get(mode, (0, ""))[0],
            "symbolId": self.SYMBOLS.get(mode, (8390, ""))[0],
            "requestTime": self.now,
            "requestPrice": self.SYMBOLS.get(mode, (0, "167655"))[1],
            "requestNum": "0.1",
            "direction": 1,
            "sortFieldName": "executeTime",
            "sortType": "desc",
            "orderId": self.filled.get(mode),
            "positionId": (self.positions.get(mode) or {}).get("positionId"),
            "currencyCode": "USD",
            "occupyTheMargin": "10",
            "stopLoss": "0",
            "takeProfit": "0",
        }
        if fields.get("requestPrice", {}).get("type") == "integer":
            known["requestPrice"] = int(known["requestPrice"])
        for name, value in known.items():
            if (
                name in fields
                and value is not None
                and (name in body or name in ("accountId", "orderId", "positionId"))
            ):
                body[name] = _as_type(fields[name], value)
        method = biz_type.rsplit(".", 1)[-1]
        if method in ("closeTradePboOrder", "cancelOrder"):
            body["orderId"] = self.pending[mode]
        if method == "cancelOrder":
            body["bizType"] = 14
        if method == "updatePboOrder":
            body["pboId"] = str(self.pending[1])
        if method in ("updateOrder", "queryPositionDetail", "updateOccupyTheMargin", "calculationBurstPrice"):
            body["orderId"] = self.positions[mode]["orderId"]
        if method in ("setCrossLevelNum", "updateCrossLevelNum"):
            body.update({"requestTime": 20, "crossLevelNum": 20} if "crossLevelNum" in fields else {"requestTime": 20})
        if method == "queryHistoryCloseOrderList":
            body["sortFieldName"] = "closeTime"
        if method == "queryOrderPage" and mode == 6:
            body.update({"sortFieldName": "request_time", "executeStartTime": 0, "executeEndTime": self.now + 10**6})
        if method == "queryDealPage":
            body["sortFieldName"] = "execute_time"
        if method in ("calculateMarketOrder",):
            body["bizType"] = 1
        if method in ("addMarketOrder", "addOrder", "placeOrder", "checkOrder"):
            body = (
                self.order(mode, 1)
                if method == "addMarketOrder"
                else (self.lever(3, 1) if method == "addOrder" else self.stock(1))
            )
        if method == "queryPBOOrderPage":
            body.pop("thirdPartyOrder", None)
            body["thirdPartyOrder"] = "x"
        return body


@lru_cache(maxsize=1)
def _answer_validator_class() -> Any:
    from jsonschema import ValidationError, validators
    from openapi_schema_validator import OAS30Validator

    base = OAS30Validator.VALIDATORS["type"]

    def type_keyword(validator: Any, kind: Any, instance: Any, schema: Any) -> Any:
        if kind == "null":
            if instance is not None:
                yield ValidationError(f"{instance!r} is not null")
            return
        yield from base(validator, kind, instance, schema)

    return validators.extend(OAS30Validator, validators={"type": type_keyword})


def _without_markers(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_markers(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "x-recursive" in schema:
        return {}
    return {k: _without_markers(v) for k, v in schema.items() if k not in ("example", "examples")}


def test_the_sandbox_serves_every_documented_biz_type_with_answers_valid_against_the_spec(
    sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jsonschema import FormatChecker

    sandbox = sandbox_factory(SandboxConfig(rate_limit=10_000))  # 300 calls in a few seconds
    set_connection(monkeypatch, sandbox.connection(rate_limit_per_minute=0))
    hook = MultiMarketsHook()
    scenario = Scenario(hook, sandbox.state)
    expected = reading()
    order = sorted(expected, key=lambda b: (b.rsplit(".", 1)[-1] in ("closeTradePboOrder", "cancelOrder"), b))
    session = requests.Session()
    served, invalid, refused = 0, {}, {}
    checker = FormatChecker(formats=())  # the integer formats of the spec, checked by this test's own ranges
    for name, bits, signed in (
        ("int32", 32, True),
        ("int64", 64, True),
        ("long", 64, True),
        ("uint32", 32, False),
        ("uint64", 64, False),
    ):
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        checker.checks(name)(
            lambda v, low=low, high=high: not isinstance(v, int) or isinstance(v, bool) or low <= v <= high
        )
    for biz_type in order:
        spec = expected[biz_type]
        body = scenario.body(biz_type, spec["request"])
        documented = endpoint(biz_type)
        assert documented is not None
        check_payload(documented, body)  # the client's check agrees with the body the sandbox accepts
        url, headers, raw = hook.build_request(
            biz_type, body, version=(spec["versions"] or [None])[0], group=(spec["groups"] or [None])[0]
        )
        answer = session.post(url, data=raw, headers=headers, timeout=30).json()
        if answer.get("code") != "0":
            refused[biz_type] = (answer.get("code"), answer.get("msg"))
            continue
        served += 1
        validator = _answer_validator_class()(_without_markers(spec["envelope"]), format_checker=checker)
        errors = [f"{list(e.path)}: {e.message[:120]}" for e in validator.iter_errors(answer)]
        if errors:
            invalid[biz_type] = errors[:3]
    assert refused == {} and invalid == {}
    assert served == DOCUMENTED
    unknown = hook.build_request("nope.app.Service.method", {})
    assert (
        session.post(unknown[0], data=unknown[2], headers=unknown[1], timeout=30).json()["code"] == "GGATEWAY_CODE_002"
    )


# ---- 2. version and group, where documented ---------------------------------------------------------------


def test_the_sandbox_checks_version_and_group_where_documented(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    body = {"tradeType": 2}
    assert hook.call("tradeapi.app.OrderApiService.queryOrderPage", body)["total"] == 0  # the documented headers
    for headers, code in (({"version": "0.0.9"}, "GGATEWAY_CODE_010"), ({"group": "otherApi"}, "GGATEWAY_CODE_010")):
        with pytest.raises(MultiMarketsApiError) as info:
            hook.call("tradeapi.app.OrderApiService.queryOrderPage", body, **headers)
        assert info.value.code == code and "0.0.1" in info.value.msg or "tradeApi" in info.value.msg
    # both documented versions of verifyCodeSend are served; getMsgPushToken documents none and takes any
    send = endpoint("message.app.VerificationApiService.verifyCodeSend")
    assert send is not None
    payload = {k: ("x" if t == "string" else 1) for k, t in send.fields.items() if k in send.required}
    for version in ("0.0.1", "0.0.2"):
        hook.call("message.app.VerificationApiService.verifyCodeSend", payload, version=version, check=False)
    assert hook.call("getMsgPushToken", version="9.9.9").endswith("push")


def test_the_sandbox_answers_the_documented_codes_for_a_bad_body(mm_conn: dict[str, Any], sandbox: Any) -> None:
    hook = MultiMarketsHook()
    biz = "fund.app.DepositAppDubboService.createDepositProposal"
    with pytest.raises(MultiMarketsApiError) as missing:
        hook.call(biz, {"tradeType": 2}, check=False)
    assert missing.value.code == "CFDWBWE000005" and "accountCurrency" in missing.value.msg
    spec = endpoint(biz)
    assert spec is not None
    full = {k: ("x" if spec.fields[k] == "string" else 1) for k in spec.required}
    with pytest.raises(MultiMarketsApiError) as wrong:
        hook.call(biz, {**full, "tradeType": "two"}, check=False)
    assert wrong.value.code == "CFDWBWE000006" and "tradeType" in wrong.value.msg
    with pytest.raises(MultiMarketsApiError) as too_big:
        hook.call("tradeapi.app.OrderApiService.queryOrderPage", {"tradeType": 2**70}, check=False)
    assert too_big.value.code == "CFDWBWE000006"


# ---- 2. stateful in every margin mode ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "orders", "trades", "flows", "positions"),
    [
        (1, None, None, "tradeapi.app.CfdMMOrderApiService.queryCapitalFlowList", None),
        (
            2,
            "tradeapi.app.OrderApiService.queryOrderPage",
            "tradeapi.app.OrderApiService.queryTradeRecordPage",
            "tradeapi.app.OrderApiService.queryCapitalFlowList",
            "tradeapi.app.PositionApiService.queryPositionPage",
        ),
        (
            3,
            None,
            "tradeapi.app.CrossLeverOrderApiService.queryTradeRecordPage",
            "tradeapi.app.CrossLeverOrderApiService.queryCapitalFlowList",
            None,
        ),
        (
            5,
            "tradeapi.app.SpotOrderApiService.queryOrderPage",
            "tradeapi.app.SpotOrderApiService.queryTradeRecordPage",
            "tradeapi.app.SpotOrderApiService.queryCapitalFlowList",
            None,
        ),
        (
            6,
            "tradeapi.app.StockOrderApiService.queryOrderPage",
            "tradeapi.app.StockOrderApiService.queryDealPage",
            "tradeapi.app.StockOrderApiService.queryCapitalFlowList",
            "tradeapi.app.StockPositionApiService.queryPositionPage",
        ),
    ],
)
def test_an_order_shows_up_in_its_mode_and_no_other(
    mm_conn: dict[str, Any], sandbox: Any, mode: int, orders: Any, trades: Any, flows: str, positions: Any
) -> None:
    hook = MultiMarketsHook()
    scenario = Scenario(hook, sandbox.state)
    order_id = scenario.filled[mode]
    extra = {1: {}, 2: {}, 3: {}, 5: {"customerGroupId": 12}, 6: {}}[mode]
    sort = {"sortFieldName": "execute_time" if mode == 6 else "executeTime", "sortType": "desc"}
    if orders:
        body = {"tradeType": mode, **extra}
        if mode == 6:
            body.update(
                {
                    "sortFieldName": "request_time",
                    "sortType": "desc",
                    "executeStartTime": 0,
                    "executeEndTime": scenario.now + 10**6,
                    "size": 20,
                }
            )
        found = [r for page in hook.paginate(orders, body) for r in page]
        if mode == 5:  # the spot order list documents no order id: the filled and the pending order, by status
            assert sorted((r["symbolId"], r["status"]) for r in found) == [(1063, 1), (1063, 2)]
        else:
            ids = {r.get("id", r.get("orderId")) for r in found}
            assert order_id in ids and scenario.pending[mode] in ids
            assert all(i not in ids for m, i in scenario.filled.items() if m != mode)
    if trades:
        trade_type = str(mode) if mode == 5 else mode  # the spot trade list types tradeType as a string
        found = [r for page in hook.paginate(trades, {"tradeType": trade_type, **sort}) for r in page]
        assert order_id in {r["orderId"] for r in found}
        assert all(i not in {r["orderId"] for r in found} for m, i in scenario.filled.items() if m != mode)
    booked = [r for page in hook.paginate(flows, {"tradeType": mode, **extra}) for r in page]
    # the spec's business types: 6 (trade) with 6001 open fee, 6002 close fee, 6004 close P/L; stock 606/6060x
    kinds = {(r["businessType"], r["businessType1"]) for r in booked}
    assert kinds and kinds <= {(6, 6001), (6, 6002), (6, 6004), (606, 60601), (606, 60602), (606, 60603)}
    assert {r["currency"] for r in booked} == {scenario.ACCOUNTS[mode][1]}  # this mode's account only
    if "orderId" in booked[0]:
        assert str(order_id) in {str(r["orderId"]) for r in booked}
    if positions:
        paged = endpoint(positions).paging is not None  # type: ignore[union-attr]
        held = (
            [r for page in hook.paginate(positions, {"tradeType": mode}) for r in page]
            if paged
            else hook.call(positions, {"tradeType": mode})  # the stock list documents no current/size
        )
        assert scenario.positions[mode]["positionId"] in {r["positionId"] for r in held}
    if mode in (1, 2):  # the close of the scenario is in the closing records, with its profit
        closed = hook.call(
            "tradeapi.app.CfdMMOrderApiService.queryHistoryCloseOrderList"
            if mode == 1
            else "tradeapi.app.CfdWBWOrderApiService.queryHistoryCloseOrderList",
            {"tradeType": mode, "sortFieldName": "closeTime", "sortType": "desc"},
        )
        assert len(closed["list"]) == 1 and isinstance(closed["totalPnl"], (int, float))


def test_account_list_follows_the_schema_and_the_examples_on_request(
    sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_multimarkets.trading.reports import account_list

    for shape, kind in (("map", dict), ("array", list)):
        sb = sandbox_factory(SandboxConfig(account_list=shape))
        set_connection(monkeypatch, sb.connection())
        info = MultiMarketsHook().call("customer.app.CustomerWebApiService.findCustomerInfo")
        assert isinstance(info["accountList"], kind)
        assert [a["tradeType"] for a in account_list(info)] == [1, 2, 3, 5, 6]


def test_the_committed_sandbox_contract_is_what_its_script_builds() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_contract", ROOT / "scripts" / "build_sandbox_contract.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (ROOT / "airflow_provider_multimarkets" / "sandbox" / "contract.json").read_text(encoding="utf-8")
    assert module.render(module.build(SPEC)) == committed, "run: python scripts/build_sandbox_contract.py"
    assert json.loads(committed)["source"]["sha256"] == catalogue()["source"]["sha256"]


def test_the_sandbox_does_not_read_the_clients_catalogue_or_signing() -> None:
    sandbox_dir = Path(__file__).resolve().parents[1] / "airflow_provider_multimarkets" / "sandbox"
    for module in sandbox_dir.glob("*.py"):
        text = module.read_text(encoding="utf-8")
        for client in ("api.endpoints", "api.signing", "endpoint_catalogue", "canonical_json", "check_payload"):
            assert client not in text, f"{module.name} uses the client's {client}"
