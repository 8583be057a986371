"""The request page in a real browser (Debian's Chromium via Playwright) while a request runs and
when it is done: tiles of finished images appear while others are still held by the image host,
the failed filter shows reasons as text, the tab title shows progress, the comparison dialog
opens by keyboard and loads the full-size images only then, and nothing scrolls sideways at
desktop (1440×900) or phone (390×844) size.

Screenshots for people land in test-output/browser/request-*.png.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    expect = None

from catalog_server import CatalogHost
from chromium import PageWatch, evidence_on_failure, screenshot
from csv_files import csv_text
from csv_files import upload as csv_upload

TIMEOUT_MS = 20_000
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
FINISHED = ("completed", "completed_with_errors")


@pytest.fixture(scope="module")
def web_env():
    """Three workers (web_workers); held images may wait a while for release."""
    return {"PIXSHIFT_READ_TIMEOUT": "45", "PIXSHIFT_DOWNLOAD_TIMEOUT": "60"}


@pytest.fixture(scope="module")
def web_workers():
    return 3


@pytest.fixture()
def host():
    with CatalogHost(size=(900, 600)) as h:
        yield h


def upload(web, rows, webhook_url: str | None = None) -> str:
    response = web.upload(csv_text(rows), webhook_url=webhook_url, filename="spring-catalog.csv")
    assert response.status_code == 202, response.text
    return response.json()["request_id"]


def overflow(page) -> dict:
    return page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " wide: [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right"
        " > window.innerWidth + 1 && !e.closest('dialog')).slice(0, 5).map(e => e.tagName + '.' + e.className)})"
    )


def assert_no_sideways_scroll(page, where: str) -> None:
    o = overflow(page)
    assert o["scroll"] <= o["inner"], f"{where}: the page scrolls sideways: {o}"


def visible_tiles(page) -> list[dict]:
    return page.locator("#results .tile:visible").evaluate_all(
        "els => els.map(t => ({id: t.dataset.imageId, state: t.dataset.state,"
        " failure: t.querySelector('.failure')?.textContent.trim()}))"
    )


def test_request_page_while_running_and_when_done(browser, web, image_server, host, tmp_path):
    tag = uuid.uuid4().hex[:8]

    def img(path: str) -> str:
        sep = "&" if "?" in path else "?"
        return image_server.url(f"{path}{sep}n={tag}")

    held = [host.url(f"held-{tag}-1"), host.url(f"held-{tag}-2", host="localhost")]
    rows = [
        (
            101,
            "Trail running shoe, waterproof, extra-wide fit for long mountain days (Autumn collection)",
            [img("gen/1200x800.jpg?seed=3"), img("gen/1200x800.jpg?seed=4")],
        ),
        (102, "Canvas tote", [img("alpha.png")]),
        (103, "Linen shirt", [img(f"missing/shirt-{tag}.jpg")]),
        (104, "Desk lamp", [held[0], img("gen/1000x1000.jpg?seed=5")]),
        (105, "Reading chair", [held[1]]),
        (106, "Oak table", [img(f"missing/table-{tag}.jpg"), img("photo3.jpg")]),
    ]
    total = sum(len(urls) for _, _, urls in rows)
    # A webhook to a closed port: its failed delivery shows in the finished page's table.
    request_id = upload(web, rows, webhook_url=f"http://127.0.0.1:9/hook-{tag}")

    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    watch = PageWatch(page)
    try:
        with evidence_on_failure(page, tmp_path, "request-page", watch.summary, web.logs):
            host.wait_held(2)
            page.goto(web.url(f"/requests/{request_id}"))
            page.wait_for_function("() => document.querySelector('#live')?.textContent.trim() === 'live'")

            # 1. While the two held images still run, every other image shows its result.
            page.wait_for_function(
                """n => [...document.querySelectorAll('#results .tile[data-state=done]')].filter(t =>
                      [...t.querySelectorAll('img')].length === 2 &&
                      [...t.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)).length >= n
                   && document.querySelectorAll('#results .tile .failure').length >= 2""",
                arg=total - 4,
            )
            tiles = page.locator("#results .tile").evaluate_all(
                "els => els.map(t => ({state: t.dataset.state, name: t.closest('.product').dataset.serial,"
                " sizes: t.querySelector('.sizes')?.textContent.replace(/\\s+/g, ' ').trim(),"
                " failure: t.querySelector('.failure')?.textContent.trim()}))"
            )
            assert len(tiles) == total, tiles
            still_running = [t for t in tiles if t["state"] in ("queued", "processing")]
            assert len(still_running) == 2 and {t["name"] for t in still_running} == {"104", "105"}, tiles
            for t in tiles:
                if t["state"] == "done":
                    assert re.search(r"B.* → .*B.*−\d+(\.\d+)?%", t["sizes"]), t
            assert page.locator("#request-state").get_attribute("data-state") == "processing"
            assert page.locator("#request-state").text_content().strip() == "Processing"
            assert re.fullmatch(r"\d{1,2}% · spring-catalog\.csv · PixShift", page.title()), page.title()
            assert page.locator("#total-saved").text_content().strip().endswith("%")
            assert page.locator("#progress").get_attribute("aria-label") or page.locator("label[for=progress]").count()
            assert page.locator("[aria-live=polite]").count() >= 1
            # Full-size images are not loaded by the grid: only thumbnails.
            originals = [u for m, u in watch.requests if "/media/" in u and "-thumb" not in u]
            assert originals == [], originals
            assert_no_sideways_scroll(page, "desktop, running")
            screenshot(page, tmp_path, "request-running-desktop.png")

            # 2. "Failed" shows only the failed tiles, with their reason as text.
            page.locator("button.filter[data-filter=failed]").click()
            shown = visible_tiles(page)
            assert [t["state"] for t in shown] == ["failed", "failed"], shown
            assert all(t["failure"] and "404" in t["failure"] for t in shown), shown
            assert page.locator("button.filter[data-filter=failed]").get_attribute("aria-pressed") == "true"
            page.locator("button.filter[data-filter=all]").click()
            assert len(visible_tiles(page)) == total
            # Search, by name or serial, over this page's products.
            page.locator("#search").fill("lamp")
            assert {t["id"] for t in visible_tiles(page)} == set(
                page.locator(".product[data-serial='104'] .tile").evaluate_all("els => els.map(t => t.dataset.imageId)")
            )
            page.locator("#search").fill("#106")
            assert len(visible_tiles(page)) == 2
            page.locator("#search").fill("")

            # 3. On a phone: no sideways scrolling, and the title is not one letter per line.
            page.set_viewport_size(PHONE)
            page.wait_for_timeout(200)
            assert_no_sideways_scroll(page, "phone, running")
            assert page.locator("h1").bounding_box()["width"] > 200
            screenshot(page, tmp_path, "request-running-phone.png")

            # 4. The held images come; the request ends with errors.
            host.release()
            page.wait_for_function(
                "s => s.includes(document.querySelector('#request-state').dataset.state)", arg=list(FINISHED)
            )
            expect(page.locator("#request-state")).to_have_text("Completed with errors")
            expect(page.locator("#download-csv")).to_be_visible()
            expect(page.locator("#retry")).to_be_visible()
            assert page.title() == "Completed with errors · spring-catalog.csv · PixShift", page.title()
            page.wait_for_function(
                "n => document.querySelectorAll('#results .tile[data-state=done] img.thumb-after').length === n",
                arg=total - 2,
            )
            page.wait_for_function(
                "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            assert page.locator("#count-done").text_content().strip() == str(total - 2)
            expect(page.locator("#total-images")).to_have_text(str(total - 2))
            live_totals = [page.locator(f"#total-{k}").text_content().strip() for k in ("in", "out", "saved")]
            assert page.locator("#count-failed").text_content().strip() == "2"
            assert page.locator("#announce").text_content().strip() != ""
            assert_no_sideways_scroll(page, "phone, finished")
            screenshot(page, tmp_path, "request-finished-phone.png")
            page.locator("#webhooks").wait_for()
            page.set_viewport_size({"width": 360, "height": 740})
            page.wait_for_timeout(200)
            assert_no_sideways_scroll(page, "360 px, finished")
            page.set_viewport_size(DESKTOP)
            page.wait_for_timeout(200)
            assert_no_sideways_scroll(page, "desktop, finished")
            screenshot(page, tmp_path, "request-finished-desktop.png")

            # 5. Keyboard only: Tab from the search box to the first Compare button, Enter opens
            # the dialog, which then (and only then) loads the full-size before and after.
            page.locator("#search").focus()
            for _ in range(30):
                page.keyboard.press("Tab")
                if page.evaluate("() => document.activeElement.classList.contains('compare')"):
                    break
            else:
                pytest.fail("Tab never reached a Compare button")
            tile_id = page.evaluate("() => document.activeElement.closest('.tile').dataset.imageId")
            originals = [u for m, u in watch.requests if "/media/" in u and "-thumb" not in u]
            assert originals == [], originals
            page.keyboard.press("Enter")
            expect(page.locator("dialog#compare")).to_have_attribute("open", "")
            page.wait_for_function(
                "() => ['compare-before', 'compare-after'].every(id => {"
                " const i = document.getElementById(id); return i.complete && i.naturalWidth > 0; })"
            )
            sizes = page.evaluate(
                "() => [document.getElementById('compare-before').naturalWidth,"
                " document.getElementById('compare-after').naturalWidth]"
            )
            in_size = page.locator(f"#image-{tile_id}").get_attribute("data-in-size")
            assert sizes[0] == int(in_size.split("×")[0]) and sizes[0] > 256, (sizes, in_size)
            facts = page.locator("#compare-facts").inner_text()
            assert "Format:" in facts and "Pixel size:" in facts and "Quality" in facts, facts
            assert re.search(r"\d+×\d+ px", facts), facts
            loaded = [u for m, u in watch.requests if "/media/" in u and "-thumb" not in u]
            assert len(loaded) >= 2, loaded
            page.locator("#compare-split").focus()
            page.keyboard.press("ArrowLeft")
            assert page.locator("#compare-split").input_value() == "49"
            screenshot(page, tmp_path, "request-compare-desktop.png", full_page=False)
            page.locator("#compare-zoom").focus()
            page.keyboard.press("Enter")
            assert page.locator("#compare-zoom").get_attribute("aria-pressed") == "true"
            page.keyboard.press("Escape")
            expect(page.locator("dialog#compare")).not_to_have_attribute("open", "")
            assert page.evaluate("() => document.activeElement.classList.contains('compare')")

            page.set_viewport_size(PHONE)
            page.locator(f"#image-{tile_id} button.compare").click()
            expect(page.locator("dialog#compare")).to_have_attribute("open", "")
            page.wait_for_function("() => document.getElementById('compare-before').naturalWidth > 0")
            screenshot(page, tmp_path, "request-compare-phone.png", full_page=False)
            page.keyboard.press("Escape")

            # 6. A reload shows the same finished page at once.
            page.reload()
            expect(page.locator("#request-state")).to_have_text("Completed with errors")
            assert page.locator("#results .tile").count() == total
            assert page.locator("#results .tile .failure").count() == 2
            assert page.title() == "Completed with errors · spring-catalog.csv · PixShift"
            reloaded_totals = [page.locator(f"#total-{k}").text_content().strip() for k in ("in", "out", "saved")]
            assert reloaded_totals == live_totals, "the live page's byte totals differ from the server's"
            assert watch.page_errors == [], watch.summary()
            assert watch.csp_violations() == [], watch.summary()
        if AXE.exists():
            axe_violations(browser, web.url(f"/requests/{request_id}"), tmp_path)
    finally:
        host.release()
        context.close()


# axe-core, when it is installed (the pages branch installs it from npm for its own browser tests).
AXE = Path(
    os.environ.get(
        "PIXSHIFT_AXE", Path(__file__).resolve().parents[1] / "axe" / "node_modules" / "axe-core" / "axe.min.js"
    )
)


def axe_violations(browser, url: str, tmp_path) -> None:
    """0 serious or critical axe-core violations (WCAG 2 A/AA) on the finished page at both sizes.
    Its own context bypasses the CSP, which would refuse the injected script."""
    for viewport in (DESKTOP, PHONE):
        context = browser.new_context(viewport=viewport, bypass_csp=True)
        try:
            page = context.new_page()
            page.goto(url)
            page.locator("#download-csv").wait_for()
            page.add_script_tag(path=str(AXE))
            result = page.evaluate(
                "() => axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})"
            )
            bad = [
                (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:5])
                for v in result["violations"]
                if v["impact"] in ("serious", "critical")
            ]
            assert bad == [], f"axe at {viewport['width']} px: {bad}"
        finally:
            context.close()


def test_tiles_endpoint_renders_the_asked_images_of_the_page(app, client, monkeypatch):
    """What the live page fetches as images end: the page's tiles by id (junk ids ignored), with
    the request's byte totals and counts; no worker runs here, so the images stay queued."""
    rows = [(1, "Lamp", ["http://127.0.0.1:9/a.jpg"]), (2, "Chair", ["http://127.0.0.1:9/b.jpg"])]
    request_id = csv_upload(client, csv_text(rows), filename="p.csv")
    ids = [im["id"] for p in client.get(f"/status/{request_id}").get_json()["items"] for im in p["images"]]
    doc = client.get(f"/requests/{request_id}/tiles?ids={ids[0]},x,-1,{10**12}").get_json()
    assert list(doc["tiles"]) == [str(ids[0])]
    assert f'id="image-{ids[0]}"' in doc["tiles"][str(ids[0])] and 'data-state="queued"' in doc["tiles"][str(ids[0])]
    assert doc["totals"] == {"images": 0, "input_bytes": 0, "output_bytes": 0, "saved_percent": None}
    assert doc["counts"]["total"] == 2
    html = client.get(f"/requests/{request_id}", headers={"Accept": "text/html"}).get_data(as_text=True)
    summary = html.split('<section id="results"')[0]
    assert "/status/" not in summary, "the status JSON link belongs in the section's footer, not the summary"
    assert 'class="api-link"' in html and "Queued" in html and "<title>0% · p.csv · PixShift</title>" in html

    # Paged by product: with one product a page, page 2 holds (and renders tiles of) the second only.
    monkeypatch.setitem(app.config, "STATUS_PAGE_SIZE", 1)
    doc = client.get(f"/requests/{request_id}/tiles?page=2&ids={ids[0]},{ids[1]}").get_json()
    assert list(doc["tiles"]) == [str(ids[1])]
    html = client.get(f"/requests/{request_id}?page=2", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'data-page="2"' in html and "Page 2 of 2" in html and 'href="?page=1"' in html
    assert f'id="image-{ids[1]}"' in html and f'id="image-{ids[0]}"' not in html
