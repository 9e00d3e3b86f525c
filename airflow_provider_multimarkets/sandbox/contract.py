"""The sandbox's reading of the vendor's contract: request checks, version/group, answers shaped by the 200 schemas.

It reads its own copy of the spec (``contract.json``, built by ``scripts/build_sandbox_contract.py``
with ``jsonschema-path``: OpenAPI 3.0 schema objects as the spec writes them) and validates with
``openapi-schema-validator``, never with the client's endpoint catalogue or payload check.

* :meth:`Contract.check_headers`: a documented ``version``/``group`` must be sent as documented;
* :meth:`Contract.check_body`: the body against the request schema, answered with the documented
  business codes: ``CFDWBWE000005`` (a required field missing or empty), ``CFDWBWE000006`` (wrong
  format: a JSON type, an integer outside its format, a pattern), ``CFDWBWE000007`` (any other rule);
* :meth:`Contract.shape`: any value made valid for the answer's ``data`` schema: every documented
  field present, values coerced to the documented types, fields the spec does not list dropped;
  what the handler does not give comes from the spec's examples where they fit, else from the schema;
* :meth:`Contract.page`: rows as the interface's documented page (records key, ``total`` or
  ``totalPage``, ``current``, ``size``);
* :meth:`Contract.answer_errors`: what the 200 schema says is wrong with an answer (for tests).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

#: the business codes of the documented error table (OA-ERR) for a refused body
CODE_EMPTY = "CFDWBWE000005"
CODE_FORMAT = "CFDWBWE000006"
CODE_INVALID = "CFDWBWE000007"
#: the gateway's answer to a version or group no service of the bizType has (the sandbox's choice:
#: a Dubbo gateway finds no provider, "downstream interface missing")
CODE_NO_SERVICE = "GGATEWAY_CODE_010"
_FORMAT_RULES = frozenset({"type", "format", "pattern"})
_INTEGER_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "long": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_MISSING: Any = object()
#: arrays the sandbox makes up (no value, no example) hold one item, down to this depth
_MAX_DEPTH = 6
#: request bodies whose verdict is kept (the oldest dropped first)
_MAX_VERDICTS = 4096


class BizError(Exception):
    """An error envelope of the interface: ``code``, ``msg`` and its ``msgParams``."""

    def __init__(self, code: str, msg: str, msg_params: str | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.msg_params = msg_params


@lru_cache(maxsize=1)
def _validator_class() -> Any:
    from jsonschema import FormatChecker, ValidationError, validators
    from openapi_schema_validator import OAS30Validator

    base_type = OAS30Validator.VALIDATORS["type"]

    def type_keyword(validator: Any, data_type: Any, instance: Any, schema: Any) -> Any:
        if data_type == "null":  # written in the spec although OpenAPI 3.0 has no null type
            if instance is not None:
                yield ValidationError(f"{instance!r} is not null")
            return
        yield from base_type(validator, data_type, instance, schema)

    def is_integer(checker: Any, instance: Any) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    checker = FormatChecker(formats=())
    for name, (low, high) in _INTEGER_RANGES.items():
        checker.checks(name)(lambda v, low=low, high=high: not is_integer(None, v) or low <= v <= high)
    checker.checks("double")(lambda v: not isinstance(v, float) or math.isfinite(v))
    checker.checks("float")(lambda v: not isinstance(v, float) or math.isfinite(v))
    cls = validators.extend(
        OAS30Validator,
        validators={"type": type_keyword},
        type_checker=OAS30Validator.TYPE_CHECKER.redefine("integer", is_integer).redefine(
            "null", lambda c, i: i is None
        ),
    )
    return cls, checker


def _without_nulls(value: Any) -> Any:
    """A Java server reads a ``null`` member as a field not given."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _field(path: Any, name: Any = None) -> str:
    parts = [*path, *([name] if name is not None else [])]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


