"""What a new user meets first: the generated docs pages, the how-to markers, the examples as the UI
shows them, the connection form and its hints, the sandbox's printed connection and its stream."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib.util
import json
import re
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import DAGS_FOLDER, ORDER_BIZ_TYPE, ORDER_BODY, ROOT, load_dag, set_connection

from airflow_provider_multimarkets.api.settings import (
    EXTRA_DOCS,
    KNOWN_EXTRAS,
    ConnectionSettings,
    settings_from_connection,
)
from airflow_provider_multimarkets.exceptions import MultiMarketsConfigError
from airflow_provider_multimarkets.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR, get_provider_info

DOCS = ROOT / "docs"
EXAMPLES = sorted((ROOT / "example_dags").glob("example_*.py"))


def _docs_extension() -> ModuleType:
    spec = importlib.util.spec_from_file_location("multimarkets_docs", DOCS / "_ext" / "multimarkets_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the generated pages -------------------------------------------------------------------------


def test_generated_connection_page_lists_every_extra_and_form_field() -> None:
    text = _docs_extension().connection_fields_markdown()
    for key in KNOWN_EXTRAS:
        assert f"| `{key}` |" in text, key
    for key, spec in CONN_FIELDS.items():
        assert f"| {spec['label']} | `{key}` |" in text, key
    for label in UI_FIELD_BEHAVIOUR["relabeling"].values():
        assert f"| {label} |" in text
    assert f"these {len(KNOWN_EXTRAS)} extras" in text


def test_every_extra_has_a_meaning_and_an_undocumented_one_fails_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(EXTRA_DOCS) == set(KNOWN_EXTRAS)
    ext = _docs_extension()
    monkeypatch.setattr(
        "airflow_provider_multimarkets.api.settings.KNOWN_EXTRAS", frozenset({*KNOWN_EXTRAS, "brand_new"})
    )
    with pytest.raises(ext.UndocumentedExtraError, match="brand_new"):
        ext.connection_fields_markdown()


def test_documented_defaults_are_the_defaults_in_effect() -> None:
    """The page shows ConnectionSettings' field defaults: they must be what a bare connection gets."""
    shown = _docs_extension().extra_defaults()
    bare = settings_from_connection(host=None, port=None, login="key", password="secret", extra={"company_id": 1})
    for f in dataclasses.fields(ConnectionSettings):
        if f.default is not dataclasses.MISSING and f.name in KNOWN_EXTRAS:
            assert getattr(bare, f.name) == f.default, f.name
    assert bare.canonical == ConnectionSettings.__dataclass_fields__["canonical"].default_factory()  # type: ignore[misc]
    assert shown["recv_window"] == "`5000`" and shown["timeout"] == "`[10, 30]`" and shown["verify"] == "`true`"
    assert shown["company_id"] == "required" and shown["sign_key_order"] == '`"java"`'


def test_generated_upgrade_table_lists_every_moved_module() -> None:
    from airflow_provider_multimarkets import MOVED_MODULES, MOVED_NAMES

    text = _docs_extension().moved_modules_markdown()
    for old, new in MOVED_MODULES.items():
        assert f"| `airflow_provider_multimarkets.{old}` | `airflow_provider_multimarkets.{new}` |" in text
    for (old, name), new in MOVED_NAMES.items():
        assert f"`airflow_provider_multimarkets.{old}.{name}` | `airflow_provider_multimarkets.{new}`" in text


# ---- how-to pages --------------------------------------------------------------------------------


INCLUDE_RE = re.compile(r"```\{literalinclude\} (?P<path>\S+)\n(?P<options>(?::[^\n]*\n)*)")


def test_every_howto_include_points_at_markers_that_exist() -> None:
    pages = sorted((DOCS / "howto").glob("*.md"))
    found = 0
    for page in pages:
        for match in INCLUDE_RE.finditer(page.read_text()):
            source = (page.parent / match["path"]).resolve()
            assert source.is_file(), f"{page.name}: {match['path']}"
            code = source.read_text()
            for option in ("start-after", "end-before", "start-at", "end-at"):
                value = re.search(rf":{option}: \"(.*)\"", match["options"])
                if value:
                    assert value[1] in code, f"{page.name}: {option} {value[1]!r} not in {source.name}"
                    found += 1
    assert found >= 15


