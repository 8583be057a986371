"""Rendered status pages of unfinished requests, kept for ``STATUS_CACHE_SECONDS``: a hundred
clients polling a big request once a second then cost one render a second, not a hundred.

Per process; the caller checks visibility before asking. A page is rendered by one poll at a time:
when it expires, the others get the page it replaces; when there is none yet (its first poll), they
wait for the render under way. Otherwise every poll arriving during a render would render too, and
under load the renders slow each other down.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

_page_cache: dict[Hashable, tuple[float, bytes]] = {}
_rendering: dict[Hashable, threading.Event] = {}  # pages being rendered -> set when done
_page_cache_lock = threading.Lock()
_PAGE_CACHE_MAX = 256
_FIRST_RENDER_WAIT = 10.0  # seconds a poll waits for another's first render before rendering itself


def cached_page(key: Hashable, ttl: float, render: Callable[[], bytes]) -> bytes:
    """The page's body under ``key``: the cached one while it is fresh (or while another poll
    renders its successor), else ``render()``'s, kept for ``ttl`` seconds."""
    now = time.monotonic()
    with _page_cache_lock:
        hit = _page_cache.get(key)
        done = _rendering.get(key)
        ours = (hit is None or hit[0] <= now) and done is None
        if ours:
            done = _rendering[key] = threading.Event()
    if not ours and hit is None:
        assert done is not None  # nothing to serve yet, and not ours to render: another poll renders it
        done.wait(_FIRST_RENDER_WAIT)
        with _page_cache_lock:
            hit = _page_cache.get(key)
    if ours or hit is None:  # ours to render, or the render we waited for failed
        try:
            body = render()
            with _page_cache_lock:
                if len(_page_cache) >= _PAGE_CACHE_MAX:
                    for stale in [k for k, (expires, _) in _page_cache.items() if expires <= now] or list(_page_cache):
                        del _page_cache[stale]
                _page_cache[key] = hit = (time.monotonic() + ttl, body)
        finally:
            if ours and done is not None:
                with _page_cache_lock:
                    del _rendering[key]
                done.set()
    return hit[1]
