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


def _local_masker() -> Any:
    """This process's secret masker object (``None`` when Airflow has none)."""
    for module in (
        "airflow.sdk._shared.secrets_masker",
        "airflow.sdk.execution_time.secrets_masker",
        "airflow.utils.log.secrets_masker",
    ):
        try:
            return __import__(module, fromlist=["_secrets_masker"])._secrets_masker()
        except (ImportError, AttributeError):
            continue
    return None  # pragma: no cover


def _supervisor_in_this_process() -> bool:
    """Whether the task's supervisor is this very process (``airflow dags test``, ``dag.test()``).

    Its comms (``InProcessSupervisorComms``) log every request verbatim at DEBUG, a mask request's
    value included, and its masker is this process's own: a request to it only prints the secret.
    """
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:
        return False
    return type(getattr(task_runner, "SUPERVISOR_COMMS", None)).__name__ == "InProcessSupervisorComms"


def _register_here(value: Any) -> bool:
    """Register ``value`` with this process's masker only, when that is all it needs (see the callers).

    ``True`` when nothing more is to be done: the value was masked already (Airflow registers a
    connection's password itself when it fetches it), or the supervisor is this process.
    """
    masker = _local_masker()
    if masker is None:
        return False
    if isinstance(value, str):
        import re

        if re.escape(value) in getattr(masker, "patterns", ()):
            return True  # masked already, here and (Airflow 3) in the supervisor: no second request
    if _supervisor_in_this_process():
        masker.add_mask(value)
        return True
    return False


def mask_secret(value: Any) -> None:
    """Register ``value`` with Airflow's secret masker (task process and, on Airflow 3, supervisor).

    No mask request is sent for a value the masker holds already, nor to a supervisor that runs in
    this process (``airflow dags test``), which would print it at DEBUG: there the value is
    registered with this process's masker, which is the supervisor's too.
    """
    if not value or _register_here(value):
        return
    _masker_function("mask_secret")(value)


async def amask_secret(value: Any) -> None:
    """The same, from a coroutine (the triggerer): never blocks the event loop on Airflow 3."""
    if not value or _register_here(value):
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
