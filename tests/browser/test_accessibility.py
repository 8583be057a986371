"""Every page in a real browser, at a desktop and a phone size: axe-core finds no serious or critical
accessibility violation, and the page never scrolls sideways.

axe-core comes from the npm registry (tests/axe/package.json and its lock; ``.ci/run`` runs
``npm ci --prefix tests/axe``) and is injected into each page; the context bypasses the CSP for
that one script, the pages themselves run as served. Screenshots of every page at both sizes land
in test-output/pages/ for people to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import pytest
from chromium import drop_file
from csv_files import csv_text
from services import unavailable

from harness.livestack import Stack

AXE = Path(__file__).resolve().parents[1] / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "pages"
SIZES = {"desktop": (1440, 900), "phone": (390, 844)}
TOKEN = "tok-accessibility"
TIMEOUT_MS = 20_000

PAGES = [
    pytest.param("upload", id="upload"),
    pytest.param("upload-review", id="upload-review"),
    pytest.param("requests", id="requests"),
    pytest.param("request-running", id="request-running"),
    pytest.param("request-finished", id="request-finished"),
    pytest.param("webhooks", id="webhooks"),
    pytest.param("webhooks-created", id="webhooks-created"),
    pytest.param("webhooks-confirm", id="webhooks-confirm"),
    pytest.param("login", id="login"),
    pytest.param("error", id="error"),
    pytest.param("docs", id="docs"),
]


@pytest.fixture(scope="module", autouse=True)
def axe_core():
    """Before the browser starts (an autouse fixture of the module comes first)."""
    if not AXE.exists():
        unavailable(f"{AXE} is missing: npm ci --prefix tests/axe")


@pytest.fixture(scope="module")
def stacks(tmp_path_factory, image_server):
    """A server without tokens (every page but login) and one with tokens (the login page)."""
    env = {"PIXSHIFT_READ_TIMEOUT": "300", "PIXSHIFT_DOWNLOAD_TIMEOUT": "300"}
    with (
        Stack(tmp_path_factory.mktemp("a11y"), env, separate_consumer=False, workers=2) as open_stack,
        Stack(
            tmp_path_factory.mktemp("a11y-tokens"), {"PIXSHIFT_API_TOKENS": TOKEN}, separate_consumer=False
        ) as token_stack,
    ):
        yield open_stack, token_stack


@pytest.fixture(scope="module")
def site(browser, stacks, image_server, tmp_path_factory):
    """The pages to look at, made the way a person makes them: two uploads through the upload page
    (one finished, with a broken image; one left running on images that take minutes) and a
    webhook endpoint. Returns the URLs and the browser state (cookies) that sees them."""
    web, token_stack = stacks
    tag = uuid.uuid4().hex[:8]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()

    def upload(rows) -> str:
        page.goto(web.url("/"))
        drop_file(page, "#drop-zone", "spring-catalogue.csv", csv_text(rows), "text/csv")
        page.locator("button#submit").click()
        page.wait_for_url(re.compile(r"/requests/[0-9a-f-]{36}$"))
        return page.url

    # The endpoint first, so the finished request's page lists a webhook delivery.
    page.goto(web.url("/webhooks"))
    page.locator("input[name=url]").fill(f"http://127.0.0.1:9/hooks/{tag}")
    page.locator("input[name=description]").fill("Shop backend")
    page.locator("#webhook-form [type=submit]").click()
    page.locator("#endpoint-secret").wait_for()
    finished = upload(
        [
            (1, "Desk lamp", [image_server.url(f"photo1.jpg?n={tag}"), image_server.url(f"alpha.png?n={tag}")]),
            (2, "Oak table with a rather long product name", [image_server.url(f"missing/x.jpg?n={tag}")]),
            (3, "Reading chair", [image_server.url(f"photo3.jpg?n={tag}")]),
        ]
    )
    page.wait_for_function(
        "() => ['completed', 'completed_with_errors', 'Completed', 'Completed with errors'].includes("
        "document.querySelector('#request-state')?.textContent.trim())",
        timeout=60_000,
    )
    running = upload(
        [
            (1, "Canvas tote", [image_server.url(f"photo2.jpg?n=r{tag}")]),
            (2, "Sneaker", [image_server.url(f"slow/photo1.jpg?delay=600&n=r{tag}")]),
            (3, "Mug", [image_server.url(f"slow/photo3.jpg?delay=600&n=r{tag}")]),
        ]
    )
    state = tmp_path_factory.mktemp("a11y-state") / "state.json"
    context.storage_state(path=str(state))
    context.close()
    urls = {
        "upload": web.url("/"),
        "requests": web.url("/requests"),
        "request-running": running,
        "request-finished": finished,
        "webhooks": web.url("/webhooks"),
        "login": token_stack.url("/login"),
        "error": web.url("/requests/00000000-0000-4000-8000-000000000000"),
        "docs": web.url("/docs"),
    }
    return urls, state, web


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("name", PAGES)
def test_page_has_no_serious_violations_and_no_sideways_scroll(browser, site, name, size):
    urls, state, web = site
    width, height = SIZES[size]
    context = browser.new_context(
        viewport={"width": width, "height": height}, bypass_csp=True, storage_state=str(state)
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        if name == "webhooks-created":  # the one-time secret box after registering
            page.goto(web.url("/webhooks"))
            page.locator("input[name=url]").fill(f"http://127.0.0.1:9/hooks/{uuid.uuid4().hex[:8]}")
            page.locator("#webhook-form [type=submit]").click()
            page.locator("#endpoint-secret").wait_for()
        elif name == "webhooks-confirm":  # the <dialog> before a delete, opened by keyboard
            page.goto(web.url("/webhooks"))
            page.locator("#endpoints button.delete").first.focus()
            page.keyboard.press("Enter")
            page.locator("dialog#confirm-delete[open]").wait_for()
        elif name == "upload-review":  # a file dropped, waiting for its Upload button
            page.goto(web.url("/"))
            drop = page.evaluate_handle(
                "() => { const dt = new DataTransfer(); dt.items.add(new File(['Serial Number,Product Name,"
                "Input Image URLs\\n1,Mug,https://example.com/mug.jpg\\n'], 'autumn-catalogue-2026.csv',"
                " {type: 'text/csv'})); return dt; }"
            )
            for event in ("dragenter", "dragover", "drop"):
                page.dispatch_event("#drop-zone", event, {"dataTransfer": drop})
            page.locator("#chosen").wait_for()
        else:
            page.goto(urls[name])
        if name == "docs":
            page.wait_for_selector(".opblock", timeout=TIMEOUT_MS)
        page.wait_for_load_state("load")
        page.wait_for_timeout(400)  # live pages settle (Socket.IO snapshot), fonts and images load

        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = SHOTS / f"{name}-{size}.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("PIXSHIFT_A11Y_KEEP"):  # a copy outside the repository, if asked
            shutil.copyfile(shot, Path(os.environ["PIXSHIFT_A11Y_KEEP"]) / shot.name)

        overflow = page.evaluate(
            "() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
            " wide: [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right"
            " > window.innerWidth + 1 && !e.closest('.table-wrap, table, dialog, .visually-hidden'))"
            ".slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))})"
        )
        page.add_script_tag(path=str(AXE))
        violations = page.evaluate(
            """async () => {
                const result = await axe.run(document, {resultTypes: ['violations']});
                return result.violations
                    .filter(v => v.impact === 'serious' || v.impact === 'critical')
                    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                                nodes: v.nodes.slice(0, 6).map(n => n.target.join(' ') + ' :: ' + n.failureSummary)}));
            }"""
        )
        problems = []
        if overflow["scroll"] > overflow["inner"]:
            problems.append(f"the page scrolls sideways at {width}px: {overflow}")
        for v in violations:
            problems.append(f"{v['impact']} {v['id']}: {v['help']}\n    " + "\n    ".join(v["nodes"]))
        assert not problems, f"{name} at {width}x{height} ({shot}):\n" + "\n".join(problems)
    finally:
        context.close()
