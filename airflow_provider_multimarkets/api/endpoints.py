"""Every documented interface, known by its bizType (pure logic: no Airflow, no network).

``endpoint_catalogue.json`` is generated from the vendor's OpenAPI file by
``scripts/build_endpoint_catalogue.py``: per bizType its ``version`` and ``group`` headers, its body
fields with their JSON types, the required ones, and how it pages. The hook fills the headers from
it when the caller gives none, and checks a payload before signing it (:func:`check_payload`), so a
missing field or a wrong type is named before any request is sent.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
}


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


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Any]:
    """The generated catalogue (read once per process, on first use)."""
    from importlib.resources import files

    text = files("airflow_provider_multimarkets.api").joinpath("endpoint_catalogue.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@lru_cache(maxsize=4096)
def endpoint(biz_type: str) -> Endpoint | None:
    """The documented interface of ``biz_type``, or ``None`` when the vendor's OpenAPI does not list it.

    Built once per bizType and process (the catalogue is fixed): a call pays a dictionary lookup."""
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
    )


def _type_ok(value: Any, json_type: str) -> bool:
    if json_type not in _PYTHON_TYPES:
        return True
    if isinstance(value, bool) and json_type in ("integer", "number"):
        return False
    return isinstance(value, _PYTHON_TYPES[json_type])


def check_payload(spec: Endpoint, payload: dict[str, Any]) -> None:
    """Raise :class:`MultiMarketsConfigError` naming every required field that is missing and every
    documented field whose value has the wrong JSON type. Fields the spec does not list pass."""
    missing = [name for name in spec.required if payload.get(name) is None or payload.get(name) == ""]
    wrong = [
        f"{name} ({type(payload[name]).__name__} {_short(payload[name])}, expected {spec.fields[name]})"
        for name in sorted(n for n in payload if isinstance(n, str))
        if name in spec.fields and payload[name] is not None and not _type_ok(payload[name], spec.fields[name])
    ]
    problems = []
    if missing:
        problems.append("missing required field(s) " + ", ".join(missing))
    if wrong:
        problems.append("wrong JSON type for " + "; ".join(wrong))
    if problems:
        raise MultiMarketsConfigError(
            f"{spec.biz_type}: {' and '.join(problems)}, as the vendor's OpenAPI documents the body. Nothing was "
            "sent. Fix the payload (numbers as JSON numbers, not strings, where the spec says integer)."
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: body fields of a time range, and the record field the range is about, per query interface
#: (by method name: every variant of one query uses the same names).
TIME_RANGES: dict[str, tuple[str | None, str | None, str]] = {
    "queryOrderPage": (None, None, "createTime"),
    "queryTradeRecordPage": ("executeStartTime", "executeEndTime", "executeTime"),
    "queryCapitalFlowList": ("startTime", "endTime", "createTime"),
    "queryPositionPage": ("startTime", "endTime", "openTime"),
}


def time_range_fields(biz_type: str) -> tuple[str | None, str | None, str | None]:
    """(body start field, body end field, record time field) of a query, ``(None, None, None)`` if unknown."""
    method = biz_type.rsplit(".", 1)[-1]
    return TIME_RANGES.get(method, (None, None, None))


def epoch_ms(value: Any) -> int:
    """A time as Unix milliseconds: a datetime (naive: UTC), an ISO 8601 text, or a number (ms)."""
    if isinstance(value, bool):
        raise MultiMarketsConfigError(f"Not a time: {value!r}.")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise MultiMarketsConfigError(
                f"Not a time: {value!r}. Give an ISO 8601 time (e.g. {{{{ data_interval_start }}}}) or Unix ms."
            ) from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp() * 1000)
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
    raise MultiMarketsConfigError(f"Not a time: {value!r} ({type(value).__name__}).")


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