class Contract:
    """The documented interfaces, by bizType."""

    def __init__(self, interfaces: dict[str, Any]) -> None:
        self.interfaces = interfaces
        self._validators: dict[tuple[str, str], Any] = {}
        self._examples: dict[str, Any] = {}
        self._fitters: dict[tuple[str, str], Fit] = {}
        self._verdicts: dict[tuple[str, str], BizError | None] = {}

    @classmethod
    def load(cls) -> Contract:
        return _load()

    def __contains__(self, biz_type: object) -> bool:
        return biz_type in self.interfaces

    def __len__(self) -> int:
        return len(self.interfaces)

    def versions(self, biz_type: str) -> list[str]:
        return list(self.interfaces[biz_type]["versions"])

    def groups(self, biz_type: str) -> list[str]:
        return list(self.interfaces[biz_type]["groups"])

    def request_schema(self, biz_type: str) -> dict[str, Any]:
        return dict(self.interfaces[biz_type]["request"] or {})

    def response_schema(self, biz_type: str) -> dict[str, Any]:
        return dict(self.interfaces[biz_type]["response"] or {})

    def data_schema(self, biz_type: str) -> dict[str, Any]:
        return dict((self.response_schema(biz_type).get("properties") or {}).get("data") or {})

    def _validator(self, biz_type: str, which: str) -> Any:
        key = (biz_type, which)
        if key not in self._validators:
            cls, checker = _validator_class()
            schema = self.request_schema(biz_type) if which == "request" else self.response_schema(biz_type)
            self._validators[key] = cls(schema, format_checker=checker)
        return self._validators[key]

    # ---- requests -----------------------------------------------------------------------------------

    def check_headers(self, biz_type: str, headers: dict[str, str]) -> None:
        """A documented ``version``/``group`` must be one of the documented values (headers lower-case)."""
        for name in ("version", "group"):
            documented = self.interfaces[biz_type][f"{name}s"]
            sent = (headers.get(name) or "").strip()
            if documented and sent not in documented:
                raise BizError(
                    CODE_NO_SERVICE,
                    f"no service for {biz_type} with {name} {sent or '(none)'}: the interface is published as "
                    f"{name} {' or '.join(documented)}",
                )

    def check_body(self, biz_type: str, body: dict[str, Any], text: str | None = None) -> None:
        """The body against the request schema; the first problem as the gateway's business code.

        ``text``, the body as received, keys a bounded cache of verdicts: the same body is checked once."""
        if text is None:
            self._check_body(biz_type, body)
            return
        key = (biz_type, text)
        verdict = self._verdicts.get(key, _MISSING)
        if verdict is _MISSING:
            try:
                self._check_body(biz_type, body)
                verdict = None
            except BizError as exc:
                verdict = exc
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts.pop(next(iter(self._verdicts)))
            self._verdicts[key] = verdict
        if verdict is not None:
            raise BizError(verdict.code, verdict.msg, verdict.msg_params)

    def _check_body(self, biz_type: str, body: dict[str, Any]) -> None:
        validator = self._validator(biz_type, "request")
        errors = list(validator.iter_errors(_without_nulls(body)))
        if not errors:
            return
        missing: list[str] = []
        for error in errors:
            if error.validator == "required" and isinstance(error.instance, dict):
                missing += [_field(error.path, n) for n in error.validator_value if n not in error.instance]
        # "" is no value to the gateway either (a Java @NotBlank)
        missing += self._empty_required(self.request_schema(biz_type), body, [])
        if missing:
            names = ", ".join(dict.fromkeys(missing))
            raise BizError(CODE_EMPTY, f"{names} must not be empty", names)
        error = sorted(errors, key=lambda e: (e.validator not in _FORMAT_RULES, list(map(str, e.path))))[0]
        where = _field(error.path)
        if error.validator in _FORMAT_RULES:
            raise BizError(CODE_FORMAT, f"{where} has a wrong format ({error.message[:120]})", where)
        raise BizError(CODE_INVALID, f"{where}: parameter validation failed ({error.message[:120]})", where)

    def _empty_required(self, schema: dict[str, Any], value: Any, path: list[Any]) -> list[str]:
        if not isinstance(value, dict) or not isinstance(schema, dict):
            return []
        found = [_field(path, n) for n in schema.get("required") or [] if value.get(n) == ""]
        for name, sub in (schema.get("properties") or {}).items():
            if isinstance(value.get(name), dict):
                found += self._empty_required(sub, value[name], [*path, name])
        return found

    # ---- answers --------------------------------------------------------------------------------------

    def example_data(self, biz_type: str) -> Any:
        """The ``data`` of the interface's documented answer example (the first with one), or missing."""
        if biz_type not in self._examples:
            found = _MISSING
            for example in self.interfaces[biz_type]["examples"]["response"]:
                if isinstance(example, dict) and "data" in example:
                    found = example["data"]
                    break
            self._examples[biz_type] = found
        return self._examples[biz_type]

    def _fitter(self, biz_type: str, name: str) -> Fit:
        key = (biz_type, name)
        fitter = self._fitters.get(key)
        if fitter is None:
            properties = (self.interfaces[biz_type]["response"] or {}).get("properties") or {}
            fitter = self._fitters[key] = _compile(properties.get(name) or {}) if name in properties else _any
        return fitter

    def shape(self, biz_type: str, value: Any = _MISSING) -> Any:
        """``value`` made valid for the interface's ``data`` schema, the gaps filled from its example."""
        return self._fitter(biz_type, "data")(value, self.example_data(biz_type))

    def shape_envelope(self, biz_type: str, envelope: dict[str, Any]) -> dict[str, Any]:
        """The envelope fields in their documented types (``msgParams``: a string, or null where the
        schema says null); ``data`` is left as given."""
        properties = (self.interfaces[biz_type]["response"] or {}).get("properties") or {}
        out = dict(envelope)
        for name, value in envelope.items():
            if name == "data" or name not in properties:
                continue
            fitted = self._fitter(biz_type, name)(value, _MISSING)
            out[name] = "" if fitted is _MISSING else fitted
        return out

    def page_shape(self, biz_type: str) -> tuple[str | None, str | None]:
        """(records key, count key) of a paged answer: ``(None, None)`` when ``data`` is the array."""
        data = self.data_schema(biz_type)
        if data.get("type") == "array":
            return None, None
        properties = data.get("properties") or {}
        arrays = [k for k, v in properties.items() if isinstance(v, dict) and v.get("type") == "array"]
        records = next((k for k in ("records", "list", "rows", "recordList") if k in arrays), None)
        records = records or (arrays[0] if arrays else None)
        for count in ("total", "totalPage"):
            if (properties.get(count) or {}).get("type") in ("integer", "string"):
                return records, count
        return records, None

    def page(self, biz_type: str, rows: list[Any], current: int, size: int, extra: dict[str, Any] | None = None) -> Any:
        """One page of ``rows`` as the interface documents its page."""
        begin = (current - 1) * size
        chunk = rows[begin : begin + size]
        records_key, count_key = self.page_shape(biz_type)
        if records_key is None and count_key is None and self.data_schema(biz_type).get("type") == "array":
            return self.shape(biz_type, chunk)
        value: dict[str, Any] = {**(extra or {}), "current": current, "size": size}
        if records_key is not None:
            value[records_key] = chunk
        if count_key == "total":
            value["total"] = len(rows)
        elif count_key == "totalPage":
            value["totalPage"] = (len(rows) + size - 1) // size
        return self.shape(biz_type, value)

    def answer_errors(self, biz_type: str, envelope: dict[str, Any]) -> list[str]:
        """What the interface's 200 schema refuses in ``envelope`` (empty: valid)."""
        validator = self._validator(biz_type, "response")
        return [f"{_field(e.path)}: {e.message[:200]}" for e in validator.iter_errors(envelope)]


