"""The built documentation site (``make docs``) as a reader sees it, in headless Chromium: the index,
the generated connection page and a how-to. Screenshots go to deploy-output/docs-site/."""

from __future__ import annotations

import shutil

import pytest
from conftest import OUTPUT

from deploy.harness import ROOT, log

SITE = ROOT / "docs" / "_build" / "html"
PAGES = [
    ("index", "index.html", None),
    ("connection", "connection.html", None),
    ("connection-extras", "connection.html", "Every extra"),
    ("howto-msg-subscribe", "howto/operator_msg_subscribe.html", None),
]


@pytest.mark.skipif(not (SITE / "index.html").exists(), reason="the docs are not built: run `make docs` first")
def test_docs_site_pages_render() -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test-deploy` installs Debian's chromium package"
    from playwright.sync_api import sync_playwright

    shots = OUTPUT / "docs-site"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            for name, path, anchor in PAGES:
                page = browser.new_page(viewport={"width": 1600, "height": 1100})
                page.goto((SITE / path).as_uri(), wait_until="load")
                if anchor:  # a heading to show at the top
                    page.get_by_role("heading", name=anchor).first.evaluate("h => window.scrollTo(0, h.offsetTop)")
                page.screenshot(path=str(shots / f"{name}.png"))
                text = str(page.inner_text("body"))
                page.close()
                assert "MultiMarkets" in text or "multimarkets" in text
                log(f"docs screenshot {name}: {shots / (name + '.png')}")
        finally:
            browser.close()
    assert "rate_limit_redis_conn_id" in (SITE / "connection.html").read_text()
