"""PixShift in a real browser (headless Chromium via Playwright) against a real ``python -m pixshift``:
drop a CSV on the upload page, watch the progress page update live over Socket.IO without a
reload, see thumbnails and failures, download the output CSV; and manage webhook endpoints.

Screenshots for people land in test-output/browser/ (upload-errors.png, finished.png).
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    expect = None

from chromium import PageWatch, drop_file, evidence_on_failure, screenshot
from csv_files import CSV_HEADER, csv_text

MAX_CSV_BYTES = 256 * 1024  # small, so the page's client-side size check can be tried cheaply
TIMEOUT_MS = 15_000
FINISH_TIMEOUT_MS = 40_000
HEADER = CSV_HEADER
XSS_NAME = "<script>alert(1)</script>"

# Records, from the first moment of every progress page, each distinct value of done + failed and
# of the request state, so updates that happen before the test looks are not missed; a reload
# would start the lists afresh (and drop window.__noReload, which the test sets).
RECORDER = """
(() => {
  if (!location.pathname.startsWith('/requests/')) return;
  window.__seen = [];
  window.__states = [];
  window.__midStates = [];
  window.__chipStates = {};  // image id -> the states its chip showed, in order
  const read = () => {
    const done = document.querySelector('#count-done');
    const failed = document.querySelector('#count-failed');
    if (done && failed) {
      const n = parseInt(done.textContent, 10) + parseInt(failed.textContent, 10);
      if (!Number.isNaN(n) && window.__seen[window.__seen.length - 1] !== n) window.__seen.push(n);
    }
    const state = document.querySelector('#request-state');
    const s = state && state.dataset.state;
    if (s && window.__states[window.__states.length - 1] !== s) window.__states.push(s);
    // The state shown while some but not all images are finished (should be "processing").
    const total = parseInt(document.querySelector('#count-total')?.textContent, 10);
    const n = window.__seen[window.__seen.length - 1];
    if (s && n > 0 && n < total && !window.__midStates.includes(s)) window.__midStates.push(s);
    for (const chip of document.querySelectorAll('.chip')) {
      const seen = window.__chipStates[chip.dataset.imageId] ||= [];
      if (seen[seen.length - 1] !== chip.dataset.state) seen.push(chip.dataset.state);
    }
  };
  const start = () => {
    read();
    new MutationObserver(read).observe(document.documentElement,
      {subtree: true, childList: true, characterData: true, attributes: true});
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
"""


@pytest.fixture(scope="module")
def web_env():
    """Three workers (web_workers) and staggered slow images spread the finishes over a few
    seconds, so the progress page has something to show live."""
    return {
        "PIXSHIFT_MAX_CSV_BYTES": str(MAX_CSV_BYTES),
        "PIXSHIFT_READ_TIMEOUT": "10",
        "PIXSHIFT_DOWNLOAD_TIMEOUT": "20",
    }


@pytest.fixture(scope="module")
def web_workers():
    return 3


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(RECORDER)
    page = context.new_page()
    yield page
    context.close()


def shown_errors(page) -> list[dict]:
    return page.eval_on_selector_all(
        "ul#errors li.error",
        "els => els.map(e => ({row: e.dataset.row, column: e.dataset.column, text: e.textContent.trim()}))",
    )


def no_upload_sent(watch: PageWatch, since: int) -> list:
    return [(m, u) for m, u in watch.requests[since:] if m != "GET"]


def test_drop_csv_watch_live_progress_and_download(browser, page, web, image_server, tmp_path):
    watch = PageWatch(page)
    with evidence_on_failure(page, tmp_path, "upload-flow", watch.summary, web.logs):
        # 1. The upload page and its form.
        page.goto(web.url("/"))
        assert page.locator("#drop-zone").is_visible()
        form = page.locator("form#upload-form")
        assert form.get_attribute("method").lower() == "post"
        assert form.get_attribute("enctype") == "multipart/form-data"
        assert form.get_attribute("action") == "/"
        file_input = form.locator("input#file")
        assert file_input.get_attribute("type") == "file"
        assert file_input.get_attribute("name") == "file"
        assert set(file_input.get_attribute("accept").split(",")) == {".csv", "text/csv"}
        assert form.locator("input#webhook_url").get_attribute("name") == "webhook_url"
        assert form.locator("input[type=hidden]").count() >= 1, "no hidden CSRF field in the upload form"
        assert form.locator("button#submit").count() == 1
        assert page.locator("a#sample-csv").get_attribute("href") == "/sample.csv"
        sample = page.request.get(web.url("/sample.csv"))
        assert sample.ok and sample.text().splitlines()[0].split(",")[:3] == HEADER, sample.text()[:200]

        # 2a. Client-side checks: a file that is not a CSV, then one over the size limit, are
        # refused on the page without contacting the server.
        before = len(watch.requests)
        drop_file(page, "#drop-zone", "notes.txt", "just some notes\n", "text/plain")
        expect(page.locator("ul#errors li.error")).to_have_count(1)
        page.wait_for_timeout(300)
        assert no_upload_sent(watch, before) == [], "a non-CSV file was sent to the server"
        assert page.url.rstrip("/") == web.base_url

        first_error = page.locator("ul#errors").inner_text()
        before = len(watch.requests)
        row = f"1,Big,{image_server.url('photo1.jpg')}\n"
        too_big = ",".join(HEADER) + "\n" + row * (MAX_CSV_BYTES // len(row) + 10)
        drop_file(page, "#drop-zone", "products.csv", too_big, "text/csv")
        page.wait_for_function("old => document.querySelector('ul#errors')?.innerText !== old", arg=first_error)
        expect(page.locator("ul#errors li.error")).to_have_count(1)
        page.wait_for_timeout(300)
        assert no_upload_sent(watch, before) == [], "a CSV over the size limit was sent to the server"
        assert page.url.rstrip("/") == web.base_url

        # 2b. A CSV the server rejects: one li.error per problem, naming row and column.
        invalid = csv_text([(1, "", [image_server.url("photo1.jpg")]), (2, "Lamp", ["ftp://example.com/a.jpg"])])
        before = len(watch.requests)
        drop_file(page, "#drop-zone", "products.csv", invalid, "text/csv")
        # Dropping only shows the file for review (name once, size, the webhook field); Upload sends it.
        expect(page.locator("#chosen")).to_be_visible()
        expect(page.locator("#file-name")).to_have_text("products.csv")
        expect(page.locator("#file-size")).to_contain_text("KB")
        assert page.locator("#webhook_url").is_visible()
        page.wait_for_timeout(300)
        assert no_upload_sent(watch, before) == [], "dropping the file uploaded it at once"
        page.locator("button#submit").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('ul#errors li.error')].some(e => e.dataset.row === '3')"
        )
        errors = shown_errors(page)
        assert [(e["row"], e["column"]) for e in errors] == [("2", "Product Name"), ("3", "Input Image URLs")], errors
        assert "product name is empty" in errors[0]["text"], errors
        assert "not an absolute http(s) URL" in errors[1]["text"], errors
        assert page.url.rstrip("/") == web.base_url
        screenshot(page, tmp_path, "upload-errors.png")

        # 3. A valid CSV: staggered slow images, one 404, and a name that is HTML.
        tag = uuid.uuid4().hex[:8]
        delays = iter([0.5, 1.3, 0.7, 1.5, 0.9, 1.1, 0.6, 1.2, 1.0])

        def slow(name: str) -> str:
            return image_server.url(f"slow/{name}?delay={next(delays)}&n={tag}")

        rows = [
            (30, "Desk lamp", [slow("photo1.jpg"), slow("photo2.jpg"), slow("photo3.jpg")]),
            (10, XSS_NAME, [slow("photo2.jpg"), image_server.url(f"missing/x.jpg?n={tag}")]),
            (40, "Reading chair", [slow("alpha.png"), slow("photo3.jpg")]),
            (20, "Oak table", [slow("photo1.jpg"), slow("photo2.jpg"), slow("photo3.jpg")]),
        ]
        n_images = sum(len(urls) for _, _, urls in rows)
        drop_file(page, "#drop-zone", "products.csv", csv_text(rows), "text/csv")
        page.locator("button#submit").click()
        page.wait_for_url(re.compile(r"/requests/[0-9a-f-]{36}$"))
        page.evaluate("window.__noReload = 1")
        request_id = page.url.rsplit("/", 1)[1]
        assert page.locator("body").get_attribute("data-request-id") == request_id

        # 4. Live: the Socket.IO snapshot arrives, then progress advances without a reload.
        page.wait_for_function("() => document.querySelector('#live')?.textContent.trim() === 'live'")
        assert page.locator("#count-total").text_content().strip() == str(n_images)
        page.wait_for_function("() => parseInt(document.querySelector('#count-done').textContent, 10) > 0")
        page.wait_for_function(
            "() => ['completed', 'completed_with_errors'].includes("
            "document.querySelector('#request-state').dataset.state)",
            timeout=FINISH_TIMEOUT_MS,
        )
        seen = page.evaluate("window.__seen")
        states = page.evaluate("window.__states")
        print(
            f"done+failed seen on the page: {seen}; states seen: {states}; "
            f"chip states seen: {page.evaluate('window.__chipStates')}"
        )
        assert len(set(seen)) >= 2, f"done+failed never changed on the page: {seen} (states {states})"
        assert seen == sorted(seen), f"done+failed went backwards: {seen}"
        assert page.evaluate("window.__noReload") == 1, "the progress page reloaded"
        mid_states = page.evaluate("window.__midStates")
        assert mid_states == ["processing"], (
            f"#request-state showed {mid_states} while {seen} of the images were finished; expected processing"
        )
        # Each slow image is processing for 0.5-1.5 s, so a live page shows most chips in processing;
        # a page that only gets "done"/"failed" events shows at most the 3 (workers) its snapshot caught.
        chip_states = page.evaluate("window.__chipStates")
        went_processing = [i for i, states in chip_states.items() if "processing" in states]
        assert len(went_processing) >= 5, (
            f"only {len(went_processing)} of {n_images} chips were ever shown as processing: {chip_states}"
        )
        assert page.locator("#request-state").get_attribute("data-state") == "completed_with_errors", states
        assert page.locator("#count-done").text_content().strip() == str(n_images - 1)
        assert page.locator("#count-failed").text_content().strip() == "1"
        assert page.locator("#count-total").text_content().strip() == str(n_images)
        assert float(page.locator("progress#progress").get_attribute("value")) == 100

        # Products and their chips, in input order.
        products = page.locator(".product")
        assert products.evaluate_all("els => els.map(e => e.dataset.serial)") == [str(s) for s, _, _ in rows]
        assert page.locator(".product .product-name").all_text_contents() == [n for _, n, _ in rows]
        chips = page.locator(".chip").evaluate_all(
            "els => els.map(e => ({id: e.dataset.imageId, state: e.dataset.state,"
            " serial: e.closest('.product')?.dataset.serial}))"
        )
        assert len(chips) == n_images and len({c["id"] for c in chips}) == n_images, chips
        assert [c["state"] for c in chips if c["state"] != "done"] == ["failed"], chips
        assert [c["serial"] for c in chips if c["state"] == "failed"] == ["10"], chips

        # 5. Results, shown live: thumbnails loaded and at most 256 px, bytes and saving, the 404.
        page.locator("#results").wait_for()
        results = page.locator("#results .result")
        results.nth(n_images - 1).wait_for()
        assert results.count() == n_images
        for i in range(n_images):  # thumbnails may load lazily: look at each, as a person scrolling would
            results.nth(i).scroll_into_view_if_needed()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        thumbs = page.locator("#results .result").evaluate_all("""els => els.map(r => ({
            before: r.querySelector('img.thumb-before') && [r.querySelector('img.thumb-before').naturalWidth,
                                                            r.querySelector('img.thumb-before').naturalHeight],
            after: r.querySelector('img.thumb-after') && [r.querySelector('img.thumb-after').naturalWidth,
                                                          r.querySelector('img.thumb-after').naturalHeight],
            bytesIn: r.querySelector('.bytes-in')?.textContent.trim(),
            bytesOut: r.querySelector('.bytes-out')?.textContent.trim(),
            saving: r.querySelector('.saving')?.textContent.trim(),
            failure: r.querySelector('.failure')?.textContent.trim(),
        }))""")
        done = [t for t in thumbs if not t["failure"]]
        failed = [t for t in thumbs if t["failure"]]
        assert len(done) == n_images - 1 and len(failed) == 1, thumbs
        for t in done:
            assert t["before"] and t["after"], t
            for w, h in (t["before"], t["after"]):
                assert 0 < w <= 256 and 0 < h <= 256, t
            assert t["bytesIn"] and t["bytesOut"], t
            assert t["saving"] and re.search(r"\d+\s*%", t["saving"]), t
        assert "404" in failed[0]["failure"], failed

        # 6. HTML in a product name is text, never markup, and nothing ran.
        xss = page.locator(".product[data-serial='10'] .product-name")
        assert xss.text_content() == XSS_NAME
        assert page.locator(".product-name script").count() == 0
        assert watch.dialogs == [], watch.dialogs

        # 7. The output CSV, downloaded through the page's link.
        link = page.locator("a#download-csv")
        assert link.get_attribute("href").endswith(f"/requests/{request_id}/output.csv")
        with page.expect_download() as info:
            link.click()
        out_rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8"))))
        assert out_rows[0] == [*HEADER, "Output Image URLs"]
        assert [(int(r[0]), r[1]) for r in out_rows[1:]] == [(s, n) for s, n, _ in rows]
        for (_serial, _, urls), out in zip(rows, out_rows[1:]):
            assert out[2].split(", ") == urls
            outputs = out[3].split(", ")
            assert len(outputs) == len(urls), out
            for url, cell in zip(urls, outputs):
                if "/missing/" in url:
                    assert cell == "FAILED:http_404", out
                else:
                    assert cell.startswith(web.base_url + f"/media/{request_id}/"), out

        # 8. For people: the finished page.
        screenshot(page, tmp_path, "finished.png")
        assert page.evaluate("window.__noReload") == 1, "the progress page reloaded"
        assert watch.page_errors == [], watch.summary()
        assert watch.csp_violations() == [], watch.summary()
        assert watch.dialogs == [], watch.summary()

        # The request list links to it; the page rendered fresh shows the finished request at once.
        page.goto(web.url("/requests"))
        row_link = page.locator(f"#requests tr.request a[href$='/requests/{request_id}']")
        assert row_link.count() >= 1, page.locator("#requests").inner_html()[:2000]
        row_link.first.click()
        page.wait_for_url(re.compile(rf"/requests/{request_id}$"))
        assert page.locator("#request-state").get_attribute("data-state") == "completed_with_errors"
        assert page.locator("#results .result").count() == n_images
        assert watch.page_errors == [], watch.summary()


def test_webhook_endpoints_page(browser, page, web):
    watch = PageWatch(page)
    watch.accept_dialogs = True  # a "really delete?" confirm is fine
    hook_url = f"http://127.0.0.1:9/hook-{uuid.uuid4().hex[:8]}"
    with evidence_on_failure(page, web.tmp_path, "webhooks", watch.summary, web.logs):
        page.goto(web.url("/webhooks"))
        form = page.locator("form#webhook-form")
        form.locator("input[name=url]").fill(hook_url)
        form.locator("input[name=description]").fill("browser test")
        form.locator("[type=submit]").first.click()

        expect(page.locator("#endpoint-secret")).to_contain_text("whsec_")
        secret = page.locator("#endpoint-secret").text_content().strip()
        assert re.fullmatch(r"whsec_[A-Za-z0-9+/=_-]{16,}", secret), secret
        # The copy button puts the secret on the clipboard (navigator.clipboard, from webhooks.js).
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web.base_url)
        page.locator("button.copy[data-copy='#endpoint-secret']").click()
        expect(page.locator("button.copy[data-copy='#endpoint-secret']")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == secret
        row = page.locator("#endpoints tr.endpoint", has_text=hook_url)
        expect(row).to_have_count(1)
        api = [e for e in web.session.get(web.url("/api/webhooks")).json()["endpoints"] if e["url"] == hook_url]
        assert len(api) == 1 and api[0]["description"] == "browser test", api
        assert secret not in str(api), "the API listing shows the secret"

        # The secret is shown once: not on the next visit.
        page.goto(web.url("/webhooks"))
        expect(page.locator("#endpoints tr.endpoint", has_text=hook_url)).to_have_count(1)
        assert secret not in page.content(), "the secret is shown again"

        # Post/redirect/get: a reload registers nothing new.
        page.reload()
        api = [e for e in web.session.get(web.url("/api/webhooks")).json()["endpoints"] if e["url"] == hook_url]
        assert len(api) == 1, api

        # Delete asks first (a <dialog>); "Keep it" keeps it, "Delete endpoint" deletes.
        page.locator("#endpoints tr.endpoint", has_text=hook_url).locator("button.delete").click()
        expect(page.locator("dialog#confirm-delete")).to_be_visible()
        expect(page.locator("#confirm-delete-url")).to_have_text(hook_url)
        page.keyboard.press("Enter")  # the focused button: "Keep it"
        expect(page.locator("dialog#confirm-delete")).to_be_hidden()
        expect(page.locator("#endpoints tr.endpoint", has_text=hook_url)).to_have_count(1)
        page.locator("#endpoints tr.endpoint", has_text=hook_url).locator("button.delete").click()
        page.locator("#confirm-delete-yes").click()
        expect(page.locator("#endpoints tr.endpoint", has_text=hook_url)).to_have_count(0)
        page.wait_for_load_state()
        api = [e for e in web.session.get(web.url("/api/webhooks")).json()["endpoints"] if e["url"] == hook_url]
        assert api == [], api
        assert watch.page_errors == [], watch.summary()
        assert watch.csp_violations() == [], watch.summary()
