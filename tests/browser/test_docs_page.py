"""The API's own documentation, /docs, in a real browser: every documented operation is shown, and
nothing is loaded from outside the site."""

from __future__ import annotations

import json

from chromium import PageWatch, screenshot

from harness.livestack import ROOT, Stack

DOC = json.loads((ROOT / "pixshift" / "web" / "api" / "openapi.json").read_text())
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def test_docs_page_renders_every_operation_in_a_browser(tmp_path, browser):
    with (
        Stack(tmp_path, {}, separate_consumer=False, workers=1) as stack,
        browser.new_page(viewport={"width": 1280, "height": 1600}) as page,
    ):
        watch = PageWatch(page)
        page.goto(stack.url("/docs"))
        page.wait_for_selector(".opblock", timeout=20_000)
        summaries = page.locator(".opblock-summary-path").all_inner_texts()
        documented = {path for path, item in DOC["paths"].items() if METHODS & item.keys()} | set(DOC["webhooks"])
        assert {s.replace("\u200b", "").strip() for s in summaries} == documented
        page.click("#operations-requests-getStatus .opblock-summary-control")
        page.wait_for_selector("#operations-requests-getStatus .responses-table", timeout=10_000)
        screenshot(page, tmp_path, "api-docs.png", full_page=False)
        # No tokens on this server: nothing to authorize, so no padlocks and no Authorize button.
        assert page.locator(".authorization__btn, .btn.authorize").count() == 0
        # "Try it out" on POST /upload sends what it shows: webhook_url is not pre-filled with "string".
        page.click("#operations-requests-uploadCsv .opblock-summary-control")
        page.click("#operations-requests-uploadCsv .try-out__btn")
        field = page.locator("#operations-requests-uploadCsv tr[data-property-name=webhook_url] input[type=text]")
        field.wait_for(timeout=10_000)
        assert field.input_value() == "", field.input_value()
        errors = [e for e in watch.console_errors if "favicon" not in e and "404" not in e]
        assert not errors and not watch.page_errors, (errors, watch.page_errors)
        foreign = [url for _, url in watch.requests if not url.startswith(stack.base_url)]
        assert not foreign, foreign  # everything bundled: no CDN, no validator badge
