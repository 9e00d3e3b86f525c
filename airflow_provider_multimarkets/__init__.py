"""Apache Airflow provider for the MultiMarkets Open API: the version, and the old module paths.

Kept import-free on purpose: DAG files import the operators every parse cycle. Before 0.2 the pure
modules sat at the package root (``airflow_provider_multimarkets.push_log``, ``.signing``, …); those
paths still import, lazily, with an ``AirflowProviderDeprecationWarning`` that names the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

__version__ = "0.2.0"

#: old module path (below the package) -> the module that now holds what it held
MOVED_MODULES: dict[str, str] = {
    "budget": "api.budget",
    "connection_settings": "api.settings",
    "endpoints": "api.endpoints",
    "envelope": "api.envelope",
    "retry": "api.retry",
    "signing": "api.signing",
    "transport": "api.transport",
    "hooks.msg_socket": "messaging.client",
    "msg_frames": "messaging.frames",
    "push_events": "messaging.push_filter",
    "local_dirs": "storage.paths",
    "push_log": "storage.push_log",
    "push_segments": "storage.segments",
    "table_files": "storage.table_files",
    "order_identity": "trading.order_identity",
    "reconciliation": "trading.reconciliation",
    "reports": "trading.reports",
}
#: names that a split old module held and that now live elsewhere: (old module, name) -> new module
MOVED_NAMES: dict[tuple[str, str], str] = {
    **{("push_log", n): "messaging.codec" for n in ("frame_loads", "bytes_loads", "decode_frame")},
    ("push_log", "push_identity"): "messaging.identity",
    **{
        ("push_log", n): "storage.paths"
        for n in ("default_push_dir", "spool_path_for", "is_object_store_url", "local_path")
    },
    **{("push_log", n): "storage.logs" for n in ("open_push_log", "iter_push_lines")},
    ("push_segments", "filesystem"): "storage.paths",
    **{
        ("msg_frames", n): "messaging.subscription"
        for n in ("OrderCondition", "SubscriptionRecorder", "format_summary")
    },
    **{
        ("msg_frames", n): "trading.order_status"
        for n in ("FINAL_ORDER_STATUSES", "FAILED_ORDER_BIZ_TYPES", "ORDER_STATUS_NAMES")
    },
    ("order_identity", "FINAL_ORDER_STATUSES"): "trading.order_status",
    ("push_events", "event_identity"): "messaging.identity",
    **{("push_events", n): "storage.journal" for n in ("compact_journal", "read_lines", "load_token", "save_token")},
    **{("push_events", n): "trading.fill_ledger" for n in ("FillLedger", "fill_record")},
    **{("reports", n): "storage.table_files" for n in ("csv_cell", "json_safe")},
}


def _warn(old: str, new: str) -> None:
    category: type[Warning] = DeprecationWarning
    try:
        from airflow.exceptions import AirflowProviderDeprecationWarning

        category = AirflowProviderDeprecationWarning
    except ImportError:  # pragma: no cover - Airflow always has it
        pass
    warnings.warn(f"{__name__}.{old} is deprecated: import from {__name__}.{new}", category, stacklevel=3)


class _MovedModule(ModuleType):
    """An old module path: every attribute read is forwarded to where it lives now, with a warning."""

    def __getattr__(self, name: str) -> Any:
        old = self.__name__[len(__name__) + 1 :]
        if name.startswith("__"):
            raise AttributeError(name)
        new = MOVED_NAMES.get((old, name), MOVED_MODULES[old])
        _warn(f"{old}.{name}", f"{new}.{name}")
        return getattr(importlib.import_module(f"{__name__}.{new}"), name)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths (and nothing else), so that ``from <old path> import X`` works."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        prefix = __name__ + "."
        if fullname.startswith(prefix) and fullname[len(prefix) :] in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> ModuleType:
        return _MovedModule(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        return None


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