#: classes whose keyword arguments are the fields of a dataclass (a trigger serializes it as it is)
ARGUMENT_DATACLASSES = {
    "MultiMarketsMsgSubscribeTrigger": ("airflow_provider_multimarkets.messaging.client", "SubscriptionSpec"),
    "MultiMarketsOrderStatusTrigger": ("airflow_provider_multimarkets.triggers.order_status", "OrderStatusWait"),
    "MultiMarketsOrderTrackingTrigger": ("airflow_provider_multimarkets.triggers.order_tracking", "OrderTracking"),
}
#: how-to page prefixes by provider-info section
HOWTO_KINDS = {"operators": "operator", "sensors": "sensor", "triggers": "trigger"}


def _provider_classes() -> list[tuple[str, str, str]]:
    """(page prefix, module, class name) of every operator, sensor and trigger the provider info lists."""
    import importlib
    import inspect

    info = get_provider_info()
    found = []
    for section, prefix in HOWTO_KINDS.items():
        for entry in info.get(section, []):
            for name in entry["python-modules"]:
                module = importlib.import_module(name)
                for cls_name, cls in inspect.getmembers(module, inspect.isclass):
                    if cls.__module__ == name and cls_name.endswith(("Operator", "Sensor", "Trigger")):
                        found.append((prefix, name, cls_name))
    return found


PROVIDER_CLASSES = _provider_classes()


def _arguments(module: str, cls_name: str) -> list[str]:
    """The class's own keyword arguments; for ``**kwargs`` only, the fields of its arguments' dataclass."""
    import importlib
    import inspect

    cls = getattr(importlib.import_module(module), cls_name)
    skip = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    names = [
        p.name for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self" and p.kind not in skip
    ]
    if names:
        return names
    assert cls_name in ARGUMENT_DATACLASSES, (
        f"{cls_name} takes only **kwargs: name its dataclass in ARGUMENT_DATACLASSES"
    )
    spec_module, spec_name = ARGUMENT_DATACLASSES[cls_name]
    return [f.name for f in dataclasses.fields(getattr(importlib.import_module(spec_module), spec_name))]


def _toctree_globs(index: Path) -> list[str]:
    block = index.read_text().split("```{toctree}", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith(":")]


def test_every_provider_class_is_checked() -> None:
    names = {cls_name for _, _, cls_name in PROVIDER_CLASSES}
    assert {
        "MultiMarketsOrderStatusSensor",
        "MultiMarketsOrderStatusTrigger",
        "MultiMarketsOrderTrackingTrigger",
    } <= names
    assert len(names) >= 11


@pytest.mark.parametrize(("prefix", "module", "cls_name"), PROVIDER_CLASSES, ids=[c for _, _, c in PROVIDER_CLASSES])
def test_every_operator_sensor_and_trigger_has_a_howto_page(prefix: str, module: str, cls_name: str) -> None:
    """A page titled with the class, named by its kind, in the toctree, showing example DAG code between
    [START]/[END] markers, with a parameters table that has a row per argument."""
    import fnmatch

    pages = [p for p in sorted((DOCS / "howto").glob("*.md")) if re.match(rf"# {cls_name}\b", p.read_text())]
    assert len(pages) == 1, f"no docs/howto page titled '# {cls_name}' (or more than one)"
    page = pages[0]
    text = page.read_text()
    assert page.name.startswith(f"{prefix}_"), f"{page.name}: a {prefix}'s page is named {prefix}_<name>.md"
    assert f"`~{module}.{cls_name}`" in text, f"{page.name} does not reference {module}.{cls_name}"
    globs = _toctree_globs(DOCS / "howto" / "index.md")
    assert any(fnmatch.fnmatch(page.stem, g) for g in globs), f"{page.name} is in no toctree of howto/index.md"
    includes = [
        m
        for m in INCLUDE_RE.finditer(text)
        if m["path"].startswith("../../example_dags/")
        and ':start-after: "[START howto_' in m["options"]
        and ':end-before: "[END howto_' in m["options"]
    ]
    assert includes, f"{page.name} shows no example DAG code between [START howto_...]/[END howto_...] markers"
    assert "\n## Parameters\n" in text, f"{page.name} has no '## Parameters' section"
    table = text.split("\n## Parameters\n", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in _arguments(module, cls_name) if f"| `{name}` |" not in table]
    assert not missing, f"{page.name}: the parameters table has no row for {missing}"


