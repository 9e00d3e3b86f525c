"""Airflow 3.x first (``airflow.sdk``), with the Airflow 2.x fallbacks in one place."""

from __future__ import annotations

from typing import Any

try:
    from airflow.sdk import BaseHook, BaseOperator, Context
except ImportError:  # pragma: no cover - Airflow 2.x
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    from airflow.models import BaseOperator  # type: ignore[no-redef,assignment]
    from airflow.utils.context import Context  # type: ignore[no-redef,attr-defined,assignment]

__all__ = ["BaseHook", "BaseOperator", "Context", "airflow_version", "default_deferrable", "mask_secret"]


def mask_secret(value: Any) -> None:
    """Register ``value`` with Airflow's secret masker (task process and supervisor)."""
    if not value:
        return
    try:
        from airflow.sdk.log import mask_secret as _mask
    except ImportError:  # pragma: no cover - Airflow 2.x
        from airflow.utils.log.secrets_masker import mask_secret as _mask  # type: ignore[no-redef]
    _mask(value)


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` from the Airflow configuration."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # pragma: no cover
        from airflow.configuration import conf  # type: ignore[no-redef]
    return bool(conf.getboolean("operators", "default_deferrable", fallback=False))


def airflow_version() -> str:
    try:
        from airflow import __version__
    except ImportError:  # pragma: no cover
        return "unknown"
    return str(__version__)
