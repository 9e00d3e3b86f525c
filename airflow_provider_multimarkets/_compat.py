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

try:
    from airflow.sdk import BaseSensorOperator, PokeReturnValue
except ImportError:  # pragma: no cover - Airflow 2.x
    from airflow.sensors.base import BaseSensorOperator, PokeReturnValue  # type: ignore[no-redef,assignment]

try:
    from airflow.sdk.exceptions import AirflowSensorTimeout
except ImportError:  # pragma: no cover - Airflow 2.x / 3.0
    from airflow.exceptions import AirflowSensorTimeout  # type: ignore[no-redef,assignment,attr-defined]

# Durable execution (AIP-103): the task state store and ResumableJobMixin, Airflow 3.3+. Below 3.3
# the stand-in keeps the operator's own behaviour (it never calls execute_resumable there) and
# records that durable execution is off, so the operator logs once that it needs Airflow 3.3.
try:
    from airflow.sdk import ResumableJobMixin
    from airflow.sdk.execution_time.context import NEVER_EXPIRE

    DURABLE_EXECUTION = True
except ImportError:  # pragma: no cover - Airflow 2.x / 3.0-3.2
    import datetime as _dt

    NEVER_EXPIRE = _dt.timedelta.max  # type: ignore[misc]
    DURABLE_EXECUTION = False  # type: ignore[misc]

    class ResumableJobMixin:  # type: ignore[no-redef]
        """Airflow < 3.3: no task state store; ``durable`` is kept, and has no effect."""

        external_id_key: str = "remote_job_id"

        def __init__(self, *, durable: bool = True, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.durable = durable


__all__ = [
    "DURABLE_EXECUTION",
    "NEVER_EXPIRE",
    "AirflowSensorTimeout",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "Context",
    "PokeReturnValue",
    "ResumableJobMixin",
    "airflow_version",
    "amask_secret",
    "default_deferrable",
    "mask_secret",
    "state_store_cleared_on_success",
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


def state_store_cleared_on_success() -> bool:
    """``[state_store] clear_on_success`` (Airflow 3.3+): the task state store is emptied when a task succeeds."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # pragma: no cover
        from airflow.configuration import conf  # type: ignore[no-redef]
    return bool(conf.getboolean("state_store", "clear_on_success", fallback=False))
