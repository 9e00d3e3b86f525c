"""Provider registration: entry point, connection type, form fields as data and legacy widgets."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from airflow_provider_multimarkets.get_provider_info import CONN_FIELDS, get_provider_info
from airflow_provider_multimarkets.hooks.multimarkets import MultiMarketsHook


def test_entry_point_registered() -> None:
    eps = [
        ep
        for ep in entry_points(group="apache_airflow_provider")
        if ep.value.startswith("airflow_provider_multimarkets")
    ]
    assert len(eps) == 1
    info = eps[0].load()()
    assert info["package-name"] == "airflow-provider-multimarkets"


def test_connection_type_declared_as_data() -> None:
    info = get_provider_info()
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "multimarkets"
    assert conn_type["hook-class-name"] == "airflow_provider_multimarkets.hooks.multimarkets.MultiMarketsHook"
    assert {"company_id", "lang", "recv_window", "timeout", "verify", "max_retries", "msg_ws_url", "app_id"} <= set(
        conn_type["conn-fields"]
    )
    assert conn_type["ui-field-behaviour"]["relabeling"]["login"] == "apiKey"


def test_provider_info_validates_against_airflow_schema() -> None:
    import json
    from importlib.resources import files

    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_providers_manager_discovers_the_hook() -> None:
    from airflow.providers_manager import ProvidersManager

    assert "airflow-provider-multimarkets" in ProvidersManager().providers
    try:  # Airflow 3.2+: hooks are discovered by the task SDK's runtime manager
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

        hooks = ProvidersManagerTaskRuntime().hooks
    except ImportError:
        hooks = ProvidersManager().hooks
    hook_info = hooks["multimarkets"]
    assert hook_info is not None
    assert hook_info.hook_class_name.endswith("MultiMarketsHook")
    assert hook_info.connection_id_attribute_name == "multimarkets_conn_id"


def test_legacy_ui_behaviour_matches_data() -> None:
    behaviour = MultiMarketsHook.get_ui_field_behaviour()
    info = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
    assert behaviour["hidden_fields"] == info["hidden-fields"]
    assert behaviour["relabeling"] == info["relabeling"]


def test_legacy_widgets_match_conn_fields() -> None:
    why = "the legacy connection form (Flask-AppBuilder, wtforms) is Airflow 2's UI; Airflow 3's reads conn-fields"
    pytest.importorskip("wtforms", reason=why)
    pytest.importorskip("flask_appbuilder", reason=why)
    widgets = MultiMarketsHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)


def test_widgets_are_built_from_conn_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without flask/wtforms installed (Airflow 3), check the widget kinds with stand-in modules."""
    import sys
    import types

    made: dict[str, tuple[str, dict]] = {}

    def field(kind: str):  # noqa: ANN202
        return lambda label, **kw: made.setdefault(str(label), (kind, kw)) and (kind, kw)

    fakes = {
        "flask_appbuilder": types.ModuleType("flask_appbuilder"),
        "flask_appbuilder.fieldwidgets": types.SimpleNamespace(BS3TextFieldWidget=lambda: "widget"),
        "flask_babel": types.SimpleNamespace(lazy_gettext=str),
        "wtforms": types.SimpleNamespace(
            BooleanField=field("bool"), IntegerField=field("int"), StringField=field("str")
        ),
        "wtforms.validators": types.SimpleNamespace(NumberRange=lambda **k: "range", Optional=lambda **k: "optional"),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    widgets = MultiMarketsHook.get_connection_form_widgets()
    assert set(widgets) == set(CONN_FIELDS)
    assert widgets["company_id"][0] == "int" and widgets["verify"][0] == "bool" and widgets["msg_ws_url"][0] == "str"