@lru_cache(maxsize=1)
def _load() -> Contract:
    from importlib.resources import files

    text = files("airflow_provider_multimarkets.sandbox").joinpath("contract.json").read_text(encoding="utf-8")
    return Contract(json.loads(text)["interfaces"])


# ---- values made valid for a schema ----------------------------------------------------------------------


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return [str(k) for k in kind]
    if isinstance(kind, str):
        return [kind]
    if "properties" in schema:
        return ["object"]
    if "items" in schema:
        return ["array"]
    return []


Fit = Callable[[Any, Any], Any]


def _compile(schema: Any, depth: int = 0) -> Fit:
    """A function ``(value, example) -> value valid for schema``: ``value`` coerced to the schema where
    it can be, else ``example`` where it fits, else one the schema allows (``_MISSING`` only for an
    optional field with nothing to say). Compiled once per schema: answers are shaped on every call."""
    if not isinstance(schema, dict):
        return lambda value, example: value if value is not _MISSING else example
    types = _types(schema)
    nullable = schema.get("nullable") is True or "null" in types
    null_type = "null" in types
    kind = next((t for t in types if t != "null"), None)
    if kind == "object" or (kind is None and "properties" in schema):
        body = _compile_object(schema, depth)
    elif kind == "array":
        body = _compile_array(schema, depth)
    elif kind is None:
        body = _any
    else:
        body = _compile_scalar(kind, schema)

    def fit(value: Any, example: Any) -> Any:
        if value is None:
            if nullable:
                return None
            value = _MISSING
        if null_type and value is _MISSING:
            return None
        return body(value, example)

    return fit


def _any(value: Any, example: Any) -> Any:
    for candidate in (value, example):
        if candidate is not _MISSING and candidate is not None:
            return candidate
    return ""


