"""The package's layout: one folder per concept, no import cycle, every module documented and registered."""

from __future__ import annotations

import ast
import importlib
import warnings
from pathlib import Path

import pytest

import airflow_provider_multimarkets
from airflow_provider_multimarkets import MOVED_MODULES, MOVED_NAMES
from airflow_provider_multimarkets.get_provider_info import get_provider_info

PACKAGE = Path(airflow_provider_multimarkets.__file__).parent
NAME = "airflow_provider_multimarkets"
#: the layers that hold pure logic: no Airflow import at module level (Airflow glue stays in hooks/operators/...)
PURE = ("api", "messaging", "storage", "trading")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        out[".".join([NAME, *parts])] = path
    return out


def _imports(path: Path, module: str, *, top_level_only: bool = False) -> set[str]:
    """Every module that ``module`` imports (lazy imports in functions included)."""
    known = set(_modules())
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            # ``from package import submodule`` depends on the submodule, not on the package's __init__
            found.update(submodules or {base})
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {m for m in _imports(path, name) if m in modules and m != name and m != NAME}
        for name, path in modules.items()
    }


def test_package_root_holds_at_most_provider_info_exceptions_and_compat() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == ["__init__.py", "_compat.py", "exceptions.py", "get_provider_info.py"]
    assert len(root) <= 6


def test_each_folder_is_a_package_with_a_docstring_saying_what_it_holds() -> None:
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == ["api", "hooks", "messaging", "operators", "sandbox", "sensors", "storage", "trading", "triggers"]
    for folder in folders:
        init = PACKAGE / folder / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{folder}/__init__.py says nothing about {folder}/"


def test_every_module_opens_with_a_docstring() -> None:
    undocumented = [name for name, path in _modules().items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert undocumented == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    # strongly connected components (Tarjan): any with two or more modules is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def test_nothing_outside_the_sandbox_imports_it() -> None:
    offenders = {
        name: sorted(m for m in deps if m.startswith(f"{NAME}.sandbox"))
        for name, deps in _graph().items()
        if not name.startswith(f"{NAME}.sandbox")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize("layer", PURE)
def test_pure_layers_import_no_airflow_at_module_level(layer: str) -> None:
    for name, path in _modules().items():
        if name.startswith(f"{NAME}.{layer}"):
            top = _imports(path, name, top_level_only=True)
            assert not [m for m in top if m == "airflow" or m.startswith("airflow.")], name


def test_provider_info_lists_every_hook_operator_sensor_and_trigger_module() -> None:
    info = get_provider_info()
    listed = {
        kind: sorted(m for entry in info.get(kind, []) for m in entry["python-modules"])
        for kind in ("hooks", "operators", "sensors", "triggers")
    }
    for kind in listed:
        on_disk = sorted(f"{NAME}.{kind}.{p.stem}" for p in (PACKAGE / kind).glob("*.py") if p.name != "__init__.py")
        assert listed[kind] == on_disk, kind
        for module in on_disk:
            importlib.import_module(module)


def test_old_module_paths_import_with_a_warning_that_names_the_new_path() -> None:
    for old, new in MOVED_MODULES.items():
        module = importlib.import_module(f"{NAME}.{old}")
        target = importlib.import_module(f"{NAME}.{new}")
        public = [
            n
            for n in vars(target)
            if not n.startswith("_") and getattr(getattr(target, n), "__module__", None) == target.__name__
        ]
        assert public, new
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(module, public[0])
        assert value is getattr(target, public[0])
        assert any(f"{NAME}.{new}.{public[0]}" in str(w.message) for w in caught), old
    for (old, name), new in MOVED_NAMES.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(importlib.import_module(f"{NAME}.{old}"), name)
        assert value is getattr(importlib.import_module(f"{NAME}.{new}"), name)
        assert any(f"{NAME}.{new}.{name}" in str(w.message) for w in caught)


def test_readme_example_import_of_the_fill_ledger_keeps_working() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from airflow_provider_multimarkets.push_events import FillLedger
    from airflow_provider_multimarkets.trading.fill_ledger import FillLedger as new

    assert FillLedger is new
    assert "trading.fill_ledger" in str(caught[-1].message)


def test_an_unknown_module_is_still_not_found() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"{NAME}.no_such_module")


def _definitions() -> dict[str, list[str]]:
    """Module-level classes, functions and constants (literals, not aliases) of the package, by name."""
    found: dict[str, list[str]] = {}
    for module, path in _modules().items():
        if ".sandbox" in module:
            continue
        for node in ast.parse(path.read_text()).body:
            names: list[str] = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and not isinstance(
                node.value, (ast.Name, ast.Attribute, type(None))
            ):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name) and t.id.lstrip("_").isupper()]
            for name in names:
                found.setdefault(name, []).append(module)
    return found


def test_every_concept_is_defined_once() -> None:
    """One constant, one helper, one class per name: a second definition is an alias or an import."""
    twice = {name: where for name, where in _definitions().items() if len(where) > 1}
    assert not twice, f"defined in more than one module: {twice}"


def test_the_order_status_vocabulary_takes_either_form() -> None:
    from airflow_provider_multimarkets.trading.order_status import (
        FINAL_ORDER_STATUSES,
        is_final_order_status,
        order_status_key,
        order_status_name,
    )

    assert all(isinstance(status, str) for status in FINAL_ORDER_STATUSES)
    # a push sends "2", an order record 2: the same status
    assert is_final_order_status("2") and is_final_order_status(2) and is_final_order_status(2.0)
    assert not is_final_order_status("3") and not is_final_order_status(1)
    assert not is_final_order_status(None) and not is_final_order_status(True) and not is_final_order_status([2])
    assert order_status_key(" 4 ") == "4" and order_status_name(6) == "rejected" and order_status_name("x") == "x"


def test_the_budget_defaults_are_the_settings_defaults() -> None:
    from airflow_provider_multimarkets.api import budget, settings

    assert budget.DEFAULT_BAN_SECONDS is settings.DEFAULT_BAN_SECONDS
    assert budget.DEFAULT_MAX_WAIT_SECONDS == settings.DEFAULT_RATE_LIMIT_MAX_WAIT


def test_the_event_identity_is_stable_across_processes() -> None:
    """Built on the same content key as the push log's, but with SHA-1, never the per-process salted ``hash``."""
    import json
    import subprocess
    import sys

    from airflow_provider_multimarkets.messaging.identity import canonical_content, content_key, event_identity

    notice = {"msgCode": "notice", "seqId": 4, "timestamp": 5, "content": {"updateType": 1, "x": "é"}}
    text = json.dumps(notice, separators=(",", ":"), ensure_ascii=False).encode()
    assert content_key(notice, text) == text.replace(b'"seqId":4', b"")  # a key, not JSON: the comma may stay
    assert content_key(notice) == canonical_content(notice) == canonical_content({**notice, "seqId": 99})
    code = (
        "import json, sys; from airflow_provider_multimarkets.messaging.identity import event_identity; "
        "print(event_identity(json.loads(sys.argv[1])))"
    )
    others = {
        subprocess.run(
            [sys.executable, "-c", code, json.dumps(notice)],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
        ).stdout.strip()
        for seed in (1, 2)
    }
    assert others == {event_identity(notice)}
