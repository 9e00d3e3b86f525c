"""Records to files: JSON Lines, CSV and (with ``pyarrow``) Parquet, local or object storage (no Airflow import
at module level).

:class:`TableFiles` streams records to a JSON Lines file in a private temporary directory, noting
the columns and their types as they pass, so memory stays flat whatever the row count. :meth:`publish`
then writes the CSV (and Parquet) from that file and moves every file to its destination: a local
directory (renamed into place, so a reader never sees half a file) or an ``ObjectStoragePath``
URL (uploaded). :meth:`discard` drops everything (a query that did not add up).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import Any

FORMATS = ("jsonl", "csv", "parquet")
PARQUET_BATCH = 10_000


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


def _column_type(kinds: set[str]) -> str:
    kinds = kinds - {"null"}
    if not kinds:
        return "str"
    if kinds == {"int"}:
        return "int"
    if kinds <= {"int", "float"}:
        return "float"
    if kinds == {"bool"}:
        return "bool"
    return "str"


def _text(value: Any) -> Any:
    """A cell: scalars as they are, lists and objects as compact JSON."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(json_safe(value), separators=(",", ":"), ensure_ascii=False, default=str)
    return json_safe(value)


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


class TableFiles:
    """One table being written: :meth:`add` records, then :meth:`publish` or :meth:`discard`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows = 0
        self.columns: dict[str, set[str]] = {}
        self._dir = tempfile.mkdtemp(prefix="multimarkets-table-")
        self._jsonl = os.path.join(self._dir, f"{name}.jsonl")
        self._handle = open(self._jsonl, "w", encoding="utf-8")  # noqa: SIM115 - closed in publish/discard

    def add(self, records: Iterable[dict[str, Any]]) -> int:
        count = 0
        for record in records:
            for key, value in record.items():
                self.columns.setdefault(str(key), set()).add(_kind(value))
            self._handle.write(
                json.dumps(json_safe(record), separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False)
            )
            self._handle.write("\n")
            count += 1
        self.rows += count
        return count

    def _records(self) -> Iterable[dict[str, Any]]:
        with open(self._jsonl, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)

    def _write_csv(self) -> str:
        path = os.path.join(self._dir, f"{self.name}.csv")
        fields = list(self.columns) or ["empty"]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for record in self._records():
                writer.writerow({k: csv_cell(_text(v)) for k, v in record.items()})
        return path

    def _write_parquet(self) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        types = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "str": pa.string()}
        kinds = {name: _column_type(k) for name, k in self.columns.items()}
        schema = pa.schema([(name, types[kind]) for name, kind in kinds.items()] or [("empty", pa.string())])
        path = os.path.join(self._dir, f"{self.name}.parquet")

        def cell(value: Any, kind: str) -> Any:
            if value is None:
                return None
            if kind == "str":
                return value if isinstance(value, str) else _text(value) if not isinstance(value, bool) else str(value)
            if kind == "float":
                return float(value)
            return value

        with pq.ParquetWriter(path, schema) as writer:
            batch: list[dict[str, Any]] = []
            for record in self._records():
                batch.append({name: cell(record.get(name), kind) for name, kind in kinds.items()})
                if len(batch) >= PARQUET_BATCH:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    batch = []
            if batch or self.rows == 0:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        return path

    def publish(self, destination: str, formats: Iterable[str] = FORMATS) -> dict[str, str]:
        """Write the formats asked for (Parquet only when ``pyarrow`` is installed) and move them to
        ``destination`` (a directory or an object-store URL); returns ``{format: path}``."""
        self._handle.close()
        wanted = [f for f in formats if f in FORMATS]
        made = {"jsonl": self._jsonl}
        if "csv" in wanted:
            made["csv"] = self._write_csv()
        if "parquet" in wanted and parquet_available():
            made["parquet"] = self._write_parquet()
        try:
            return {fmt: _move(path, destination) for fmt, path in made.items() if fmt in wanted}
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def discard(self) -> None:
        self._handle.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _move(path: str, destination: str) -> str:
    from airflow_provider_multimarkets.storage.files import atomic_file
    from airflow_provider_multimarkets.storage.paths import is_object_store_url, local_path

    name = os.path.basename(path)
    if is_object_store_url(destination):
        from airflow_provider_multimarkets.storage.paths import filesystem

        fs, inner = filesystem(destination)
        target = f"{inner}/{name}"
        fs.put_file(path, target)
        return f"{destination.rstrip('/')}/{name}"
    directory = local_path(destination)
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, name)
    with open(path, "rb") as source, atomic_file(target, binary=True) as handle:
        shutil.copyfileobj(source, handle)
    return target


def read_jsonl(path: str) -> Iterable[dict[str, Any]]:
    """The records of a JSON Lines file that :meth:`TableFiles.publish` wrote: a local path, a
    ``file://`` URL, or an object-store URL.

    Not :func:`~.files.complete_lines`: a published file is whole (renamed or uploaded in one
    piece), so every non-blank line is a record, the last one too.
    """
    from contextlib import ExitStack

    from airflow_provider_multimarkets.storage.paths import is_object_store_url, local_path

    with ExitStack() as stack:
        if is_object_store_url(path):
            from airflow_provider_multimarkets.storage.paths import filesystem

            directory, _, name = path.rstrip("/").rpartition("/")
            fs, inner = filesystem(directory)
            handle = stack.enter_context(fs.open(f"{inner}/{name}", "r", encoding="utf-8"))
        else:
            handle = stack.enter_context(open(local_path(path), encoding="utf-8"))
        for line in handle:
            if line.strip():
                yield json.loads(line)


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None``: the JSON written is always valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


#: A cell starting with one of these is a formula to a spreadsheet (CSV injection): it is written
#: with a leading apostrophe, which spreadsheets show as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:  # a plain negative number stays a number
            float(value)
        except ValueError:
            return "'" + value
    return value
