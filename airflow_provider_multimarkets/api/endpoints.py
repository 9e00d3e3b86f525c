"""Every documented interface, known by its bizType (pure logic: no Airflow, no network).

``endpoint_catalogue.json`` is generated from the vendor's OpenAPI file by
``scripts/build_endpoint_catalogue.py``: per bizType its ``version`` and ``group`` headers, its body
as JSON Schema (the request) and the schema of the answer's ``data``, the required body fields, and
how it pages. The hook fills the headers from it when the caller gives none, and checks a payload
against the request schema before signing it (:func:`check_payload`, with ``jsonschema``), so a
missing field, a wrong type or an out-of-range number is named before any request is sent.
``jsonschema`` is imported on the first check, never when a DAG file imports an operator.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError

#: the range of each integer format the spec uses (``long`` is Java's ``long``, as ``int64``)
INTEGER_FORMATS: dict[str, tuple[int, int]] = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "long": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
#: Unix milliseconds that a Java ``long`` holds
_MAX_EPOCH_MS = 2**63 - 1
_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class Paging:
    """How an interface pages: ``current``/``size`` in the body; the answer's records under
    ``records_key`` (``None``: the data is the array), its count under ``total_key`` (``total``:
    records, ``totalPage``: pages; ``None``: not given)."""

    records_key: str | None
    total_key: str | None


@dataclass(frozen=True)
class Endpoint:
    biz_type: str
    version: str | None
    group: str | None
    fields: dict[str, str]
    required: tuple[str, ...]
    paging: Paging | None
    #: every ``version``/``group`` the spec documents for the interface (the default first)
    versions: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    #: the body as JSON Schema (draft 2020-12), and the schema of the answer's ``data``
    request_schema: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    response_schema: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Any]:
    """The generated catalogue (read once per process, on first use)."""
    from importlib.resources import files

    text = files("airflow_provider_multimarkets.api").joinpath("endpoint_catalogue.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@lru_cache(maxsize=1024)
def endpoint(biz_type: str) -> Endpoint | None:
    """The documented interface of ``biz_type``, or ``None`` when the vendor's OpenAPI does not list it."""
    raw = catalogue()["endpoints"].get(biz_type)
    if raw is None:
        return None
    paging = raw.get("paging")
    return Endpoint(
        biz_type=biz_type,
        version=raw.get("version"),
        group=raw.get("group"),
        fields=dict(raw.get("fields") or {}),
        required=tuple(raw.get("required") or ()),
        paging=Paging(paging.get("records"), paging.get("total")) if paging else None,
        versions=tuple(raw.get("versions") or ()),
        groups=tuple(raw.get("groups") or ()),
        request_schema=raw.get("request") or {},
        response_schema=raw.get("response") or {},
    )


# ---- the payload check ------------------------------------------------------------------------------


