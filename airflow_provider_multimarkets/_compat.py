"""Airflow 3.x first (``airflow.sdk``), with the 3.0 and 2.x fallbacks in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from airflow.sdk import BaseSensorOperator, PokeReturnValue, ResumableJobMixin
    from airflow.sdk.exceptions import AirflowSensorTimeout
    from airflow.sdk.execution_time.context import NEVER_EXPIRE

    DURABLE_EXECUTION: bool

# Names resolved on first use (PEP 562 module ``__getattr__``), each from the first of its places that has
# it, then kept in this module's globals. Operator and hook modules import this one at DAG-parse time and
# must not pay for what only one of them needs: on Airflow 2 ``airflow.sensors.base`` imports
# ``airflow.models.skipmixin``, ``airflow.models.taskreschedule`` and ``airflow.ti_deps``
# (tests/test_parse_cost.py); only the order operator needs ``ResumableJobMixin``.
_LAZY: dict[str, tuple[tuple[str, str], ...]] = {
    # Airflow 3.x: airflow.sdk; Airflow 2.x: airflow.sensors.base
    "BaseSensorOperator": (("airflow.sdk", "BaseSensorOperator"), ("airflow.sensors.base", "BaseSensorOperator")),
    "PokeReturnValue": (("airflow.sdk", "PokeReturnValue"), ("airflow.sensors.base", "PokeReturnValue")),
    # airflow.sdk.exceptions where it has it (3.3.2 does); Airflow 2.x and 3.0: airflow.exceptions
    "AirflowSensorTimeout": (
        ("airflow.sdk.exceptions", "AirflowSensorTimeout"),
        ("airflow.exceptions", "AirflowSensorTimeout"),
    ),
}
#: durable execution's three names, resolved together (:func:`_durable_execution`)
_DURABLE = ("DURABLE_EXECUTION", "NEVER_EXPIRE", "ResumableJobMixin")


class _NoResumableJobMixin:
    """Airflow < 3.3: no task state store; ``durable`` is kept, and has no effect.

    The order operator checks ``DURABLE_EXECUTION`` and never calls ``execute_resumable`` here: it
    logs once that durable execution needs Airflow 3.3 and finds an earlier try's order by its
    ``thirdPartyOrder`` lookup, as before 3.3.
    """

    external_id_key: str = "remote_job_id"

    def __init__(self, *, durable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.durable = durable


def _durable_execution() -> dict[str, Any]:
    """Durable execution (AIP-103): the task state store and ``ResumableJobMixin``, Airflow 3.3+."""
    try:
        from airflow.sdk import ResumableJobMixin
        from airflow.sdk.execution_time.context import NEVER_EXPIRE
    except ImportError:  # Airflow 2.x / 3.0-3.2: the stand-in, durable execution off
        import datetime as dt

        return {"DURABLE_EXECUTION": False, "NEVER_EXPIRE": dt.timedelta.max, "ResumableJobMixin": _NoResumableJobMixin}
    return {"DURABLE_EXECUTION": True, "NEVER_EXPIRE": NEVER_EXPIRE, "ResumableJobMixin": ResumableJobMixin}


def __getattr__(name: str) -> Any:
    """Resolve a lazy name once; later lookups find it in the module's globals."""
    if name in _DURABLE:
        globals().update(_durable_execution())
        return globals()[name]
    places = _LAZY.get(name)
    if places is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    for module, attribute in places:
        try:
            value = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            continue
        globals()[name] = value
        return value
    raise ImportError(  # pragma: no cover - every supported Airflow has one of the places
        f"{name} is in none of {', '.join(module for module, _ in places)} on Airflow {airflow_version()}: "
        "this provider supports Airflow 2.11 and 3.0+ (see docs/compatibility.md)."
    )


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_DURABLE})


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
    "mask_msg_token",
    "mask_secret",
    "mask_secret_in_background",
    "state_store_cleared_on_success",
]

#: the shape of a msg token: ``getMsgPushToken`` returns a UUID followed by ``push``; the docs'
#: socket examples show a UUID followed by ``app``
MSG_TOKEN_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?:push|app)"  # noqa: S105 - a shape, not a secret
_token_pattern_installed = False

_masked: set[int] = set()
_mask_thread: Any = None


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


def mask_secret_in_background(value: Any) -> None:
    """Register ``value`` with Airflow's masker once per process, on one thread of its own.

    The masker recompiles one regular expression over every secret it holds on each addition
    (Airflow 3.3.2: 0.3 ms for the first, 18 ms for the 500th), so a triggerer starting hundreds of
    subscriptions would stall its event loop for seconds if each masked its token on the loop.
    Here the event loop only hands the value over; one worker thread adds the masks in order (the
    masker is not meant for concurrent additions), and a value already masked in this process is
    not added again. Callers never log the value, so nothing waits for the mask to be in place.
    """
    global _mask_thread
    if not value or not isinstance(value, str):
        return
    key = hash(value)
    if key in _masked:
        return
    _masked.add(key)
    if _mask_thread is None:
        from concurrent.futures import ThreadPoolExecutor

        _mask_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="multimarkets-masker")
    _mask_thread.submit(_mask_quietly, value)


def mask_msg_token(token: Any) -> None:
    """Mask a msg token in this process's logs without a cost that grows with every token.

    A token of the documented shape (:data:`MSG_TOKEN_PATTERN`) is covered by one pattern that
    matches every token of that shape, added to Airflow's masker once per process: the masker then
    recompiles once, not once per subscription (in Airflow 3.3.2, 500 tokens added one by one cost
    about 30 s and stalled the event loop for up to a second each time). Any other token is added
    as itself, once, on the masking thread (:func:`mask_secret_in_background`).
    """
    import re

    if not token or not isinstance(token, str):
        return
    if re.fullmatch(MSG_TOKEN_PATTERN, token) and _install_token_pattern():
        return
    mask_secret_in_background(token)


def _install_token_pattern() -> bool:
    """Add :data:`MSG_TOKEN_PATTERN` to Airflow's masker (once); ``False`` when this Airflow's masker
    does not take patterns this way (then tokens are masked one by one)."""
    global _token_pattern_installed
    if _token_pattern_installed:
        return True
    import re

    factory = _masker_function("_secrets_masker")
    try:
        masker = factory() if factory is not None else None
        patterns = getattr(masker, "patterns", None)
        if masker is None or not isinstance(patterns, set):
            return False
        if MSG_TOKEN_PATTERN not in patterns:
            patterns.add(MSG_TOKEN_PATTERN)
            masker.replacer = re.compile("|".join(patterns))
    except Exception:  # pragma: no cover - a masker of another shape: tokens one by one
        return False
    _token_pattern_installed = True
    return True


def _mask_quietly(value: str) -> None:
    try:
        mask_secret(value)
    except Exception:  # pragma: no cover - a masker that fails must not end a subscription
        import logging

        logging.getLogger(__name__).warning("Could not register a msg token with Airflow's secret masker.")


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
