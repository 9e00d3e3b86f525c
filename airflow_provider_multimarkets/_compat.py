"""Airflow 3.x first (``airflow.sdk``), with the 3.0 and 2.x fallbacks in one place."""

from __future__ import annotations

from typing import Any

try:
    from airflow.sdk import BaseHook
except ImportError:  # pragma: no cover - Airflow 2.x / 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

try:
    from airflow.sdk import BaseOperator
except ImportError:  # pragma: no cover - Airflow 2.x
    from airflow.models import BaseOperator  # type: ignore[no-redef,assignment]

try:
    from airflow.sdk import Context
except ImportError:  # pragma: no cover - Airflow 2.x
    from airflow.utils.context import Context  # type: ignore[no-redef,attr-defined,assignment]

__all__ = [
    "BaseHook",
    "BaseOperator",
    "Context",
    "airflow_version",
    "amask_secret",
    "default_deferrable",
    "mask_secret",
]


def _masker_function(name: str) -> Any:
    for module in ("airflow.sdk.log", "airflow.sdk.execution_time.secrets_masker", "airflow.utils.log.secrets_masker"):
        try:
            return getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
    return None


def mask_secret(value: Any) -> None:
    """Register ``value`` with Airflow's secret masker (task process and, on Airflow 3, supervisor)."""
    if not value:
        return
    _masker_function("mask_secret")(value)


async def amask_secret(value: Any) -> None:
    """The same, from a coroutine (the triggerer): never blocks the event loop on Airflow 3."""
    if not value:
        return
    masker = _masker_function("amask_secret")
    if masker is not None:
        await masker(value)
    else:  # pragma: no cover - older Airflow: a plain in-process call
        mask_secret(value)


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
