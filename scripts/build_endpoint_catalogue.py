"""Build ``airflow_provider_multimarkets/api/endpoint_catalogue.json`` from the vendor's OpenAPI file.

    python scripts/build_endpoint_catalogue.py [path/to/MultiMarkets-ClientAPI.openapi.en.yaml]

For every documented ``/global/{bizType}`` interface it keeps facts only, no descriptions: the
bizType, its ``version`` and ``group`` headers (from the interface's ``group=``/``version=`` lines,
else its header examples), the body fields with their JSON types, which are required, and how it
pages (``current``/``size`` in the body; the records under ``records`` or ``list``, the count in
``total`` or ``totalPage``, or a bare array). Run it again when the vendor publishes a new file;
``make test`` checks that the committed catalogue is what the script builds from the file.
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
JSON_TYPES = {"integer", "number", "string", "boolean", "array", "object"}
_LINE = re.compile(r"^\s*(group|version|bizType)\s*=\s*(\S+)\s*$", re.MULTILINE)


def _header_example(operation: dict[str, Any], name: str) -> str | None:
    for parameter in operation.get("parameters") or []:
        if parameter.get("in") == "header" and parameter.get("name") == name:
            example = parameter.get("example")
            if isinstance(example, (str, int, float)) and not str(example).startswith("{{"):
                return str(example)
    return None


def _schema(operation: dict[str, Any]) -> dict[str, Any]:
    content = (operation.get("requestBody") or {}).get("content") or {}
    schema = (content.get("application/json") or {}).get("schema") or {}
    return schema if isinstance(schema, dict) else {}


def _data_schema(operation: dict[str, Any]) -> dict[str, Any]:
    try:
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        data = schema["properties"]["data"]
    except (KeyError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def _paging(fields: dict[str, str], data: dict[str, Any]) -> dict[str, Any] | None:
    if "current" not in fields or "size" not in fields:
        return None
    if data.get("type") == "array":
        return {"records": None, "total": None}
    properties = data.get("properties") or {}
    records = next((k for k in ("records", "list", "rows") if k in properties), None)
    total = next((k for k in ("total", "totalPage") if k in properties), None)
    return {"records": records, "total": total}


def build(spec_path: Path) -> dict[str, Any]:
    import yaml

    raw = spec_path.read_bytes()
    spec = yaml.safe_load(raw)
    endpoints: dict[str, Any] = {}
    for path, operations in sorted(spec["paths"].items()):
        if not path.startswith("/global/"):
            continue
        operation = operations.get("post")
        if not isinstance(operation, dict):
            continue
        biz_type = path[len("/global/") :]
        lines = dict(_LINE.findall(operation.get("description") or ""))
        schema = _schema(operation)
        properties = schema.get("properties") or {}
        fields = {
            name: (prop.get("type") if prop.get("type") in JSON_TYPES else "any")
            for name, prop in sorted(properties.items())
            if isinstance(prop, dict)
        }
        required = sorted(name for name in (schema.get("required") or []) if isinstance(name, str))
        endpoints[biz_type] = {
            "version": lines.get("version") or _header_example(operation, "version"),
            "group": lines.get("group") or _header_example(operation, "group"),
            "fields": fields,
            "required": required,
            "paging": _paging(fields, _data_schema(operation)),
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
    return json.dumps(catalogue, indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    spec_path = Path(argv[1]) if len(argv) > 1 else DEFAULT_SPEC
    catalogue = build(spec_path)
    OUTPUT.write_text(render(catalogue))
    endpoints = catalogue["endpoints"].values()
    print(
        f"{OUTPUT.name}: {catalogue['source']['paths']} paths in the spec, {len(catalogue['endpoints'])} bizTypes, "
        f"{sum(1 for e in endpoints if e['version'] and e['group'])} with version and group, "
        f"{sum(1 for e in endpoints if e['paging'])} paged"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
