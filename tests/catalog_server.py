"""A loopback image host for the catalog tests: it counts downloads per path and connections at
once, serves some paths broken (404) until told otherwise, and holds others until released."""

from __future__ import annotations

import collections
import http.server
import io
import threading
import time
import zlib

from harness.photos import photo


class CatalogHost:
    """``/img/<name>.jpg`` is a small JPEG photo (its seed from the name); names in ``broken`` answer
    404; names starting with ``held`` wait for ``release()`` (or ``stop()``) before answering, and
    those starting with ``slow`` wait ``slow_seconds``. Every URL works under 127.0.0.1 and under
    localhost: two hosts, as far as per-host limits go."""

    def __init__(self, size: tuple[int, int] = (480, 320), slow_seconds: float = 0.02) -> None:
        self.size = size
        self.slow_seconds = slow_seconds
        self.broken: set[str] = set()
        self.hits: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.peak = 0
        self.held_waiting = 0
        self._released = threading.Event()
        self._lock = threading.Condition()
        self._cache: dict[str, bytes] = {}
        self._server: http.server.ThreadingHTTPServer | None = None

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        assert self._server is not None
        return f"http://{host}:{self._server.server_address[1]}/img/{name}.jpg"

    def release(self) -> None:
        self._released.set()

    def wait_held(self, count: int, timeout: float = 30) -> None:
        """Until ``count`` held downloads are waiting at once."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.held_waiting >= count, timeout):
                raise AssertionError(f"expected {count} held downloads, {self.held_waiting} waiting")

    def _photo(self, name: str) -> bytes:
        with self._lock:
            if name not in self._cache:
                buffer = io.BytesIO()
                photo(self.size, seed=zlib.crc32(name.encode())).save(buffer, "JPEG", quality=90)
                self._cache[name] = buffer.getvalue()
            return self._cache[name]

    def start(self) -> CatalogHost:
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.removeprefix("/img/").removesuffix(".jpg")
                name = name.rsplit("/", 1)[-1]
                with host._lock:
                    host.hits[name] += 1
                    host.in_flight += 1
                    host.peak = max(host.peak, host.in_flight)
                try:
                    if name.startswith("held"):
                        with host._lock:
                            host.held_waiting += 1
                            host._lock.notify_all()
                        host._released.wait(60)
                        with host._lock:
                            host.held_waiting -= 1
                    if name.startswith("slow"):
                        time.sleep(host.slow_seconds)
                    if name in host.broken:
                        self.send_response(404)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body = host._photo(name)
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    try:
                        self.wfile.write(body)
                    except OSError:  # the client gave up on it (a deadline): its business
                        pass
                finally:
                    with host._lock:
                        host.in_flight -= 1

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> CatalogHost:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
