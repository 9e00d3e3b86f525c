"""Build ``airflow_provider_multimarkets/api/endpoint_catalogue.json`` from the vendor's OpenAPI file.

    python scripts/build_endpoint_catalogue.py [path/to/MultiMarkets-ClientAPI.openapi.en.yaml]

For every documented ``/global/{bizType}`` interface it keeps facts only, no descriptions:

* the ``version`` and ``group`` headers wherever the spec writes them: the header parameters'
  examples, and ``version=0.0.1`` / ``group = tradeApi`` / ``version: 0.0.1`` anywhere in the
  interface's description (alone on a line or inside a sentence). All documented values are kept
  (``versions``, ``groups``); the default is the header example, else the first one written;
* the request body and the answer's ``data`` as compact JSON Schema (draft 2020-12): every
  ``$ref`` followed and ``allOf`` merged with the ``referencing`` library (the resolver
  ``jsonschema`` is built on), OpenAPI 3.0's ``nullable`` turned into a ``null`` type, and only the
  keywords a validator reads (types, formats, properties, required, items, enums, bounds,
  lengths); a schema that contains itself keeps one copy under ``$defs``;
* the body fields with their JSON types and the required ones (the top level, for messages);
* how it pages, read from the answer's schema: ``current``/``size`` in the body, the records in the
  one array property of ``data`` (``records``, ``list``, ``recordList``) or ``data`` itself, the count
  in ``total`` (records) or ``totalPage`` (pages).

Run it again when the vendor publishes a new file; ``make test`` checks that the committed
catalogue is what the script builds from the file.
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
OUTPUT = ROOT / "airflow_provider_multimarkets" / "api" / "endpoint_catalogue.json"
SPEC_URI = "urn:multimarkets:openapi"
JSON_TYPES = ("integer", "number", "string", "boolean", "array", "object", "null")
#: ``version=0.0.1``, ``group = tradeApi``, ``version: 0.0.1``: anywhere in a description
_HEADER_TEXT = re.compile(r"(?<![A-Za-z])(version|group)\s*[=:\uff1a]\s*([A-Za-z0-9][A-Za-z0-9_.\-]*[A-Za-z0-9])")
#: keywords copied as they are (OpenAPI 3.0 and JSON Schema agree on them)
_KEPT = (
    "format",
    "enum",
    "const",
    "minimum",
    "maximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
)
_RECORDS_KEYS = ("records", "list", "rows", "recordList")


class _Compactor:
    """Resolves and compacts the schemas of one interface (``$ref`` through a ``referencing`` resolver)."""

    def __init__(self, resolver: Any) -> None:
        self.resolver = resolver
        self.defs: dict[str, Any] = {}
        self._wanted: set[str] = set()

    def schema(self, node: Any, resolver: Any, stack: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(node, dict):
            return {}
        if "$ref" in node:
            ref = str(node["$ref"])
            name = ref.rsplit("/", 1)[-1]
            if ref in stack:  # a schema that contains itself: one copy under $defs
                self._wanted.add(ref)
                target: dict[str, Any] = {"$ref": f"#/$defs/{name}"}
            else:
                resolved = resolver.lookup(ref)
                target = self.schema(resolved.contents, resolved.resolver, (*stack, ref))
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return self._merge(target, self.schema(extra, resolver, stack)) if extra else target
        if "allOf" in node:
            merged: dict[str, Any] = {}
            for part in node["allOf"]:
                merged = self._merge(merged, self.schema(part, resolver, stack))
            rest = {k: v for k, v in node.items() if k != "allOf"}
            return self._merge(merged, self.schema(rest, resolver, stack)) if rest else merged
        out: dict[str, Any] = {}
        kind = node.get("type")
        if isinstance(kind, str) and kind in JSON_TYPES:
            out["type"] = [kind, "null"] if node.get("nullable") is True and kind != "null" else kind
        elif isinstance(kind, list):
            out["type"] = [k for k in kind if k in JSON_TYPES]
        for key in _KEPT:
            if key in node:
                out[key] = node[key]
        for bound in ("Minimum", "Maximum"):  # OpenAPI 3.0 writes exclusiveMinimum: true next to minimum
            flag = node.get(f"exclusive{bound}")
            if flag is True and bound.lower() in out:
                out[f"exclusive{bound}"] = out.pop(bound.lower())
            elif isinstance(flag, (int, float)) and not isinstance(flag, bool):
                out[f"exclusive{bound}"] = flag
        if isinstance(node.get("properties"), dict):
            out["properties"] = {
                str(name): self.schema(prop, resolver, stack) for name, prop in node["properties"].items()
            }
        required = (
            [r for r in node.get("required") or [] if isinstance(r, str)]
            if isinstance(node.get("required"), list)
            else []
        )
        if required:
            out["required"] = sorted(set(required))
        if isinstance(node.get("items"), dict):
            out["items"] = self.schema(node["items"], resolver, stack)
        extra_props = node.get("additionalProperties")
        if isinstance(extra_props, bool):
            out["additionalProperties"] = extra_props
        elif isinstance(extra_props, dict):
            out["additionalProperties"] = self.schema(extra_props, resolver, stack)
        return out

    @staticmethod
    def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        merged = {**a, **{k: v for k, v in b.items() if k not in ("properties", "required")}}
        if "properties" in a or "properties" in b:
            merged["properties"] = {**a.get("properties", {}), **b.get("properties", {})}
        required = sorted(set(a.get("required", [])) | set(b.get("required", [])))
        if required:
            merged["required"] = required
        return merged

    def root(self, node: Any) -> dict[str, Any]:
        """A top-level schema, with the ``$defs`` its self-references need."""
        self.defs, self._wanted = {}, set()
        out = self.schema(node, self.resolver)
        done: set[str] = set()
        while self._wanted - done:
            ref = sorted(self._wanted - done)[0]
            done.add(ref)
            resolved = self.resolver.lookup(ref)
            self.defs[ref.rsplit("/", 1)[-1]] = self.schema(resolved.contents, resolved.resolver, (ref,))
        if self.defs:
            out["$defs"] = dict(sorted(self.defs.items()))
        return out


def _header_values(operation: dict[str, Any], name: str) -> list[str]:
    values = []
    for parameter in operation.get("parameters") or []:
        if not isinstance(parameter, dict) or parameter.get("in") != "header":
            continue
        if str(parameter.get("name", "")).lower() != name:
            continue
        example = parameter.get("example")
        if isinstance(example, (str, int, float)) and str(example).strip() and not str(example).startswith("{{"):
            values.append(str(example).strip())
    return values


def _documented(operation: dict[str, Any], name: str) -> tuple[str | None, list[str]]:
    """(default, every documented value) of the ``version`` or ``group`` header."""
    from_header = _header_values(operation, name)
    from_text = [v for key, v in _HEADER_TEXT.findall(str(operation.get("description") or "")) if key == name]
    values = list(dict.fromkeys(from_header + from_text))
    return (values[0] if values else None), values


def _json_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if len(kinds) == 1 else "any"
    return kind if isinstance(kind, str) else "any"


def _paging(request: dict[str, Any], data: dict[str, Any]) -> dict[str, Any] | None:
    body = request.get("properties") or {}
    if "current" not in body or "size" not in body:
        return None
    if _json_type(data) == "array":
        return {"records": None, "total": None}
    properties = data.get("properties") or {}
    arrays = [k for k, v in properties.items() if _json_type(v) == "array"]
    preferred = [k for k in _RECORDS_KEYS if k in arrays]
    records = preferred[0] if preferred else (arrays[0] if len(arrays) == 1 else None)
    if records is None:
        return None  # the answer has no list of records: nothing to page through
    total = next((k for k in ("total", "totalPage") if _json_type(properties.get(k) or {}) == "integer"), None)
    return {"records": records, "total": total}


def _content_schema(container: Any) -> Any:
    content = (container or {}).get("content") or {}
    return (content.get("application/json") or {}).get("schema") or {}


def build(spec_path: Path) -> dict[str, Any]:
    import yaml
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    raw = spec_path.read_bytes()
    spec = yaml.safe_load(raw)
    # OpenAPI 3.0 schema objects are a draft-4 dialect; the whole file is one resource, so every
    # "#/components/schemas/..." reference is looked up in it.
    registry = Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT4))
    compactor = _Compactor(registry.resolver(base_uri=SPEC_URI))
    endpoints: dict[str, Any] = {}
    for path, operations in sorted(spec["paths"].items()):
        if not path.startswith("/global/"):
            continue
        operation = operations.get("post")
        if not isinstance(operation, dict):
            continue
        biz_type = path[len("/global/") :]
        request = compactor.root(_content_schema(operation.get("requestBody")))
        envelope = compactor.root(_content_schema((operation.get("responses") or {}).get("200")))
        data = (envelope.get("properties") or {}).get("data") or {}
        if "$defs" in envelope and data:
            data = {**data, "$defs": envelope["$defs"]}
        version, versions = _documented(operation, "version")
        group, groups = _documented(operation, "group")
        properties = request.get("properties") or {}
        endpoints[biz_type] = {
            "version": version,
            "versions": versions,
            "group": group,
            "groups": groups,
            "fields": {name: _json_type(prop) for name, prop in sorted(properties.items())},
            "required": list(request.get("required") or []),
            "paging": _paging(request, data),
            "request": request,
            "response": data,
        }
    return {
        "source": {
            "file": spec_path.name,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "paths": len(spec["paths"]),
        },
        "endpoints": endpoints,
    }


def render(catalogue: dict[str, Any]) -> str:
    """One line per bizType: small in the wheel, and a diff shows which interfaces changed."""
    lines = ["{", f' "source": {json.dumps(catalogue["source"], sort_keys=True)},', ' "endpoints": {']
    items = sorted(catalogue["endpoints"].items())
    for index, (biz_type, entry) in enumerate(items):
        comma = "," if index < len(items) - 1 else ""
        text = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        lines.append(f"  {json.dumps(biz_type)}: {text}{comma}")
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    spec_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_SPEC
    catalogue = build(spec_path)
    OUTPUT.write_text(render(catalogue), encoding="utf-8")
    endpoints = list(catalogue["endpoints"].values())
    print(
        f"{OUTPUT.name}: {catalogue['source']['paths']} paths in the spec, {len(endpoints)} bizTypes, "
        f"{sum(1 for e in endpoints if e['version'])} with a version, {sum(1 for e in endpoints if e['group'])} "
        f"with a group, {sum(1 for e in endpoints if e['request'].get('properties'))} with body fields, "
        f"{sum(1 for e in endpoints if e['paging'])} paged"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