def _compile_object(schema: dict[str, Any], depth: int) -> Fit:
    fields = [(str(name), _compile(sub, depth + 1)) for name, sub in (schema.get("properties") or {}).items()]

    def fit(value: Any, example: Any) -> Any:
        given = value if isinstance(value, dict) else {}
        sample = example if isinstance(example, dict) else {}
        if not fields:  # a free-form object: what was given, else the example
            return dict(given) if given else (dict(sample) if sample else {})
        out: dict[str, Any] = {}
        for name, field_fit in fields:
            fitted = field_fit(given.get(name, _MISSING), sample.get(name, _MISSING))
            if fitted is not _MISSING:
                out[name] = fitted
        return out

    return fit


def _compile_array(schema: dict[str, Any], depth: int) -> Fit:
    item = _compile(schema.get("items") or {}, depth + 1) if depth < _MAX_DEPTH else _compile({}, depth + 1)
    low = int(schema.get("minItems") or 0)
    high = schema.get("maxItems")
    synthesise = depth < _MAX_DEPTH

    def fit(value: Any, example: Any) -> Any:
        sample = example[0] if isinstance(example, list) and example else _MISSING
        if isinstance(value, (list, tuple)):
            rows = [item(v, sample) for v in value]
        elif isinstance(example, list):
            rows = [item(_MISSING, v) for v in example]
        elif synthesise:
            rows = [item(_MISSING, _MISSING)]
        else:
            rows = []
        rows = [r for r in rows if r is not _MISSING]
        while len(rows) < low:
            rows.append(item(_MISSING, sample))
        return rows[: int(high)] if high is not None else rows

    return fit


_PYTHON_KINDS = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


def _compile_scalar(kind: str, schema: dict[str, Any]) -> Fit:
    default = _default(kind, schema)
    documented = schema.get("example", _MISSING)
    plain = _PYTHON_KINDS.get(kind)
    rules = {"enum", "const", "minimum", "maximum", "maxLength"} & set(schema)
    low, high = _INTEGER_RANGES.get(str(schema.get("format")), (None, None))
    # the common case, a value already of the documented kind with no rule to check: as it is
    quick = plain is not None and not rules and kind != "number"

    def fit(value: Any, example: Any) -> Any:
        if quick and type(value) is plain and (low is None or low <= value <= high):  # type(): a bool is no int here
            return value
        for candidate in (value, example, documented):
            if candidate is _MISSING or candidate is None:
                continue
            fitted = _scalar(kind, schema, candidate)
            if fitted is not _MISSING:
                return fitted
        return default

    return fit


def _scalar(kind: str, schema: dict[str, Any], value: Any) -> Any:
    """``value`` as a ``kind`` the schema accepts, or ``_MISSING``."""
    out: Any = _MISSING
    if kind == "string":
        if isinstance(value, str):
            out = value
        elif isinstance(value, bool):
            out = "true" if value else "false"
        elif isinstance(value, int):
            out = str(value)
        elif isinstance(value, float) and math.isfinite(value):
            out = repr(value)
        if out is not _MISSING and schema.get("maxLength") is not None:
            out = out[: int(schema["maxLength"])]
    elif kind == "integer":
        if isinstance(value, bool):
            out = _MISSING
        elif isinstance(value, int):
            out = value
        elif isinstance(value, float) and math.isfinite(value) and value == int(value):
            out = int(value)
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.strip().isascii():
            out = int(value.strip())
        if out is not _MISSING:
            low, high = _INTEGER_RANGES.get(str(schema.get("format")), (None, None))
            if low is not None and not low <= out <= high:
                out = _MISSING
    elif kind == "number":
        if isinstance(value, bool):
            out = _MISSING
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out = value
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            out = number if math.isfinite(number) else _MISSING
    elif kind == "boolean":
        if isinstance(value, bool):
            out = value
        elif value in ("true", "false"):
            out = value == "true"
        elif value in (0, 1):
            out = bool(value)
    if out is _MISSING:
        return out
    enum = schema.get("enum")
    if enum and out not in enum:
        return _MISSING
    if "const" in schema and out != schema["const"]:
        return _MISSING
    for bound, ok in (("minimum", lambda v, b: v >= b), ("maximum", lambda v, b: v <= b)):
        if kind in ("integer", "number") and schema.get(bound) is not None and not ok(out, schema[bound]):
            return _MISSING
    return out


def _default(kind: str, schema: dict[str, Any]) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if kind == "string":
        return "x" * int(schema.get("minLength") or 0)
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        return low if low is not None and low > 0 else 0
    if kind == "boolean":
        return False
    return None
