"""Where the provider keeps files: its local directories, a task's spool path, and object-store URLs (no Airflow import)."""

from __future__ import annotations

import os
import re
from typing import Any

from airflow_provider_multimarkets.exceptions import PushLogError


def local_dir(env_var: str, subdir: str) -> str:
    """``$<env_var>`` when set, else ``$AIRFLOW_HOME/<subdir>`` (``~/airflow/<subdir>`` by default)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
    return os.path.join(home, subdir)


def default_push_dir() -> str:
    """``$MULTIMARKETS_PUSH_DIR``, else ``$AIRFLOW_HOME/multimarkets-pushes`` (``~/airflow`` by default)."""
    from airflow_provider_multimarkets.storage.paths import local_dir

    return local_dir("MULTIMARKETS_PUSH_DIR", "multimarkets-pushes")


def spool_path_for(dag_id: str, run_id: str, task_id: str, map_index: int | None = None) -> str:
    """The local push log of one task instance that gave no ``output_path``."""

    def safe(part: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]", "_", part)[:200] or "_"

    name = safe(task_id) + (f".{map_index}" if map_index is not None and map_index >= 0 else "") + ".jsonl"
    return os.path.join(default_push_dir(), safe(dag_id), safe(run_id), name)


def is_object_store_url(path: str | None) -> bool:
    """An ``ObjectStoragePath`` URL other than ``file://`` (those are written as segments)."""
    if not path or "://" not in path:
        return False
    return path.split("://", 1)[0].lower() not in ("file", "local")


def local_path(path: str) -> str:
    """A ``file://`` URL as a local path; other paths unchanged."""
    if path.lower().startswith("file://"):
        return path[len("file://") :]
    return path


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for an object-store URL."""
    try:
        try:
            from airflow.sdk import ObjectStoragePath
        except ImportError:  # Airflow 2.x
            from airflow.io.path import ObjectStoragePath  # type: ignore[no-redef]
        path = ObjectStoragePath(url)
        return path.fs, str(path.path).rstrip("/")
    except (ImportError, ValueError, AttributeError):
        pass  # no Airflow filesystem registered for the scheme: plain fsspec
    try:
        from fsspec.core import url_to_fs

        fs, inner = url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise PushLogError(
            f"No filesystem for the push log URL {url} ({exc}). Install the filesystem's package (s3fs, gcsfs, "
            "adlfs, or the Airflow provider that registers the scheme) on the triggerer and the workers.",
            cause="no filesystem",
        ) from None
    return fs, str(inner).rstrip("/")
