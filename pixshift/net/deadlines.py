"""One wall-clock deadline over everything an outbound HTTP call does on the wire.

Socket timeouts bound each read, not the call: a peer that sends one byte of its status line,
its headers or its body just before every timeout keeps a call, and the worker thread that made
it, for ever. Inside ``limit(deadline)``, every connection urllib3 hands out on this thread
(``WatchedPoolsAdapter``) is registered with the limit; one watcher thread shuts those sockets
when the deadline passes, which wakes a read blocked at any phase (TCP, TLS handshake, status
line, headers, body) with an error or an end of stream. The caller then asks ``expired`` to
tell a deadline from a broken peer. Name resolution is the system resolver's and not covered.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["Limit", "WatchedPoolsAdapter", "limit"]

# A connection may still be connecting (no socket yet) when the deadline passes: look again
# this often until the call gives up, so a socket that appears late is shut too.
_RECHECK_SECONDS = 0.1

_local = threading.local()


class Limit:
    """The deadline of one outbound call and the connections it used."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._connections: list[Any] = []
        self._closed = False
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _add(self, connection: Any) -> None:
        with self._lock:
            self._connections.append(connection)
            if self.expired:
                _shut(connection)

    def _expire(self) -> bool:
        """Shut every socket of the call; False once the call has ended (nothing left to do)."""
        with self._lock:
            if self._closed:
                return False
            self.expired = True
            for connection in self._connections:
                _shut(connection)
            return True

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            self._connections.clear()  # back in the pool, they belong to the next call


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is None:
        return
    try:
        # The plain socket's shutdown, also for an SSLSocket (whose own would drop its TLS state
        # under the reading thread): the blocked read returns at once.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


@contextmanager
def limit(deadline: float) -> Iterator[Limit]:
    """Hold every connection this thread uses meanwhile to ``deadline`` (``time.monotonic()``)."""
    current = Limit(deadline)
    outer = getattr(_local, "limit", None)
    _local.limit = current
    _watcher.add(current)
    try:
        yield current
    finally:
        current._close()
        _local.limit = outer


def _register(connection: Any) -> None:
    current: Limit | None = getattr(_local, "limit", None)
    if current is not None:
        current._add(connection)


class _Watcher:
    """One thread for every limit in the process: sleeps until the earliest deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Limit]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, item: Limit, at: float | None = None) -> None:
        with self._wake:
            heapq.heappush(self._heap, (item.deadline if at is None else at, next(self._order), item))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._run, name="pixshift-deadlines", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, due = heapq.heappop(self._heap)
            if due._expire():
                self.add(due, at=time.monotonic() + _RECHECK_SECONDS)


_watcher = _Watcher()


class _WatchedHTTPPool(HTTPConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)
        _register(connection)
        return connection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)
        _register(connection)
        return connection


class WatchedPoolsAdapter(HTTPAdapter):
    """A requests adapter whose connections obey the thread's current ``limit``.

    Put it before another adapter class in a subclass's bases to give that adapter the same."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
