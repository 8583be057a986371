"""Real-browser helpers: Debian's Chromium driven by Playwright, plus artifacts a human can look at.
(The ``browser`` fixture is in tests/browser/conftest.py; product CSVs come from tests/csv_files.py.)

Playwright's own browser download is never used (``playwright install`` cannot reach its CDN
here); the tests launch the system Chromium, ``/usr/bin/chromium`` from Debian's ``chromium``
package, or ``PIXSHIFT_TEST_CHROMIUM`` when set.

When the browser is not there: locally the test is skipped with the reason; with ``CI`` set it
fails, so a CI machine without Chromium can never pass by running nothing. A Chromium that is
there but does not start always fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest
from services import unavailable

CHROMIUM = os.environ.get("PIXSHIFT_TEST_CHROMIUM", "/usr/bin/chromium")
# We run as root (no sandbox); the rest keeps Chromium from calling Google, which is refused here.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Screenshots for people: test-output/ at the repository root (git-ignored).
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-output" / "browser"


@contextlib.contextmanager
def chromium():
    """A headless Chromium (Playwright ``Browser``) for the duration of the block."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        unavailable(f"Playwright for Python is not installed ({exc}); pip install -r requirements-dev.txt")
    if not Path(CHROMIUM).exists():
        unavailable(f"{CHROMIUM} is missing; apt-get install chromium (or set PIXSHIFT_TEST_CHROMIUM)")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        except Exception as exc:  # present but broken: never a skip
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {exc}", pytrace=False)
        try:
            yield browser
        finally:
            browser.close()


class PageWatch:
    """What a page did that a person would notice: JS errors, console errors, dialogs, requests."""

    def __init__(self, page) -> None:
        self.page = page
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (method, url)
        self.failed_responses: list[str] = []  # "status method url", for failure reports
        self.accept_dialogs = False
        self.started = time.monotonic()
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("console", self._console)
        page.on("dialog", self._dialog)
        page.on("request", lambda r: self.requests.append((r.method, r.url)))
        page.on("response", self._response)
        self.socket_frames: list[str] = []  # Socket.IO frames received, for failure reports
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _console(self, msg) -> None:
        if msg.type == "error":
            self.console_errors.append(msg.text)

    def _response(self, response) -> None:
        if response.status >= 400:
            self.failed_responses.append(f"{response.status} {response.request.method} {response.url}")

    def _frame(self, payload) -> None:
        text = payload if isinstance(payload, str) else repr(payload)
        self.socket_frames.append(f"{time.monotonic() - self.started:7.2f}s {text[:300]}")

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if self.accept_dialogs:
            dialog.accept()
        else:
            dialog.dismiss()

    def csp_violations(self) -> list[str]:
        return [m for m in self.console_errors if "Content Security Policy" in m]

    def summary(self) -> str:
        return (
            f"page errors: {self.page_errors}\nconsole errors: {self.console_errors}\n"
            f"failed responses: {self.failed_responses}\ndialogs: {self.dialogs}\n"
            f"Socket.IO frames received (last 40):\n  " + "\n  ".join(self.socket_frames[-40:])
        )


def drop_file(page, selector: str, name: str, content: str, mime: str) -> None:
    """Drop a file on ``selector`` as a person dragging it from their desktop would:
    dragenter, dragover, drop, all carrying one DataTransfer that holds the file."""
    data_transfer = page.evaluate_handle(
        """([name, content, mime]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([content], name, {type: mime}));
            return dt;
        }""",
        [name, content, mime],
    )
    try:
        for event in ("dragenter", "dragover", "drop"):
            page.dispatch_event(selector, event, {"dataTransfer": data_transfer})
    finally:
        data_transfer.dispose()


def screenshot(page, tmp_path: Path, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot in the test's folder and copy it to test-output/browser/ for people."""
    path = Path(tmp_path) / name
    page.screenshot(path=str(path), full_page=full_page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / name)
    return path


@contextlib.contextmanager
def evidence_on_failure(page, tmp_path: Path, name: str, *extra):
    """On any failure inside the block, keep a screenshot and the page's HTML in test-output/browser/
    and add ``extra`` callables' text (server logs, page watch) to the failure."""
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, pytest.skip.Exception)):
            raise
        notes = []
        try:
            screenshot(page, tmp_path, f"{name}-failure.png")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / f"{name}-failure.html").write_text(page.content())
            notes.append(f"screenshot and HTML at {ARTIFACTS}/{name}-failure.*; page URL {page.url}")
        except Exception as shot_exc:  # the page may be gone
            notes.append(f"(no screenshot: {shot_exc})")
        for source in extra:
            try:
                notes.append(source())
            except Exception as note_exc:
                notes.append(f"(could not collect: {note_exc})")
        if hasattr(exc, "add_note"):
            for note in notes:
                exc.add_note(note)
        raise
