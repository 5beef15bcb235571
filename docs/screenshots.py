"""Retake the README's console screenshots from a running demo, with Debian's chromium.

    python3 -m uv run meterbill serve --demo          # in one terminal; note the billing API key
    python3 -m uv run python docs/screenshots.py KEY  # in another
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

PAGES = {"console-dashboard.png": "/console", "console-usage.png": "/console/usage?segment=region"}


def main(api_key: str, base_url: str = "http://127.0.0.1:8000") -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800}, base_url=base_url)
        page.goto("/console/login")
        page.fill("input[name=api_key]", api_key)
        page.click("text=Log in")
        for name, path in PAGES.items():
            page.goto(path)
            page.screenshot(path=str(Path(__file__).parent / name))
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
