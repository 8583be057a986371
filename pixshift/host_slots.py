"""How many downloads from one host run at once in this process, and who waits for the next.

A host that stalls every connection would otherwise hold every worker thread until its deadlines
pass, and every other request would wait behind it. With a cap per host, a slow host holds at
most ``limit`` threads; its other images are parked here, holding no thread and no claim (still
``queued`` in the database), and the thread that frees a slot hands back the first parked image
to be enqueued again. Scrapy's per-domain concurrency does the same for crawlers, and suppliers'
servers see a polite client. Parked images of a process that dies are found by the sweep, like
any queued image whose task was lost.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from urllib.parse import urlsplit

__all__ = ["HostSlots", "host_of"]


def host_of(url: str) -> str:
    """The politeness key of a URL: its host name, lower-case (every port of a host counts)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


class HostSlots:
    """At most ``limit`` downloads per host at once; the rest wait in first-come order."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the per-host download limit must be at least 1")
        self.limit = limit
        self._lock = threading.Lock()
        self._busy: defaultdict[str, int] = defaultdict(int)
        self._parked: defaultdict[str, OrderedDict[int, None]] = defaultdict(OrderedDict)
        self._handed_back: set[int] = set()

    def try_acquire(self, host: str, image_id: int) -> bool:
        """Take a slot for ``image_id``'s download, or park the image (False) until one frees."""
        with self._lock:
            handed_back = image_id in self._handed_back
            self._handed_back.discard(image_id)
            if self._busy[host] < self.limit:
                self._busy[host] += 1
                self._parked[host].pop(image_id, None)
                return True
            queue = self._parked[host]
            queue[image_id] = None
            if handed_back:  # it waited its turn once already: first in line again
                queue.move_to_end(image_id, last=False)
            return False

    def release(self, host: str) -> int | None:
        """Give the slot back; returns the parked image to enqueue again, if any."""
        with self._lock:
            self._busy[host] -= 1
            if self._busy[host] <= 0:
                del self._busy[host]
            queue = self._parked.get(host)
            if not queue:
                self._parked.pop(host, None)
                return None
            image_id, _ = queue.popitem(last=False)
            self._handed_back.add(image_id)
            return image_id

    def parked(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._parked.values())
