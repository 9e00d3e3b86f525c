"""Build the sandbox's own copy of the vendor's contract: ``airflow_provider_multimarkets/sandbox/contract.json``.

    python scripts/build_sandbox_contract.py [path/to/MultiMarkets-ClientAPI.openapi.en.yaml]

The sandbox must not check requests with the client's reading of the spec (the endpoint
catalogue): a mistake there would then pass every test. So this copy is built by other code, with
another library: the spec is walked with ``jsonschema-path`` (which follows every ``$ref`` as it
goes), and the schemas are kept as the spec writes them, OpenAPI 3.0 schema objects
(``nullable``, ``example``), for the sandbox to validate with ``openapi-schema-validator``. Per
``/global/{bizType}`` interface it keeps:

* ``versions``/``groups``: the ``version``/``group`` values of its header parameters and of its
  description (``version=0.0.1`` alone on a line, in a sentence, ``version: 0.0.1``);
* ``request``: the body schema; ``response``: the whole 200 answer's schema (the envelope and its
  ``data``), descriptions and titles left out; a schema met again inside itself is cut to ``{}``;
* ``examples``: the documented request body example and answer examples, as written.

``make test`` checks that the committed copy is what this script builds from the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT.parent / "shared" / "MultiMarkets-ClientAPI.openapi.en.yaml"
OUTPUT = ROOT / "airflow_provider_multimarkets" / "sandbox" / "contract.json"
#: keys of a schema object that carry no rule
_PROSE = frozenset({"description", "title", "examples", "deprecated", "externalDocs", "xml"})
_MAPS = frozenset({"properties"})  # a name -> schema map: every key is a field


def _value(path: Any) -> Any:
    """A plain copy of what ``path`` points at (its ``$ref`` already followed)."""
    with path.open() as node:
        return json.loads(json.dumps(node, ensure_ascii=False, default=str))


def _schema(path: Any, stack: tuple[int, ...] = ()) -> Any:
    """The schema at ``path`` with every reference inlined (through ``jsonschema-path``)."""
    with path.open() as node:
        ident = id(node)
        if isinstance(node, dict):
            kind, keys = "object", list(node.keys())
        elif isinstance(node, list):
            kind, keys = "array", list(range(len(node)))
        else:
            return node
    if kind == "array":
        return [_schema(path / index, stack) for index in keys]
    if ident in stack:
        return {}  # the schema contains itself: the sandbox does not follow it further
    out: dict[str, Any] = {}
    for key in keys:
        name = str(key)
        if name in _PROSE:
            continue
        if name == "example":
            out[name] = _value(path / name)
        elif name in _MAPS:
            with (path / name).open() as mapping:
                field_names = [str(k) for k in mapping] if isinstance(mapping, dict) else []
            out[name] = {field: _schema(path / name / field, (*stack, ident)) for field in field_names}
        else:
            out[name] = _schema(path / name, (*stack, ident))
    return out


def _headers(operation: Any, name: str) -> list[str]:
    """Values of the ``name`` header: parameter examples first, then the description's mentions."""
    found: list[str] = []
    with operation.open() as op:
        parameters = list(op.get("parameters") or [])
        description = str(op.get("description") or "")
    for parameter in parameters:
        if str(parameter.get("name", "")).casefold() != name or parameter.get("in") != "header":
            continue
        example = str(parameter.get("example", "") or "").strip()
        if example and "{{" not in example:
            found.append(example)
    for match in re.finditer(rf"\b{name}\b[ \t]*[=:\uff1a][ \t]*([0-9A-Za-z][0-9A-Za-z_.-]*)", description):
        found.append(match.group(1).rstrip(".-"))
    unique: list[str] = []
    for value in found:
        if value not in unique:
            unique.append(value)
    return unique


def _examples(content: Any) -> list[Any]:
    with content.open() as node:
        names = list(node.keys()) if isinstance(node, dict) else []
    values: list[Any] = []
    if "example" in names:
        values.append(_value(content / "example"))
    if "examples" in names:
        with (content / "examples").open() as examples:
            keys = list(examples.keys())
        for key in keys:
            with (content / "examples" / key).open() as example:
                values.append(json.loads(json.dumps(example.get("value"), default=str)))
    parsed = []
    for value in values:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                continue
        if value not in (None, ""):
            parsed.append(value)
    return parsed


def build(spec_path: Path) -> dict[str, Any]:
    import yaml
    from jsonschema_path import SchemaPath

    raw = spec_path.read_bytes()
    spec = yaml.safe_load(raw)
    root = SchemaPath.from_dict(spec)
    interfaces: dict[str, Any] = {}
    for url in sorted(spec["paths"]):
        if not url.startswith("/global/") or "post" not in spec["paths"][url]:
            continue
        operation = root / "paths" / url / "post"
        request = operation / "requestBody" / "content" / "application/json"
        answer = operation / "responses" / "200" / "content" / "application/json"
        interfaces[url.removeprefix("/global/")] = {
            "versions": _headers(operation, "version"),
            "groups": _headers(operation, "group"),
            "request": _schema(request / "schema") if request.exists() else {},
            "response": _schema(answer / "schema") if answer.exists() else {},
            "examples": {
                "request": _examples(request) if request.exists() else [],
                "response": _examples(answer) if answer.exists() else [],
            },
        }
    return {"source": {"file": spec_path.name, "sha256": hashlib.sha256(raw).hexdigest()}, "interfaces": interfaces}


def render(contract: dict[str, Any]) -> str:
    lines = ["{", f'"source": {json.dumps(contract["source"], sort_keys=True)},', '"interfaces": {']
    items = list(contract["interfaces"].items())
    for index, (biz_type, entry) in enumerate(items):
        comma = "," if index < len(items) - 1 else ""
        lines.append(f"{json.dumps(biz_type)}: {json.dumps(entry, separators=(',', ':'), ensure_ascii=False)}{comma}")
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    spec_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_SPEC
    contract = build(spec_path)
    OUTPUT.write_text(render(contract), encoding="utf-8")
    print(f"{OUTPUT.name}: {len(contract['interfaces'])} interfaces")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