#: as deep as the signer takes a body (``api.signing.MAX_DEPTH``); deeper ones it refuses by name
_MAX_DEPTH = 32


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` levels (walked without recursion)."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        level = [
            child
            for item in level
            for child in (
                item.values() if isinstance(item, Mapping) else item if isinstance(item, (list, tuple)) else ()
            )
            if isinstance(child, (Mapping, list, tuple))
        ]
        if not level:
            return False
    return True


def _without_nulls(value: Any) -> Any:
    """The body as it is signed and sent: ``null`` members left out, tuples as arrays."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_nulls(v) for v in value]
    return value


@lru_cache(maxsize=512)
def _validator(biz_type: str) -> Any:
    """A ``jsonschema`` validator of the interface's request schema (built once per bizType)."""
    from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

    def is_integer(checker: Any, instance: Any) -> bool:  # 1.0 is a float here, not an integer
        return isinstance(instance, int) and not isinstance(instance, bool)

    def required_not_empty(validator: Any, names: Any, instance: Any, schema: Any) -> Any:
        # the gateway answers "must not be empty" (CFDWBWE000005) for "" as for a missing field
        if isinstance(instance, dict):
            for name in names:
                if instance.get(name, "") == "":
                    yield ValidationError(f"{name!r} is a required property")

    checker = FormatChecker(formats=())
    for name, (low, high) in INTEGER_FORMATS.items():
        checker.checks(name)(lambda v, low=low, high=high: not is_integer(None, v) or low <= v <= high)
    for name in ("double", "float"):
        checker.checks(name)(lambda v: not isinstance(v, float) or math.isfinite(v))
    cls = validators.extend(
        Draft202012Validator,
        validators={"required": required_not_empty},
        type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", is_integer),
    )
    spec = endpoint(biz_type)
    return cls(spec.request_schema if spec else {}, format_checker=checker)


def _where(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def check_payload(spec: Endpoint, payload: Mapping[str, Any] | None) -> None:
    """Raise :class:`MultiMarketsConfigError` naming every required field that is missing (or ``""``)
    and every field whose value the request schema refuses: a wrong JSON type, an array item or a
    nested object that does not match, an integer outside its format's range (``int64``: a Java
    ``long``), a string too long. ``None`` is checked as ``{}``; fields the spec does not list pass.
    A body nested deeper than the signer takes is left to the signer's error (it names the depth)."""
    if _deeper_than(payload, _MAX_DEPTH):
        return
    body = _without_nulls(payload or {})
    missing: list[str] = []
    wrong: list[str] = []
    invalid: list[str] = []
    for error in sorted(_validator(spec.biz_type).iter_errors(body), key=lambda e: (list(e.path), e.validator)):
        where = _where(error.path)
        if error.validator == "required":
            instance = error.instance if isinstance(error.instance, dict) else {}
            for name in error.validator_value:
                if instance.get(name, "") == "":
                    missing.append(f"{where}.{name}" if where else str(name))
            continue
        value = f"{type(error.instance).__name__} {_short(error.instance)}"
        if error.validator == "type":
            expected = error.validator_value
            expected = " or ".join(expected) if isinstance(expected, list) else expected
            wrong.append(f"{where or 'the body'} ({value}, expected {expected})")
        elif error.validator == "format" and error.validator_value in INTEGER_FORMATS:
            low, high = INTEGER_FORMATS[error.validator_value]
            invalid.append(f"{where} ({value}, outside {error.validator_value}: {low} to {high})")
        else:
            invalid.append(f"{where or 'the body'} ({value}: {error.validator} {_short(error.validator_value)})")
    problems = []
    if missing:
        problems.append("missing required field(s) " + ", ".join(dict.fromkeys(missing)))
    if wrong:
        problems.append("wrong JSON type for " + "; ".join(wrong))
    if invalid:
        problems.append("invalid value for " + "; ".join(invalid))
    if problems:
        raise MultiMarketsConfigError(
            f"{spec.biz_type}: {' and '.join(problems)}, as the vendor's OpenAPI documents the body. Nothing was "
            "sent. Fix the payload (numbers as JSON numbers, not strings, where the spec says integer), or pass "
            "check=False (check_payload=False on the operator) if the gateway accepts it."
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- time ranges ---------------------------------------------------------------------------------------

#: body fields of a time range, and the record field the range is about, per query interface
#: (by method name: every variant of one query uses the same names, except those below).
TIME_RANGES: dict[str, tuple[str | None, str | None, str]] = {
    "queryOrderPage": (None, None, "createTime"),
    "queryTradeRecordPage": ("executeStartTime", "executeEndTime", "executeTime"),
    "queryCapitalFlowList": ("startTime", "endTime", "createTime"),
    "queryPositionPage": ("startTime", "endTime", "openTime"),
}
#: interfaces whose names differ from their method's: the Stock order list *requires* a range
TIME_RANGES_BY_BIZ_TYPE: dict[str, tuple[str | None, str | None, str]] = {
    "tradeapi.app.StockOrderApiService.queryOrderPage": ("executeStartTime", "executeEndTime", "requestTime"),
}


def time_range_fields(biz_type: str) -> tuple[str | None, str | None, str | None]:
    """(body start field, body end field, record time field) of a query, ``(None, None, None)`` if unknown."""
    if biz_type in TIME_RANGES_BY_BIZ_TYPE:
        return TIME_RANGES_BY_BIZ_TYPE[biz_type]
    method = biz_type.rsplit(".", 1)[-1]
    return TIME_RANGES.get(method, (None, None, None))


def _not_a_time(value: Any, why: str = "") -> MultiMarketsConfigError:
    return MultiMarketsConfigError(
        f"Not a time: {_short(value)}{f' ({why})' if why else ''}. Give an ISO 8601 time (e.g. "
        "{{ data_interval_start }}), a datetime, or Unix milliseconds as a whole number."
    )


def epoch_ms(value: Any) -> int:
    """A time as Unix milliseconds: a datetime (naive: UTC), an ISO 8601 text, or a number (ms).

    Anything else is a :class:`MultiMarketsConfigError` naming the value: ``"--5"``, ``"²"``, NaN,
    infinity, a boolean, or a number no Java ``long`` holds.
    """
    if isinstance(value, bool):
        raise _not_a_time(value, "a boolean")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _not_a_time(value, "not a finite number")
        value = int(value)
    if isinstance(value, int):
        if not -_MAX_EPOCH_MS <= value <= _MAX_EPOCH_MS:
            raise _not_a_time(value, "outside the range of Unix milliseconds")
        return value
    if isinstance(value, str):
        text = value.strip()
        if _ASCII_INTEGER.fullmatch(text):
            return epoch_ms(int(text))
        try:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _not_a_time(value) from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        try:
            return int(value.timestamp() * 1000)
        except (OverflowError, OSError, ValueError):
            raise _not_a_time(value, "outside the range of Unix milliseconds") from None
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
    raise _not_a_time(value, type(value).__name__)


# ---- pages ------------------------------------------------------------------------------------------------


def read_page(paging: Paging, data: Any, biz_type: str) -> tuple[list[dict[str, Any]], int | None]:
    """(records, total) of one page's ``data`` as ``paging`` describes it; a clear error for any other shape."""
    from airflow_provider_multimarkets.exceptions import MultiMarketsResponseError

    if paging.records_key is None:
        records = data
        total = None
    elif isinstance(data, dict):
        records = data.get(paging.records_key)
        if records is None:
            records = []
        raw_total = data.get(paging.total_key) if paging.total_key else None
        if raw_total is not None and (isinstance(raw_total, bool) or not isinstance(raw_total, int) or raw_total < 0):
            raise MultiMarketsResponseError(
                f"{biz_type}: the page's {paging.total_key} is {_short(raw_total)}, not a count. Check the host is "
                "the Open API."
            )
        total = raw_total
    else:
        raise MultiMarketsResponseError(
            f"{biz_type}: the page's data is {type(data).__name__}, not an object with '{paging.records_key}'."
        )
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise MultiMarketsResponseError(f"{biz_type}: the page's records are not a list of objects.")
    return records, total
