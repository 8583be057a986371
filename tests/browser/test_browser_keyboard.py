"""From upload to download with the keyboard alone, in Debian's Chromium: Tab to the file button,
choose the CSV, Tab to Upload, Enter; on the request page Tab to "Download output CSV", Enter.
No mouse event is sent; every step is a key press on whatever has the focus."""

from __future__ import annotations

import pytest
from chromium import evidence_on_failure, screenshot
from csv_files import csv_text

TIMEOUT_MS = 30_000


def tab_to(page, matches: str, limit: int = 60) -> str:
    """Press Tab until the focused element matches the CSS selector; returns what got the focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("sel => !!document.activeElement && document.activeElement.matches(sel)", matches):
            return page.evaluate("() => document.activeElement.outerHTML.slice(0, 120)")
    raise AssertionError(f"Tab never reached {matches!r}")


@pytest.mark.parametrize("size", [(1440, 900), (390, 844)], ids=["desktop", "phone"])
def test_upload_to_download_with_the_keyboard_alone(browser, web, image_server, tmp_path, size):
    csv_file = tmp_path / "keyboard.csv"
    csv_file.write_text(csv_text([(1, "Keyboard lamp", ["photo1.jpg", "photo2.jpg"])], image_server))
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    # Listening from the start makes Chromium hand file choosers to Playwright before any key is
    # pressed (an expect_file_chooser armed just before the key press can miss the first one).
    choosers: list = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    try:
        with evidence_on_failure(page, tmp_path, f"keyboard-{size[0]}", web.logs):
            page.goto(web.url("/"))
            tab_to(page, "input[type=file]")
            page.keyboard.press("Space")
            for _ in range(100):  # a poll with a deadline: 10 s
                if choosers:
                    break
                page.wait_for_timeout(100)
            assert choosers, "Space on the focused file button opened no file chooser"
            choosers[0].set_files(str(csv_file))
            page.wait_for_selector("#chosen:not([hidden])")
            tab_to(page, "button[type=submit]")
            with page.expect_navigation(url="**/requests/*"):
                page.keyboard.press("Enter")
            page.wait_for_selector("#download-csv", timeout=60_000)
            screenshot(page, tmp_path, f"keyboard-finished-{size[0]}.png")
            tab_to(page, "#download-csv")
            with page.expect_download() as download:
                page.keyboard.press("Enter")
            saved = tmp_path / "out.csv"
            download.value.save_as(saved)
            text = saved.read_text()
            assert text.startswith("Serial Number,Product Name,Input Image URLs,Output Image URLs")
            assert text.count(web.base_url + "/media/") == 2
    finally:
        context.close()
