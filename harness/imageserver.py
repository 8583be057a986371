"""A local HTTP image server for tests (stdlib only, plus Pillow for /gen).

Usage::

    from harness.imageserver import ImageServer

    with ImageServer() as srv:
        requests.get(srv.url("photo1.jpg"))
        srv.hits["/photo1.jpg"]                 # -> 1

The server binds 127.0.0.1 on an ephemeral port and runs in a background
daemon thread; every connection is handled in its own daemon thread.
``stop()`` returns promptly even while handlers are sleeping or stalled.

Routes (``<file>`` is a path relative to ``root``, default ``tests/fixtures``):

  /<file>                     the file; Content-Type sniffed from its bytes
                              (``?type=...`` overrides it); HEAD supported
  /missing/...                404
  /gone/...                   410
  /slow/<file>?delay=0.2      wait ``delay`` s, then serve the file (``waiting`` and
                              ``max_waiting`` count the requests waiting at once)
  /stall/<file>?delay=30      headers (full Content-Length) + half the body,
                              then wait ``delay`` s (or until stop), then the rest
  /flaky/<n>/<file>           503 for the first n requests to that exact path,
                              then the file (``?retry_after=S`` adds Retry-After,
                              ``?status=500`` answers that instead of 503)
  /throttle/<n>/.../<file>    429 for the first n requests to that exact path, then
                              the file named by the last segment (segments between
                              make paths of their own); ``?retry_after=S`` adds
                              Retry-After; each 429's time is in ``throttled_at``
  /status/<code>/<anything>   that status with a short text body
  /redirect?to=<url>          302 to ``to`` (``&code=301|303|307|308``)
  /big?bytes=N                N zero bytes, with Content-Length, 64 KiB chunks
  /nolength/<file>            the file without Content-Length; Connection: close
  /etag/<file>                the file with an ETag (a hash of its bytes); 304 when the request's
                              If-None-Match names it
  /lastmod/<file>             the file with a Last-Modified; 304 when If-Modified-Since is not older
  /gen/<w>x<h>.jpg?q=90&seed=1
                              a deterministic photo-like image (also .png/.webp);
                              bytes are cached in memory per (w, h, fmt, q, seed)

``hits`` counts requests per URL path (query string excluded, any method); ``arrivals``
lists (time.monotonic(), path) per request.
``hits`` counts requests per URL path (query string excluded, any method); ``conditional``
counts those that carried If-None-Match or If-Modified-Since, ``not_modified`` the 304s sent.
``set_file(rel, data)`` changes the bytes every route serves for ``<file>`` = ``rel`` (and its
Last-Modified to now), without touching the folder; ``forget_files()`` undoes it.
"""

from __future__ import annotations

import collections
import email.utils
import hashlib
import http.server
import io
import pathlib
import random
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"

CHUNK = 64 * 1024
MAX_GEN_PIXELS = 40_000_000