# ---- examples as the UI shows them ---------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_has_description_docs_tags_and_described_params(path: Path) -> None:
    try:
        dag = load_dag(path.stem)
    except LookupError:  # Airflow 2: the event-driven example defines no DAG
        pytest.skip("no DAG on this Airflow version")
    assert dag.description and len(dag.description) <= 120
    assert dag.doc_md and "Parse-light" in dag.doc_md
    assert "example" in dag.tags and "multimarkets" in dag.tags and len(dag.tags) >= 3
    for name in dag.params:
        assert dag.params.get_param(name).description, f"param {name} has no description"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_logs_through_the_task_logger_not_print(path: Path) -> None:
    calls = [
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    assert not calls, f"print() at line {calls[0].lineno}: the UI log shows print output only in part"


def test_reconciliation_params_accept_empty_as_the_ui_sends_it() -> None:
    import copy

    dag = load_dag("example_multimarkets_daily_reconciliation")
    assert copy.deepcopy(dag.params).validate()["start"] is None  # the defaults as shown: Trigger is not blocked
    for name in ("start", "end"):
        param = copy.deepcopy(dag.params.get_param(name))
        assert "null" in param.schema["type"]  # the UI marks a field required unless its type allows null
        assert param.resolve(None) is None and param.resolve("2026-01-01T00:00:00Z") == "2026-01-01T00:00:00Z"


def test_token_example_window_is_a_short_param() -> None:
    dag = load_dag("example_multimarkets_msg_token")
    param = dag.params.get_param("window_seconds")
    assert param.value <= 60 and param.schema["type"] == "number"
    subscribe = dag.task_dict["subscribe"]
    assert subscribe.window_seconds == "{{ params.window_seconds }}" and "window_seconds" in subscribe.template_fields
    assert dag.max_active_runs > 1  # a manual run does not queue behind the hourly run unpausing starts


def test_templated_window_is_checked_when_it_renders() -> None:
    from airflow_provider_multimarkets.operators.msg_subscribe import MultiMarketsMsgSubscribeOperator, _window

    op = MultiMarketsMsgSubscribeOperator(task_id="s", window_seconds="{{ params.w }}", max_messages=5)
    assert op.window_seconds == "{{ params.w }}"
    assert _window("12.5", {"task_id": "s"}) == 12.5
    for bad in ("", "soon", "0", "-1", "inf", None):
        with pytest.raises(MultiMarketsConfigError, match="window_seconds"):
            _window(bad, {"task_id": "s"})
    with pytest.raises(MultiMarketsConfigError, match="window_seconds must be > 0"):
        MultiMarketsMsgSubscribeOperator(task_id="t", window_seconds=0)


# ---- the connection form and its hints ----------------------------------------------------------


def test_form_requires_nothing_before_it_is_touched_and_stores_no_defaults() -> None:
    for key, spec in CONN_FIELDS.items():
        assert "null" in spec["schema"]["type"], f"{key} would show 'This field is required' at first"
        if key != "verify":  # Verify TLS shows (and stores) its true default: on
            assert "default" not in spec["schema"], f"{key}: a saved connection would pin today's default"
    assert CONN_FIELDS["lang"]["schema"]["enum"] == ["en-US", "zh-CN"]
    assert "sandbox" not in CONN_FIELDS["verify"]["description"]


def test_hints_use_the_form_labels() -> None:
    from airflow_provider_multimarkets.api.envelope import GATEWAY_CODES
    from airflow_provider_multimarkets.api.signing import load_private_key

    labels = UI_FIELD_BEHAVIOUR["relabeling"]
    for login, password, field in (("", "x", "login"), ("key", "", "password")):
        with pytest.raises(MultiMarketsConfigError) as info:
            settings_from_connection(host=None, port=None, login=login, password=password, extra={"company_id": 1})
        assert f"'{labels[field]}' field" in str(info.value)
    with pytest.raises(MultiMarketsConfigError) as info:
        load_private_key("not base64 !!")
    assert f"'{labels['password']}' field" in str(info.value)
    assert f"'{labels['password']}' field" in GATEWAY_CODES["00012001"].hint
    assert "connection password holds" not in GATEWAY_CODES["00012001"].hint
    with pytest.raises(MultiMarketsConfigError, match="Company ID field"):
        settings_from_connection(host=None, port=None, login="key", password="x", extra={"company_id": None})


def test_documentation_url_is_in_the_package_metadata_and_the_provider_info() -> None:
    from importlib.metadata import metadata

    from airflow.providers_manager import ProvidersManager

    urls = dict(u.split(", ", 1) for u in metadata("airflow-provider-multimarkets").get_all("Project-URL") or [])
    assert urls["Documentation"].startswith("https://") and not urls["Documentation"].startswith("file:")
    provider = ProvidersManager().providers["airflow-provider-multimarkets"]
    if "documentation-url" in provider.data:  # Airflow 3.2+ reads it from the metadata
        assert provider.data["documentation-url"] == urls["Documentation"]


# ---- the sandbox as a user starts it ------------------------------------------------------------


def test_sandbox_connection_has_the_port_in_its_own_field(sandbox: Any) -> None:
    conn = sandbox.connection()
    assert conn["port"] == sandbox.port and f":{sandbox.port}" not in conn["host"]
    settings = settings_from_connection(
        host=conn["host"], port=conn["port"], login=conn["login"], password=conn["password"], extra=conn["extra"]
    )
    assert settings.base_url == sandbox.base_url


def test_sandbox_command_prints_what_the_form_needs(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_multimarkets.sandbox.cli", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    export = next(line for line in lines if line.startswith("export AIRFLOW_CONN_MULTIMARKETS_DEFAULT="))
    conn = json.loads(export.split("=", 1)[1].strip().strip("'"))
    form = next(line for line in lines if line.startswith("or, in the UI"))
    assert f"Port {conn['port']}," in form and f"Open API base URL {conn['host']}," in form
    assert "secretKey (RSA private key)" in form and "Company ID 439" in form


def test_synthetic_stream_can_leave_trade_type_2_to_the_users_orders(
    sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With trade_stream_types {"1"}, a trade-type-2 subscriber's first push is the order placed."""
    import aiohttp

    from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook
    from airflow_provider_multimarkets.sandbox import SandboxConfig

    sb = sandbox_factory(SandboxConfig(trade_stream_rate=200, trade_stream_types=frozenset({"1"})))
    set_connection(monkeypatch, sb.connection(retry_backoff=0.01))
    hook = MultiMarketsHook()
    tokens = [hook.get_msg_token(), hook.get_msg_token()]
    url = sb.ws_url.replace("{appId}", "439")

    def frame(msg_type: str, token: str, seq: int, data: dict[str, Any] | None = None) -> str:
        now = int(time.time() * 1000)
        head = {"msgType": msg_type, "token": token, "sendTime": now, "lang": "en-US"}
        body: dict[str, Any] = {"head": head, "device": 1, "seqId": seq, "trace": f"x-{now}-{seq}"}
        if data is not None:
            body["data"] = data
        return json.dumps(body)

    async def scenario() -> tuple[list[Any], Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url) as type1,
            session.ws_connect(url) as type2,
        ):
            for ws, token, types in ((type1, tokens[0], "1"), (type2, tokens[1], "2")):
                await ws.send_str(frame("login", token, 1))
                await ws.receive_json(timeout=30)  # subscribe_success
                # strict sandbox: subscribe_asset has no documented answer, so nothing is awaited for it
                await ws.send_str(frame("subscribe_asset", token, 2, {"tradeTypes": types}))
            synthetic = [await type1.receive_json(timeout=30) for _ in range(20)]  # the stream runs
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: hook.call(ORDER_BIZ_TYPE, ORDER_BODY, idempotent=False)
            )
            first = await type2.receive_json(timeout=30)
            return synthetic, first

    synthetic, first = asyncio.run(scenario())
    assert all(p["msgCode"] == "trade" for p in synthetic)
    (order,) = sb.state.orders
    assert first["msgCode"] == "trade" and first["content"]["paramMap"]["orderId"] == str(order["response"]["orderId"])


# ---- the README's first DAG runs as written --------------------------------------------------------


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.skipif(
    importlib.util.find_spec("airflow.sdk") is None, reason="the README's DAG imports airflow.sdk (3.0+)"
)
def test_readme_first_dag_runs_against_the_sandbox(sandbox_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_multimarkets.sandbox import SandboxConfig

    readme = (ROOT / "README.md").read_text()
    code = readme.split("## A first DAG", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 15
    assert code in (DOCS / "index.md").read_text().replace("\n   ", "\n").replace("   ```python\n", "```python\n")
    sb = sandbox_factory(SandboxConfig(trade_stream_rate=40))
    set_connection(monkeypatch, sb.connection(retry_backoff=0.01))
    path = DAGS_FOLDER / "readme_first_dag.py"  # where dag.test() finds the file to serialize
    path.write_text(f'"""The README\'s first DAG."""\n{code}')
    try:
        spec = importlib.util.spec_from_file_location("readme_first_dag", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag = module.customer.dag
        monkeypatch.setattr(dag.task_dict["pushes"], "window_seconds", 2.0)  # the README says 30 s
        dag_run = dag.test()
    finally:
        path.unlink()
    states = {ti.task_id: str(ti.state).rsplit(".", 1)[-1].lower() for ti in dag_run.get_task_instances()}
    assert states == {"customer": "success", "pushes": "success"}
