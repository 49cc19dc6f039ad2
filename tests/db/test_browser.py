"""Neo4j Browser is served by the local server and renders in a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from hsg.db.server import ServerConfig

pytestmark = [pytest.mark.db, pytest.mark.browser]

CHROMIUM = (
    os.environ.get("HSG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
)
ARTIFACTS = Path(os.environ.get("HSG_TEST_ARTIFACTS", "test-artifacts"))


def test_browser_is_served():
    url = ServerConfig.from_env().browser_url
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode("utf-8", errors="replace")
    assert resp.status == 200
    assert "<title>Neo4j Browser</title>" in body


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_browser_renders_in_chromium(settings):
    sync_api = pytest.importorskip("playwright.sync_api")
    url = ServerConfig.from_env().browser_url
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "neo4j-browser.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url, wait_until="networkidle", timeout=60_000)
            # the connect form is the Browser's first screen: the app rendered, not a blank page
            page.get_by_text("Connect", exact=False).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "neo4j-browser-login.png"))
            assert "Neo4j Browser" in page.title()
            # log in as a user would, then run a GDS query in the editor
            page.locator("[data-testid=boltaddress]").fill(settings.uri)
            page.locator("[data-testid=username]").fill(settings.user)
            page.locator("[data-testid=password]").fill(settings.password)
            page.locator("[data-testid=connect]").click()
            page.get_by_text("You are connected as user", exact=False).first.wait_for(
                timeout=60_000
            )
            editor = page.locator("#monaco-main-editor, [data-testid=activeEditor]").first
            editor.click()
            page.keyboard.type("RETURN gds.version() AS gds")
            page.keyboard.press("Enter")
            page.get_by_text("2.13", exact=False).first.wait_for(timeout=60_000)
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