def sniff_content_type(data: bytes) -> str:
    """Content-Type from the real format (magic bytes), not the file name."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[:2] == b"BM":
        return "image/bmp"
    if head[4:12] in (b"ftypavif", b"ftypavis"):
        return "image/avif"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "image/heic"
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html")):
        return "text/html; charset=utf-8"
    return "application/octet-stream"


def generate_photo(width: int, height: int, seed: int = 1, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """Photo-like image: gradient + vignette + soft shapes + blur + texture + grain.

    Deterministic for a given (size, seed, fmt, quality) and Pillow version.
    Compresses roughly like a real photo (smooth areas, edges, fine grain).
    """
    from PIL import Image, ImageChops, ImageDraw, ImageFilter

    rng = random.Random(seed)

    # Background: a two-colour linear gradient, vignetted.
    top = [rng.randrange(256) for _ in range(3)]
    bottom = [rng.randrange(256) for _ in range(3)]
    grad = Image.linear_gradient("L")
    if rng.random() < 0.3:
        grad = grad.transpose(Image.Transpose.ROTATE_90)
    bands = [grad.point(lambda v, a=a, b=b: a + (b - a) * v // 255) for a, b in zip(top, bottom)]
    bg = Image.merge("RGB", bands).resize((width, height), Image.Resampling.BICUBIC)
    vignette = Image.radial_gradient("L").point(lambda v: 255 - v * 3 // 5)
    bg = ImageChops.multiply(bg, Image.merge("RGB", [vignette.resize((width, height))] * 3))

    # Shapes: semi-transparent ellipses, polygons and rectangles.
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    scale = max(width, height)
    for _ in range(rng.randint(12, 24)):
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256), rng.randint(90, 230))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.03, 0.25) * scale
        kind = rng.random()
        if kind < 0.45:
            draw.ellipse((cx - r, cy - r * rng.uniform(0.4, 1.0), cx + r, cy + r), fill=colour)
        elif kind < 0.8:
            pts = [(cx + rng.uniform(-r, r), cy + rng.uniform(-r, r)) for _ in range(rng.randint(3, 6))]
            draw.polygon(pts, fill=colour)
        else:
            draw.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=colour)
    img = Image.alpha_composite(bg.convert("RGBA"), overlay).convert("RGB")
    img = img.filter(ImageFilter.GaussianBlur(max(0.6, scale / 1500)))

    # Texture: mid-frequency blotches (like foliage / fabric), +-16 levels.
    tw, th = max(2, width // 6), max(2, height // 6)
    tex = Image.frombytes("L", (tw, th), rng.randbytes(tw * th))
    tex = tex.resize((width, height), Image.Resampling.BICUBIC).point(lambda v: v // 8)
    img = ImageChops.add(img, Image.merge("RGB", [tex] * 3), scale=1.0, offset=-16)

    # Grain: +-8 levels of luminance noise, slightly softened.
    noise = Image.frombytes("L", (width, height), rng.randbytes(width * height))
    noise = noise.filter(ImageFilter.GaussianBlur(0.5)).point(lambda v: v // 16)
    img = ImageChops.add(img, Image.merge("RGB", [noise] * 3), scale=1.0, offset=-8)

    out = io.BytesIO()
    if fmt == "JPEG":
        img.save(out, "JPEG", quality=quality)
    elif fmt == "WEBP":
        img.save(out, "WEBP", quality=quality)
    else:
        img.save(out, "PNG")
    return out.getvalue()


def _http_date(value: str | None) -> int | None:
    try:
        return int(email.utils.parsedate_to_datetime(value).timestamp()) if value else None
    except (TypeError, ValueError):
        return None


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # server_close() must not join stalled handlers
    allow_reuse_address = True

    def __init__(self, owner: ImageServer):
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request, client_address):  # keep test output quiet
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PixShiftTestServer/1.0"
    timeout = 30  # idle keep-alive connections give up eventually
    server: _Server

    def log_message(self, format, *args):
        pass

    # -- plumbing ---------------------------------------------------------

    def setup(self):
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, False)

    def do_GET(self):
        self._dispatch(head=False)

    def do_HEAD(self):
        self._dispatch(head=True)

    def _dispatch(self, head: bool):
        owner = self.server.owner
        self.head = head
        parts = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parts.path)
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
        self._path = path
        owner._hit(path)
        owner._in_flight_change(+1)
        try:
            self._route(path)
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except OSError:
            self.close_connection = True
        finally:
            owner._in_flight_change(-1)

    def _route(self, path: str):
        owner = self.server.owner
        segs = path.lstrip("/").split("/")
        first = segs[0]
        rest = "/".join(segs[1:])
        if first == "missing":
            return self._text(404, "not found")
        if first == "gone":
            return self._text(410, "gone")
        if first == "status" and len(segs) >= 2 and segs[1].isdigit():
            code = int(segs[1])
            return self._text(code, f"status {code}")
        if first == "redirect" and len(segs) == 1:
            to = self.query.get("to")
            if not to:
                return self._text(400, "missing ?to=")
            code = int(self.query.get("code", 302))
            return self._send(code, b"redirecting\n", "text/plain; charset=utf-8", {"Location": to})
        if first == "big" and len(segs) == 1:
            return self._big(int(self.query.get("bytes", 1024 * 1024)))
        if first == "gen" and len(segs) == 2:
            return self._gen(segs[1])
        if first == "slow":
            owner._waiting_change(+1)
            try:
                stopped = owner._stop.wait(float(self.query.get("delay", 0.2)))
            finally:
                owner._waiting_change(-1)
            if stopped:
                self.close_connection = True
                return None
            return self._file(rest)
        if first == "stall":
            return self._stall(rest, float(self.query.get("delay", 30)))
        if first == "nolength":
            return self._file(rest, length=False)
        if first in ("etag", "lastmod"):
            return self._validated(rest, etag=first == "etag")
        if first in ("flaky", "throttle") and len(segs) >= 3 and segs[1].isdigit():
            if owner._flaky_take(path, int(segs[1])):
                extra = {}
                if "retry_after" in self.query:
                    extra["Retry-After"] = self.query["retry_after"]
                if first == "throttle":
                    owner._throttled()
                    return self._text(429, "too many requests", extra)
                return self._text(int(self.query.get("status", 503)), "temporarily unavailable", extra)
            return self._file(segs[-1] if first == "throttle" else "/".join(segs[2:]))
        return self._file(path)

    # -- responses --------------------------------------------------------

    def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None, length: bool = True):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        no_body = code in (204, 304) or 100 <= code < 200
        if length and not no_body:
            self.send_header("Content-Length", str(len(body)))
        if not length:
            self.send_header("Connection", "close")
            self.close_connection = True
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not self.head and not no_body:
            self.wfile.write(body)
        self.wfile.flush()

    def _text(self, code: int, text: str, headers: dict[str, str] | None = None):
        self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8", headers)

    def _read(self, rel: str) -> bytes | None:
        override = self.server.owner._files.get(rel.lstrip("/"))
        if override is not None:
            return override[0]
        root = self.server.owner.root
        target = (root / rel.lstrip("/")).resolve()
        if target != root and root not in target.parents:
            return None
        if not target.is_file():
            return None
        return target.read_bytes()

    def _file(self, rel: str, length: bool = True):
        data = self._read(rel)
        if data is None:
            return self._text(404, "not found")
        ctype = self.query.get("type") or sniff_content_type(data)
        self._send(200, data, ctype, length=length)

    def _validated(self, rel: str, etag: bool):
        """The file with one validator, answering a matching conditional GET with 304 (RFC 9110 13.1)."""
        owner = self.server.owner
        data = self._read(rel)
        if data is None:
            return self._text(404, "not found")
        if_none_match = self.headers.get("If-None-Match")
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_none_match or if_modified_since:
            owner._count(owner.conditional, self._path)
        if etag:
            value = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
            headers = {"ETag": value}
            fresh = if_none_match is not None and value in [t.strip() for t in if_none_match.split(",")]
        else:
            modified = owner._modified(rel)
            headers = {"Last-Modified": email.utils.formatdate(modified, usegmt=True)}
            since = _http_date(if_modified_since)
            fresh = since is not None and int(modified) <= since
        if fresh:
            owner._count(owner.not_modified, self._path)
            return self._send(304, b"", self.query.get("type") or sniff_content_type(data), headers)
        self._send(200, data, self.query.get("type") or sniff_content_type(data), headers)

    def _stall(self, rel: str, delay: float):
        data = self._read(rel)
        if data is None:
            return self._text(404, "not found")
        self.send_response(200)
        self.send_header("Content-Type", self.query.get("type") or sniff_content_type(data))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.head:
            return self.wfile.flush()
        half = len(data) // 2
        self.wfile.write(data[:half])
        self.wfile.flush()
        if self.server.owner._stop.wait(delay):
            self.close_connection = True
            return None
        self.wfile.write(data[half:])
        self.wfile.flush()

    def _big(self, n: int):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if not self.head:
            zeros = bytes(CHUNK)
            stop = self.server.owner._stop
            left = n
            while left > 0 and not stop.is_set():
                k = min(left, CHUNK)
                self.wfile.write(zeros if k == CHUNK else zeros[:k])
                left -= k
            if left:
                self.close_connection = True
        self.wfile.flush()

    def _gen(self, name: str):
        m = re.fullmatch(r"(\d+)x(\d+)\.(jpe?g|png|webp)", name, re.IGNORECASE)
        if not m:
            return self._text(404, "expected /gen/<w>x<h>.jpg")
        w, h = int(m.group(1)), int(m.group(2))
        ext = m.group(3).lower()
        if not (1 <= w <= 20000 and 1 <= h <= 20000 and w * h <= MAX_GEN_PIXELS):
            return self._text(400, "size out of range")
        try:
            q = int(self.query.get("q", 90))
            seed = int(self.query.get("seed", 1))
        except ValueError:
            return self._text(400, "bad q or seed")
        fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
        data = self.server.owner.generated(w, h, seed=seed, fmt=fmt, quality=q)
        self._send(200, data, sniff_content_type(data))


class ImageServer:
    """Threaded HTTP server on 127.0.0.1:<ephemeral> serving test images."""

    def __init__(self, root: pathlib.Path = FIXTURES):
        self.root = pathlib.Path(root).resolve()
        self.hits: collections.Counter[str] = collections.Counter()
        self.conditional: collections.Counter[str] = collections.Counter()  # requests with validators
        self.not_modified: collections.Counter[str] = collections.Counter()  # 304s sent
        self._files: dict[str, tuple[bytes, float]] = {}  # set_file: bytes and Last-Modified per path
        self._started = time.time()
        self.in_flight = 0  # requests being answered right now
        self.max_in_flight = 0  # the most answered at once since start or reset()
        # /slow requests inside their wait, and the most at once since start or reset(): unlike
        # in_flight, never counts a finished download whose last bytes the handler is still flushing.
        self.waiting = 0
        self.max_waiting = 0
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), path) of every request
        self.throttled_at: list[float] = []  # time.monotonic() of every 429 /throttle/ sent
        self._lock = threading.Lock()
        self._flaky: collections.Counter[str] = collections.Counter()
        self._gen_cache: dict[tuple, bytes] = {}
        self._gen_lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            return
        self._stop.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="ImageServer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stop.set()  # wakes sleeping /slow and /stall handlers
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # unblock handlers waiting on idle keep-alive sockets
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ImageServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- addresses --------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("ImageServer is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def urls(self, paths: Iterable[str]) -> list[str]:
        return [self.url(p) for p in paths]

    # -- state ------------------------------------------------------------

    def set_file(self, rel: str, data: bytes) -> None:
        """Serve ``data`` for the file ``rel`` from now on, modified now (a changed image behind a URL)."""
        with self._lock:
            previous = self._files.get(rel.lstrip("/"), (b"", self._started))[1]
            self._files[rel.lstrip("/")] = (data, max(time.time(), previous + 1))

    def forget_files(self) -> None:
        with self._lock:
            self._files.clear()

    def _modified(self, rel: str) -> float:
        """Last-Modified of a file: when set_file last changed it, else when the server started."""
        with self._lock:
            return self._files.get(rel.lstrip("/"), (b"", self._started))[1]

    def _count(self, counter: collections.Counter[str], path: str) -> None:
        with self._lock:
            counter[path] += 1

    def reset(self) -> None:
        """Forget hit, conditional, 304 and flaky counters (the /gen cache and set_file are kept)."""
        with self._lock:
            self.hits.clear()
            self.conditional.clear()
            self.not_modified.clear()
            self._flaky.clear()
            self.max_in_flight = self.in_flight
            self.max_waiting = self.waiting
            self.arrivals.clear()
            self.throttled_at.clear()

    def generated(self, width: int, height: int, seed: int = 1, fmt: str = "JPEG", quality: int = 90) -> bytes:
        """The bytes /gen serves for these parameters (cached)."""
        key = (width, height, seed, fmt, quality)
        with self._gen_lock:
            data = self._gen_cache.get(key)
            if data is None:
                data = generate_photo(width, height, seed=seed, fmt=fmt, quality=quality)
                self._gen_cache[key] = data
        return data

    def _hit(self, path: str) -> None:
        with self._lock:
            self.hits[path] += 1
            self.arrivals.append((time.monotonic(), path))

    def _throttled(self) -> None:
        with self._lock:
            self.throttled_at.append(time.monotonic())

    def _waiting_change(self, delta: int) -> None:
        with self._lock:
            self.waiting += delta
            self.max_waiting = max(self.max_waiting, self.waiting)

    def _in_flight_change(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _flaky_take(self, path: str, n: int) -> bool:
        """True while this path has been requested at most n times."""
        with self._lock:
            self._flaky[path] += 1
            return self._flaky[path] <= n

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)


if __name__ == "__main__":  # manual poking: python -m harness.imageserver
    with ImageServer() as s:
        print("serving", s.root, "at", s.base_url, "(Ctrl-C to stop)")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
