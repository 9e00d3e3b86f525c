"""A push log opened or read by its path: a local file, or segments under an object-store URL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from airflow_provider_multimarkets.storage.files import complete_lines
from airflow_provider_multimarkets.storage.paths import is_object_store_url, local_path
from airflow_provider_multimarkets.storage.push_log import PushLog


def open_push_log(path: str | None, **kwargs: Any) -> PushLog:
    """The push log for ``path``: a local file, or segments under an object-store URL."""
    if is_object_store_url(path):
        from airflow_provider_multimarkets.storage.segments import SegmentedPushLog

        assert path is not None
        return SegmentedPushLog(path, **kwargs)
    return PushLog(None if path is None else local_path(path), **kwargs)


def iter_push_lines(path: str) -> Iterable[str]:
    """The lines of a push log, for readers: a local file, or every segment under a URL (each push once)."""
    if is_object_store_url(path):
        from airflow_provider_multimarkets.storage.segments import iter_segment_lines

        yield from iter_segment_lines(path)
        return
    with open(local_path(path), encoding="utf-8") as handle:
        yield from complete_lines(handle)
