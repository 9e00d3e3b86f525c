"""Records to files: JSON Lines, CSV and (with ``pyarrow``) Parquet, local or object storage (no Airflow import
at module level).

:class:`TableFiles` streams records to a JSON Lines file in a private temporary directory, noting
the columns and their types as they pass, so memory stays flat whatever the row count. :meth:`publish`
then writes the CSV (and Parquet) from that file and publishes every file at its destination,
all or nothing: each is staged first (a temporary file beside its target in a local directory;
objects under a staging prefix on an ``ObjectStoragePath`` URL), and only once every one is staged
are they moved to their names. A failure while staging removes what was staged, so nothing of the
table is published; :meth:`discard` drops everything (a query that did not add up).

Column types (Parquet): a column of integers that all fit int64 is ``int64``; integers mixed with
floats make ``double``. A column with an integer outside int64 (e.g. 2**64) is written as
**text** (its exact decimal digits), and so is a float column with an integer beyond double's range
(10**400): the value is kept exactly, never rounded or overflowed. A record nested deeper than
:data:`MAX_RECORD_DEPTH` levels is refused with a clear error (documented records are flat).
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
#: lists and objects nested deeper than this in one record are refused (documented records are flat)
MAX_RECORD_DEPTH = 64
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return "int"
        try:
            float(value)
        except OverflowError:
            return "hugeint"  # beyond double's range: text only
        return "bigint"  # beyond int64: double or text
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
    if "float" in kinds and kinds <= {"int", "bigint", "float"}:
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
        from airflow_provider_multimarkets.storage.files import check_file_name

        self.name = check_file_name(name, "name")  # before the temporary directory: nothing to leak
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
            writer = csv.writer(handle)
            writer.writerow([csv_cell(field) for field in fields])  # a header is a cell too
            for record in self._records():
                writer.writerow([csv_cell(_text(record.get(field))) for field in fields])
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
                if isinstance(value, str):
                    return value
                if isinstance(value, (bool, int)):
                    return str(value)  # exact digits, however large
                text = _text(value)
                return text if isinstance(text, str) else json.dumps(text)
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
        try:
            made = {"jsonl": self._jsonl}
            if "csv" in wanted:
                made["csv"] = self._write_csv()
            if "parquet" in wanted and parquet_available():
                made["parquet"] = self._write_parquet()
            return _publish({fmt: path for fmt, path in made.items() if fmt in wanted}, destination)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def discard(self) -> None:
        self._handle.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def _publish(files: dict[str, str], destination: str) -> dict[str, str]:
    """Every file of ``files`` ({format: local path}) at ``destination``, all or nothing (see the module docs)."""
    from airflow_provider_multimarkets.storage.paths import is_object_store_url

    if is_object_store_url(destination):
        return _publish_to_store(files, destination)
    return _publish_to_directory(files, destination)


def _publish_to_directory(files: dict[str, str], destination: str) -> dict[str, str]:
    from contextlib import ExitStack

    from airflow_provider_multimarkets.exceptions import MultiMarketsStorageError
    from airflow_provider_multimarkets.storage.files import atomic_file, os_error_cause
    from airflow_provider_multimarkets.storage.paths import local_path

    directory = local_path(destination)
    targets = {fmt: os.path.join(directory, os.path.basename(path)) for fmt, path in files.items()}
    try:
        os.makedirs(directory, exist_ok=True)
        # every file is staged beside its target before any is renamed into place; an error while
        # staging removes every staged file (atomic_file), so nothing of the table is published
        with ExitStack() as stack:
            for fmt, path in files.items():
                handle = stack.enter_context(atomic_file(targets[fmt], binary=True))
                with open(path, "rb") as source:
                    shutil.copyfileobj(source, handle)
    except OSError as exc:
        cause, why = os_error_cause(exc)
        raise MultiMarketsStorageError(
            f"The table files could not be written to {directory}: {why}. Nothing was published. Fix the output "
            "path (space, permissions) and run the task again.",
            cause=cause,
        ) from None
    return targets


def _publish_to_store(files: dict[str, str], destination: str) -> dict[str, str]:
    import uuid

    from airflow_provider_multimarkets.exceptions import MultiMarketsStorageError
    from airflow_provider_multimarkets.storage.paths import filesystem

    fs, inner = filesystem(destination)
    staging = f"{inner}/.multimarkets-staging-{uuid.uuid4().hex}"
    names = {fmt: os.path.basename(path) for fmt, path in files.items()}
    staged: list[str] = []
    moved: list[str] = []
    try:
        for fmt, path in files.items():  # 1. upload every file under the staging prefix
            fs.put_file(path, f"{staging}/{names[fmt]}")
            staged.append(names[fmt])
        for name in list(staged):  # 2. only then move each to its name
            fs.mv(f"{staging}/{name}", f"{inner}/{name}")
            staged.remove(name)
            moved.append(name)
    except Exception as exc:
        left = _remove_quietly(fs, [f"{inner}/{n}" for n in moved] + [f"{staging}/{n}" for n in staged])
        raise MultiMarketsStorageError(
            f"The table files could not be published to {destination}: {type(exc).__name__}: {str(exc)[:300]}. "
            + ("Nothing was published" if not left else f"Remove what is left: {', '.join(left)}")
            + ". Check the URL, the bucket and the credentials, then run the task again.",
            cause="object store",
        ) from None
    _remove_quietly(fs, [staging])
    base = destination.rstrip("/")
    return {fmt: f"{base}/{name}" for fmt, name in names.items()}


def _remove_quietly(fs: Any, paths: list[str]) -> list[str]:
    """Remove ``paths`` from a store, as far as it lets us; returns those that could not be removed."""
    left = []
    for path in paths:
        try:
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except Exception:
            left.append(path)
    return left


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


def json_safe(value: Any, _depth: int = 0) -> Any:
    """``value`` with every NaN or infinity replaced by ``None``: the JSON written is always valid JSON.

    :raises MultiMarketsResponseError: lists and objects nested deeper than :data:`MAX_RECORD_DEPTH`.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dict, list, tuple)):
        if _depth >= MAX_RECORD_DEPTH:
            from airflow_provider_multimarkets.exceptions import MultiMarketsResponseError

            raise MultiMarketsResponseError(
                f"A record nests lists or objects deeper than {MAX_RECORD_DEPTH} levels: it is not a record the Open "
                "API documents (they are flat). Nothing was written; check the query and the server."
            )
        if isinstance(value, dict):
            return {k: json_safe(v, _depth + 1) for k, v in value.items()}
        return [json_safe(v, _depth + 1) for v in value]
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
