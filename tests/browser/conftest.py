"""What the browser tests share: one Chromium per module, and one live ``python -m pixshift`` per
module (``web``) whose settings a module gives by overriding ``web_env`` and ``web_workers``."""

from __future__ import annotations

import pytest
from chromium import chromium

from harness.livestack import Stack


@pytest.fixture(scope="module")
def browser(request):
    """A headless Chromium for the module. Playwright's ``expect()`` waits up to the module's
    ``TIMEOUT_MS`` when it has one."""
    with chromium() as b:
        timeout = getattr(request.module, "TIMEOUT_MS", None)
        if timeout is not None:
            from playwright.sync_api import expect  # chromium() has checked that Playwright is there

            expect.set_options(timeout=timeout)
        yield b


@pytest.fixture(scope="module")
def web_env() -> dict[str, str]:
    """Settings of the module's ``web`` server beyond the test defaults (a module overrides this)."""
    return {}


@pytest.fixture(scope="module")
def web_workers() -> int:
    """Worker threads of the module's ``web`` server (a module overrides this)."""
    return 2


@pytest.fixture(scope="module")
def web(request, tmp_path_factory, web_env, web_workers):
    """One live ``python -m pixshift`` for the module (embedded: SQLite, in-process workers)."""
    folder = tmp_path_factory.mktemp(f"{request.module.__name__}-stack")
    with Stack(folder, web_env, separate_consumer=False, workers=web_workers) as stack:
        yield stack
