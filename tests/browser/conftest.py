"""Playwright driving Debian's chromium (never a downloaded browser build).

Without /usr/bin/chromium these tests are skipped on a laptop; CI sets
METERBILL_REQUIRE_BROWSER=1 (after installing chromium), where a missing browser fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("METERBILL_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("METERBILL_REQUIRE_BROWSER"):
            pytest.fail("browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
        pytest.skip("no /usr/bin/chromium; install Debian's chromium to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.base_url,
                                  accept_downloads=True)
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def log_in(page, api_key: str) -> None:
    page.goto("/console/login")
    page.fill("input[name=api_key]", api_key)
    page.click("text=Log in")
    page.wait_for_url("**/console")
