"""The connection form and its Test button in the real Airflow 3.3 UI, driven in headless Chromium
(Debian's package) against a real api-server. Screenshots go to deploy-output/ui/."""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import OUTPUT, Sandboxes, record

from deploy.harness import Deployment, SandboxProcess

SHOTS = OUTPUT / "ui"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def ui(workdir: Path, sandboxes: Sandboxes) -> Iterator[tuple[Deployment, SandboxProcess, Any]]:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test-deploy` installs Debian's chromium package"
    from playwright.sync_api import sync_playwright

    sandbox = sandboxes.start("ui")
    deployment = Deployment(workdir / "ui", env_extra={"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"})
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        deployment.start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                yield deployment, sandbox, browser
            finally:
                browser.close()
    finally:
        deployment.stop()


def _open_add_form(deployment: Deployment, browser: Any, conn_id: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.goto(deployment.api + "/connections", wait_until="networkidle")
    page.get_by_role("button", name="Add Connection").click()
    page.locator("input[name=connection_id]").fill(conn_id)
    page.locator("input[aria-autocomplete=list]").first.fill("MultiMarkets")
    page.keyboard.press("Enter")
    page.locator("input[name=host]").wait_for()
    return page


def _section(page: Any, title: str, probe: str) -> None:
    """Open an accordion section of the form (opening one closes the other)."""
    if not page.locator(probe).is_visible():
        page.get_by_text(title, exact=True).click()
        page.locator(probe).wait_for()
        page.wait_for_timeout(600)  # the accordion's animation, for the screenshots


def _number_input(page: Any, field: str) -> Any:
    target = page.locator(f"[id='number-input:element_{field}:inc']").get_attribute("aria-controls")
    return page.locator(f"[id='{target}']")


def _fill_and_save(page: Any, sandbox: SandboxProcess, *, company_id: str = "439") -> None:
    conn = sandbox.connection  # as the sandbox prints it: the port in its own field
    assert re.match(r"^https?://[^:/]+/", conn["host"]), conn["host"]
    _section(page, "Standard Fields", "input[name=host]")
    page.locator("input[name=host]").fill(conn["host"])
    page.locator("input[name=port]").fill(str(conn["port"]))  # Airflow 3.3.2's Test sends 0 for none
    page.locator("input[name=login]").fill(conn["login"])
    page.locator("input[name=password]").fill(conn["password"])
    _section(page, "Extra Fields", "input[name=element_msg_ws_url]")
    _number_input(page, "company_id").fill(company_id)
    page.get_by_role("button", name="Save").click()
    page.get_by_text("1 Connection").or_(page.get_by_role("button", name="Test Connection").first).first.wait_for()


def _stored_extra(deployment: Deployment, conn_id: str) -> dict[str, Any]:
    return dict(json.loads(deployment.get(f"/api/v2/connections/{conn_id}")["extra"]))


def _test_result(deployment: Deployment, browser: Any, conn_id: str, shot: str) -> str:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(deployment.api + "/connections", wait_until="networkidle")
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))
    with page.expect_response(lambda r: "connections/test" in r.url) as answer:
        row.get_by_role("button", name="Test Connection").click()
    body = answer.value.json()
    message = str(body.get("message") or body.get("detail"))
    toast = page.get_by_text("Test Connection Successful").or_(page.get_by_text("Test Connection Failed")).first
    toast.wait_for()
    page.wait_for_timeout(800)  # the toast's animation
    page.screenshot(path=str(SHOTS / shot))
    shown = page.inner_text("body")
    page.close()
    assert message[:60] in shown  # Airflow 3.3.2 shows the provider's own message in the toast
    return message


def test_the_form_shows_true_defaults_and_enforces_company_id(ui: tuple[Deployment, SandboxProcess, Any]) -> None:
    deployment, sandbox, browser = ui
    page = _open_add_form(deployment, browser, "mm_ui")
    page.screenshot(path=str(SHOTS / "01-add-form-standard-fields.png"), full_page=True)
    text = page.inner_text("body")
    for label in ("Open API base URL", "apiKey", "secretKey (RSA private key)"):
        assert label in text
    assert page.locator("input[name=host]").get_attribute("placeholder") == "https://api.multimarkets.org/openapi-c"
    _section(page, "Extra Fields", "input[name=element_msg_ws_url]")
    page.screenshot(path=str(SHOTS / "02-add-form-extra-fields.png"), full_page=True)
    text = page.inner_text("body")
    assert "Company ID" in text and "Verify TLS" in text
    assert "This field is required" not in text  # no field shows an error before it is touched
    assert page.locator("[data-invalid]").count() == 0 and page.locator("[aria-invalid=true]").count() == 0
    assert page.locator("input[name=element_verify]").is_checked()  # Verify TLS shows its true default
    # Language: a react-select dropdown; its control opens on a press anywhere on it
    page.get_by_text("Select Value", exact=True).first.click(force=True)
    if not page.get_by_role("option", name="zh-CN").is_visible():
        page.keyboard.press("ArrowDown")
    page.get_by_role("option", name="zh-CN").wait_for()  # Language offers its options
    page.screenshot(path=str(SHOTS / "02b-language-options.png"), full_page=True)
    page.get_by_role("dialog").get_by_text("Add Connection", exact=True).click()  # closes the menu (Escape: the form)
    assert _number_input(page, "recv_window").input_value() == ""  # no default pinned; empty means 5000
    _fill_and_save(page, sandbox)
    page.screenshot(path=str(SHOTS / "03-saved.png"), full_page=True)
    extra = _stored_extra(deployment, "mm_ui")
    record({"scenario": "ui: untouched form", "stored_extra": extra})
    assert extra["verify"] is True and extra["company_id"] == 439
    # only what the user set (and Verify TLS's shown default); Airflow 3.3.2 saves untouched fields as null
    assert {k: v for k, v in extra.items() if v is not None} == {"company_id": 439, "verify": True}


def test_verify_tls_stores_false_only_when_switched_off(ui: tuple[Deployment, SandboxProcess, Any]) -> None:
    deployment, sandbox, browser = ui
    for conn_id, clicks in (("mm_ui_toggled_twice", 2), ("mm_ui_switched_off", 1)):
        page = _open_add_form(deployment, browser, conn_id)
        _section(page, "Extra Fields", "input[name=element_msg_ws_url]")
        switch = page.locator("label").filter(has=page.locator("input[name=element_verify]"))
        for _ in range(clicks):
            switch.click()
        _fill_and_save(page, sandbox)
        page.close()
    toggled, off = _stored_extra(deployment, "mm_ui_toggled_twice"), _stored_extra(deployment, "mm_ui_switched_off")
    record({"scenario": "ui: Verify TLS", "toggled_twice": toggled["verify"], "switched_off": off["verify"]})
    assert toggled["verify"] is True and off["verify"] is False


def test_the_test_button_tells_the_truth(ui: tuple[Deployment, SandboxProcess, Any]) -> None:
    deployment, _sandbox, browser = ui
    ok = _test_result(deployment, browser, "mm_ui", "04-test-ok.png")
    conn = deployment.get("/api/v2/connections/mm_ui")
    conn["extra"] = json.dumps({**json.loads(conn["extra"]), "company_id": 440})
    conn.pop("password", None)
    deployment.patch("/api/v2/connections/mm_ui?update_mask=extra", conn)
    wrong_company = _test_result(deployment, browser, "mm_ui", "05-test-wrong-company.png")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    conn["extra"] = json.dumps({**json.loads(conn["extra"]), "company_id": 439})
    conn["port"] = dead
    deployment.patch("/api/v2/connections/mm_ui?update_mask=extra&update_mask=port", conn)
    dead_port = _test_result(deployment, browser, "mm_ui", "06-test-dead-port.png")
    record({"scenario": "ui: Test button", "ok": ok, "wrong_company": wrong_company, "dead_port": dead_port})
    assert "accepted for company 439" in ok
    assert "00012004" in wrong_company and "Company ID" in wrong_company
    assert "the Airflow API server" in dead_port and "this worker" not in dead_port
    assert "(signature verification failed)" not in wrong_company
