"""fetch_image against a real local HTTP server; the address rule on literal addresses.

Everything is offline: the server listens on 127.0.0.1, and blocked addresses are
refused before any connection is attempted.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from requests_hardened.ip_filter import InvalidIPAddress, get_ip_address

from harness.livestack import wait_until
from pixshift.failures import DeliveryFailure, ImageFailure, Throttled, UrlRefused
from pixshift.net import fetch, outbound
from pixshift.net.fetch import FetchPolicy, fetch_image
from pixshift.net.outbound import check_public_url, is_blocked_address
from pixshift.webhooks.sending import post_json

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16
KB = 1024


# --- the test server --------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.peers: list[tuple[str, int]] = []  # (path, client port) per request
        self.sent: dict[str, int] = {}  # bytes the endless routes managed to send
        self.stop = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        route, args = parts[0], parts[1:]
        srv = self.server
        with srv.lock:
            srv.hits[url.path] += 1
            hit = srv.hits[url.path]
            srv.peers.append((url.path, self.client_address[1]))

        if route == "ok":
            self._send(200, PNG, "image/png")
        elif route == "html":  # image bytes under a lying Content-Type
            self._send(200, PNG, "text/html")
        elif route == "sized":
            self._send(200, b"x" * int(args[0]))
        elif route == "empty":
            self._send(200, b"")
        elif route == "status":
            self._send(int(args[0]), b"nope")
        elif route == "flaky":  # /flaky/<failures>/<token>: 500 that many times, then the image
            self._send(500, b"oops") if hit <= int(args[0]) else self._send(200, PNG, "image/png")
        elif route == "ratelimited":  # /ratelimited/<retry-after>/<failures>/<token>
            if hit <= int(args[1]):
                self._send(429, b"slow down", headers={"Retry-After": args[0]})
            else:
                self._send(200, PNG, "image/png")
        elif route == "unavailable":  # /unavailable/<retry-after>/<token>
            self._send(503, b"busy", headers={"Retry-After": args[0]})
        elif route == "chain":  # /chain/<n>: n redirects, then the image
            n = int(args[0])
            self._redirect(f"/chain/{n - 1}") if n > 0 else self._send(200, PNG, "image/png")
        elif route == "loop":
            self._redirect(url.path)
        elif route == "redirect":
            self._redirect(parse_qs(url.query)["to"][0])
        elif route == "stall":  # half the declared body, then silence
            self._head(200, {"Content-Length": "1000"})
            self._write(b"x" * 500)
            srv.stop.wait(30)
        elif route == "trickle":  # /trickle/<seconds>/<token>: a byte every 50 ms, then silence
            self._head(200, {"Content-Length": "100000"})
            until = time.monotonic() + float(args[0])
            while time.monotonic() < until:
                if srv.stop.wait(0.05) or not self._write(b"x"):
                    return
            srv.stop.wait(30)
        elif route == "slowstatus":  # /slowstatus/<token>: the status line a byte every 50 ms, for 5 s
            self.close_connection = True
            self._dribble(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        elif route == "slowheaders":  # /slowheaders/<token>: status line, then headers a byte every 50 ms
            self.close_connection = True
            self._write(b"HTTP/1.1 200 OK\r\n")
            self._dribble(b"X-Padding: " + b"a" * 200 + b"\r\nContent-Length: 5\r\n\r\nhello")
        elif route == "bigdeclared":  # huge Content-Length, then silence: only the header may be read
            self._head(200, {"Content-Length": str(100 * 1024 * 1024)})
            srv.stop.wait(30)
        elif route == "overflow":  # /overflow/<mode>/<n>: n bytes, then silence
            self._stream(args[0], total=int(args[1]), then_stall=True, token=url.path)
        elif route == "endless":  # /endless/<mode>/<token>: 200 MB unless the client hangs up
            self._stream(args[0], total=200 * 1024 * 1024, then_stall=False, token=url.path)
        else:
            self._send(404, b"no such route")

    def do_POST(self) -> None:  # a webhook receiver: the same routes, the body read first
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def _dribble(self, data: bytes) -> None:
        """`data` a byte every 50 ms, each read well within any read timeout; for at most 5 s."""
        for i in range(min(len(data), 100)):
            if self.server.stop.wait(0.05) or not self._write(data[i : i + 1]):
                return
        self.server.stop.wait(30)

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(
        self, status: int, body: bytes, ctype: str = "application/octet-stream", headers: dict[str, str] | None = None
    ) -> None:
        self._head(status, {"Content-Type": ctype, "Content-Length": str(len(body)), **(headers or {})})
        self._write(body)

    def _redirect(self, location: str) -> None:
        self._head(302, {"Location": location, "Content-Length": "0"})

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except OSError:
            self.close_connection = True
            return False

    def _stream(self, mode: str, *, total: int, then_stall: bool, token: str) -> None:
        chunked = mode == "chunked"
        self.close_connection = True
        self._head(200, {"Transfer-Encoding": "chunked"} if chunked else {"Connection": "close"})
        sent, block = 0, b"y" * (16 * KB)
        while sent < total:
            piece = block[: total - sent]
            if not self._write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece):
                break
            sent += len(piece)
        with self.server.lock:
            self.server.sent[token] = sent
        if then_stall:
            self.server.stop.wait(30)


@pytest.fixture(scope="module")
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.stop.set()  # wakes stalled handlers, so shutdown is prompt
    srv.shutdown()
    srv.server_close()


def token() -> str:
    return uuid.uuid4().hex[:12]


def strict(**overrides) -> FetchPolicy:
    """The address filter on, as in production; the limits of the default configuration."""
    base = {
        "allow_private": False,
        "max_bytes": 25 * 1024 * 1024,
        "connect_timeout": 5.0,
        "read_timeout": 15.0,
        "total_timeout": 60.0,
        "retries": 3,
        "backoff": 0.5,
    }
    return FetchPolicy(**{**base, **overrides})


def local(**overrides) -> FetchPolicy:
    """Filter off (the server is on 127.0.0.1), tiny backoff so retries cost milliseconds."""
    base = {
        "allow_private": True,
        "max_bytes": 25 * 1024 * 1024,
        "connect_timeout": 2.0,
        "read_timeout": 5.0,
        "total_timeout": 10.0,
        "retries": 3,
        "backoff": 0.01,
        "backoff_cap": 0.05,
    }
    return FetchPolicy(**{**base, **overrides})


def fails(url: str, policy: FetchPolicy) -> ImageFailure:
    with pytest.raises(ImageFailure) as info:
        fetch_image(url, policy)
    return info.value


# --- success, redirects, connection reuse ---------------------------------------------


def test_ok_returns_bytes_status_type_and_final_url(server):
    got = fetch_image(server.base + "/ok", local())
    assert (got.data, got.status, got.content_type, got.attempts) == (PNG, 200, "image/png", 1)
    assert got.url == server.base + "/ok" and got.elapsed < 2


def test_content_type_is_reported_not_trusted(server):
    assert fetch_image(server.base + "/html", local()).data == PNG


def test_redirect_chain_is_followed_to_final_url(server):
    got = fetch_image(server.base + "/chain/5", local(max_redirects=5))
    assert got.data == PNG and got.url == server.base + "/chain/0" and got.attempts == 1


def test_redirect_chain_longer_than_limit_fails(server):
    failure = fails(server.base + "/chain/6", local(max_redirects=5))
    assert failure.code == "too_many_redirects" and not failure.retryable


def test_redirect_loop_stops_after_max_redirects_and_is_not_retried(server):
    path = f"/loop/{token()}"
    failure = fails(server.base + path, local(max_redirects=2))
    assert failure.code == "too_many_redirects" and not failure.retryable
    assert server.hits[path] == 3  # the first request plus two redirects, one attempt


@pytest.mark.parametrize(
    "target",
    ["ftp://example.com/a.png", "file:///etc/passwd", "http://user:pw@127.0.0.1/ok", "gopher://127.0.0.1:6379/_INFO"],
)
def test_redirect_to_bad_scheme_or_credentials_is_invalid_url(server, target):
    failure = fails(server.base + "/redirect?to=" + target, local())
    assert failure.code == "invalid_url" and not failure.retryable


def test_session_is_reused_within_a_thread_and_keeps_the_connection(server):
    path = f"/sized/1000/{token()}"
    for _ in range(3):
        assert len(fetch_image(server.base + path, local()).data) > 0
    ports = {port for p, port in server.peers if p == path}
    assert len(ports) == 1  # all three over one keep-alive connection


def test_each_thread_gets_its_own_session_and_all_fetches_succeed(server):
    policy = local()
    sessions, results, errors = {}, [], []

    def work(i: int) -> None:
        try:
            sessions[i] = (outbound.session(policy.allow_private), outbound.session(policy.allow_private))
            results.extend(fetch_image(server.base + "/ok", policy).data for _ in range(5))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and results == [PNG] * 40
    assert all(a is b for a, b in sessions.values())
    assert len({id(a) for a, _ in sessions.values()}) == 8


# --- HTTP errors and retries -------------------------------------------------------------


@pytest.mark.parametrize("status, phrase", [(404, "Not Found"), (410, "Gone"), (403, "Forbidden")])
def test_client_errors_are_not_retried(server, status, phrase):
    path = f"/status/{status}/{token()}"
    failure = fails(server.base + path, local(retries=3))
    assert failure.code == f"http_{status}" and not failure.retryable
    assert failure.message == f"the image server answered {status} {phrase}"
    assert server.hits[path] == 1


def test_500_then_200_succeeds_on_second_attempt(server):
    path = f"/flaky/1/{token()}"
    got = fetch_image(server.base + path, local())
    assert got.data == PNG and got.attempts == 2 and server.hits[path] == 2


def test_persistent_500_gives_up_after_retries_as_retryable(server):
    path = f"/flaky/99/{token()}"
    failure = fails(server.base + path, local(retries=2))
    assert failure.code == "http_500" and failure.retryable
    assert failure.message == "the image server answered 500 Internal Server Error"
    assert server.hits[path] == 3


def test_a_stop_asked_before_each_retry_ends_the_download_with_the_last_failure(server):
    """A cancelled request's image makes no further attempt (the pipeline's stop asks the database)."""
    path = f"/flaky/99/{token()}"
    asked = []
    with pytest.raises(ImageFailure) as caught:
        fetch_image(server.base + path, local(retries=3), stop=lambda: asked.append(1) or True)
    assert caught.value.code == "http_500" and caught.value.retryable
    assert server.hits[path] == 1 and len(asked) == 1


@pytest.mark.parametrize(
    "route, status, expected",
    [("ratelimited/7/99", 429, 7.0), ("unavailable/0", 503, 0.0), ("status/429", 429, None), ("status/503", 503, None)],
)
def test_429_and_503_end_the_download_at_once_with_the_hosts_retry_after(server, route, status, expected):
    """No sleeping in the download: it would hold the host's slot, and the whole host should wait."""
    route = f"/{route}/{token()}"
    started = time.monotonic()
    failure = fails(server.base + route, local(retries=3, backoff=5.0))
    assert isinstance(failure, Throttled) and failure.retryable
    assert failure.code == f"http_{status}" and failure.retry_after == expected
    assert server.hits[route] == 1 and time.monotonic() - started < 1.5


def test_retry_after_is_read_as_seconds_or_an_http_date():
    now = datetime(2026, 12, 2, 16, 0, 0, tzinfo=UTC)
    assert fetch.retry_after_seconds(" 120 ", now) == 120.0
    assert fetch.retry_after_seconds("Wed, 02 Dec 2026 16:00:30 GMT", now) == 30.0
    assert fetch.retry_after_seconds("Wed, 02 Dec 2026 15:00:00 GMT", now) == 0.0  # already past
    assert fetch.retry_after_seconds("", now) is None
    assert fetch.retry_after_seconds("soon", now) is None
    assert fetch.retry_after_seconds("-5", now) is None


def test_connection_refused_is_retried_then_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    failure = fails(f"http://127.0.0.1:{port}/ok", local(retries=2))
    assert failure.code == "connection_failed" and failure.retryable
    assert failure.message == "could not connect to 127.0.0.1: Connection refused"


def test_backoff_doubles_with_jitter_and_respects_cap():
    policy = strict(backoff=0.5, backoff_cap=3.0)
    for attempt, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = {fetch._backoff_delay(attempt, policy, None) for _ in range(50)}
        assert all(full / 2 <= d <= full for d in delays) and len(delays) > 1
    assert fetch._backoff_delay(1, policy, 0.0) == 0.0
    assert fetch._backoff_delay(1, policy, 120.0) == 3.0


# --- size and time limits ----------------------------------------------------------------


def test_body_of_exactly_max_bytes_is_accepted(server):
    assert len(fetch_image(server.base + f"/sized/{64 * KB}", local(max_bytes=64 * KB)).data) == 64 * KB


def test_declared_content_length_over_cap_is_rejected_before_reading(server):
    started = time.monotonic()
    failure = fails(server.base + f"/bigdeclared/{token()}", local(max_bytes=20 * 1024 * 1024))
    assert failure.code == "too_large" and not failure.retryable
    assert failure.message == "image is larger than 20 MB"
    assert time.monotonic() - started < 1  # reading the (silent) body would wait for read_timeout


def test_body_of_max_bytes_plus_one_with_content_length_is_too_large(server):
    failure = fails(server.base + f"/sized/{64 * KB + 1}", local(max_bytes=64 * KB))
    assert failure.code == "too_large" and failure.message == "image is larger than 64 KB"


@pytest.mark.parametrize("mode", ["close", "chunked"])
def test_stream_aborts_as_soon_as_the_cap_is_passed(server, mode):
    # The server sends one byte over the cap and then goes silent: only a reader that
    # checks as data arrives says too_large; one waiting for a full chunk times out.
    started = time.monotonic()
    failure = fails(server.base + f"/overflow/{mode}/{100 * KB + 1}", local(max_bytes=100 * KB))
    assert failure.code == "too_large" and not failure.retryable
    assert time.monotonic() - started < 2


def test_endless_stream_is_cut_off_near_the_cap(server):
    path = f"/endless/close/{token()}"
    failure = fails(server.base + path, local(max_bytes=256 * KB))
    assert failure.code == "too_large"
    wait_until(lambda: path in server.sent, 5, interval=0.02, message="the server to notice the hang-up")
    # The server stopped when we hung up; only socket buffers lie between it and the cap.
    assert server.sent[path] < 40 * 1024 * 1024


def test_empty_body_is_empty_response(server):
    failure = fails(server.base + "/empty", local())
    assert failure.code == "empty_response" and not failure.retryable


def test_stalled_body_times_out_per_read_and_is_retried(server):
    path = f"/stall/{token()}"
    started = time.monotonic()
    failure = fails(server.base + path, local(read_timeout=0.3, retries=1))
    assert failure.code == "timeout" and failure.retryable
    assert server.hits[path] == 2
    assert time.monotonic() - started < 2.5


def test_total_timeout_ends_a_silent_read_longer_than_it(server):
    started = time.monotonic()
    failure = fails(server.base + f"/stall/{token()}", local(read_timeout=5, total_timeout=0.5))
    assert failure.code == "timeout" and failure.retryable
    assert 0.45 <= time.monotonic() - started < 1.5


def test_total_timeout_ends_a_trickle_that_never_trips_read_timeout(server):
    path = f"/trickle/100/{token()}"
    started = time.monotonic()
    failure = fails(server.base + path, local(read_timeout=5, total_timeout=0.6))
    assert failure.code == "timeout" and failure.retryable
    assert failure.message == "downloading the image took longer than 0.6 s"
    assert 0.55 <= time.monotonic() - started < 1.6
    assert server.hits[path] == 1  # no time left for another attempt


def test_total_timeout_cuts_a_read_that_started_late(server):
    # Reads may block for the time that was left when the request started (1.5 s);
    # after trickling for 1.2 s that would overrun the deadline unless something ends it.
    started = time.monotonic()
    failure = fails(server.base + f"/trickle/1.2/{token()}", local(read_timeout=5, total_timeout=1.5))
    assert failure.code == "timeout"
    assert 1.45 <= time.monotonic() - started < 2.2


@pytest.mark.parametrize("route", ["slowstatus", "slowheaders"])
def test_total_timeout_ends_a_trickling_status_line_or_headers(server, route):
    # Each byte arrives well within the read timeout; only the deadline over the whole call ends it.
    path = f"/{route}/{token()}"
    started = time.monotonic()
    failure = fails(server.base + path, local(read_timeout=5, total_timeout=0.6))
    assert failure.code == "timeout" and failure.retryable
    assert failure.message == "downloading the image took longer than 0.6 s"
    assert 0.55 <= time.monotonic() - started < 1.6
    assert server.hits[path] == 1


@pytest.mark.parametrize("route", ["slowstatus", "slowheaders"])
def test_webhook_post_is_cut_at_its_timeout_however_the_receiver_trickles(server, route):
    started = time.monotonic()
    with pytest.raises(DeliveryFailure) as info:
        post_json(server.base + f"/{route}/{token()}", b"{}", {}, local(read_timeout=5), timeout=0.6)
    assert info.value.code == "timeout" and info.value.retryable
    assert 0.55 <= time.monotonic() - started < 1.6


def test_an_expired_deadline_leaves_the_next_call_on_the_same_thread_unharmed(server):
    fails(server.base + f"/slowheaders/{token()}", local(read_timeout=5, total_timeout=0.3))
    assert fetch_image(server.base + "/ok", local()).data == PNG
    assert post_json(server.base + "/ok", b"{}", {}, local(), timeout=2) == 200


# --- URL validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "//example.com/a.png",
        "http://user:pw@example.com/a.png",
        "http://@example.com/a.png",
        "http:///a.png",
        "http://exa mple.com/a.png",
        "http://evil.example\\@127.0.0.1/",
        "http://example.com:99999/",
        "http://example.com/a\r\nX-Injected: 1",
        "not a url",
    ],
)
def test_invalid_urls_are_rejected_by_fetch_and_check(url):
    with pytest.raises(ImageFailure) as info:
        fetch_image(url, strict())
    assert info.value.code == "invalid_url" and not info.value.retryable
    with pytest.raises(UrlRefused) as refused:
        check_public_url(url, allow_private=False)
    assert refused.value.code == "invalid_url" and not refused.value.retryable


# --- the address rule ---------------------------------------------------------------------

LISTED = [
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",
    "::1",
    "::ffff:127.0.0.1",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "240.0.0.1",
]
ADDED = ["::127.0.0.1", "::ffff:0:127.0.0.1", "fec0::1"]  # requests-hardened lets these through
MORE = [
    "172.16.0.1",
    "192.168.1.1",
    "fe80::1",
    "fc00::1",
    "::",
    "255.255.255.255",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1",
    "192.0.0.9",
    "198.18.0.1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


def _literal_url(ip: str, port: int = 80, path: str = "/") -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}{path}"


@pytest.mark.parametrize("ip", LISTED + ADDED + MORE)
def test_rule_blocks(ip):
    assert is_blocked_address(ipaddress.ip_address(ip))


@pytest.mark.parametrize("ip", PUBLIC)
def test_rule_allows_public(ip):
    assert not is_blocked_address(ipaddress.ip_address(ip))


@pytest.mark.parametrize("ip", LISTED + MORE)
def test_requests_hardened_itself_blocks_the_listed_ranges(ip, caplog):
    caplog.set_level(logging.CRITICAL)
    with pytest.raises(InvalidIPAddress):
        get_ip_address(ip, 80, allow_loopback=False)


@pytest.mark.parametrize("ip", ADDED)
def test_requests_hardened_alone_misses_what_we_add(ip):
    get_ip_address(ip, 80, allow_loopback=False)  # documents why is_blocked_address exists


@pytest.mark.parametrize("ip", LISTED + ADDED + ["172.16.0.1", "fe80::1", "::"])
def test_fetch_refuses_blocked_literal_before_connecting(ip):
    # A broken filter would try to connect and end in timeout/connection_failed instead.
    policy = strict(connect_timeout=0.5, read_timeout=0.5, total_timeout=2, retries=2, backoff=0.01)
    failure = fails(_literal_url(ip), policy)
    assert failure.code == "blocked_address" and not failure.retryable


def test_fetch_refuses_loopback_server_and_never_reaches_it(server):
    path = f"/status/200/{token()}"
    failure = fails(server.base + path, strict(retries=3, backoff=0.01))
    assert failure.code == "blocked_address" and not failure.retryable
    assert failure.message == (
        "the address 127.0.0.1 is private, loopback or reserved; PixShift does not fetch from internal networks"
    )
    assert server.hits[path] == 0


def test_blocked_message_names_the_host_name():
    failure = fails("http://localhost:9/x.png", strict(retries=0))
    assert failure.code == "blocked_address"
    assert failure.message.startswith("the address ") and " of localhost is private" in failure.message


@pytest.fixture
def loopback_only(monkeypatch):
    """Filter on, but 127.0.0.1 allowed, so the test server can send redirects to the filter."""
    session = outbound.new_session(False, allow_loopback=True)
    monkeypatch.setattr(outbound, "session", lambda allow_private: session)
    return strict(connect_timeout=0.5, read_timeout=2, total_timeout=5, retries=2, backoff=0.01)


def test_filtered_session_still_fetches_an_allowed_address(server, loopback_only):
    assert fetch_image(server.base + "/ok", loopback_only).data == PNG


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://100.64.0.1/", "http://[::127.0.0.1]/"],
)
def test_redirect_hop_to_internal_address_is_refused(server, loopback_only, target):
    path = f"/redirect/{token()}"
    failure = fails(f"{server.base}{path}?to={target}", loopback_only)
    assert failure.code == "blocked_address" and not failure.retryable
    assert server.hits[path] == 1  # not retried


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://localhost/",
        "https://169.254.169.254/",
        "http://[::127.0.0.1]/",
        "http://0/",
    ],
)
def test_check_public_url_refuses_internal_addresses(url):
    with pytest.raises(UrlRefused) as info:
        check_public_url(url, allow_private=False)
    assert info.value.code == "blocked_address"


@pytest.mark.parametrize("url", ["http://8.8.8.8/a.png", "https://[2606:4700:4700::1111]/a.png"])
def test_check_public_url_accepts_public_addresses(url):
    check_public_url(url, allow_private=False)


def test_check_public_url_with_allow_private_skips_the_address_rule():
    check_public_url("http://127.0.0.1/", allow_private=True)


def test_policy_rejects_nonsense_limits():
    with pytest.raises(ValueError):
        strict(max_bytes=0)
    with pytest.raises(ValueError):
        strict(retries=-1)


# --- conditional GET (revalidation across requests, pixshift.pipeline.reuse) ---------------------


@pytest.fixture(scope="module")
def validating():
    from harness.imageserver import ImageServer

    with ImageServer() as srv:
        yield srv


@pytest.mark.parametrize("route", ["etag", "lastmod"])
def test_a_conditional_get_of_an_unchanged_image_is_a_304_without_a_body(validating, route):
    path = f"/{route}/photo1.jpg"
    first = fetch_image(validating.url(path), local())
    assert first.status == 200 and not first.not_modified and first.validators
    again = fetch_image(validating.url(path), local(), first.validators)
    assert (again.status, again.not_modified, again.data) == (304, True, b"")
    assert again.validators == first.validators  # this server repeats them on the 304
    assert validating.not_modified[path] >= 1


def test_a_conditional_get_of_a_changed_image_returns_the_new_bytes_and_validators(validating):
    first = fetch_image(validating.url("/etag/photo2.jpg"), local())
    validating.set_file("photo2.jpg", PNG)
    try:
        again = fetch_image(validating.url("/etag/photo2.jpg"), local(), first.validators)
    finally:
        validating.forget_files()
    assert (again.status, again.not_modified, again.data) == (200, False, PNG)
    assert again.validators.etag != first.validators.etag


def test_validators_are_sent_on_every_redirect_hop_and_the_304_ends_the_chain(validating):
    url = validating.url("/redirect?to=/etag/photo3.jpg")
    first = fetch_image(url, local())
    again = fetch_image(url, local(), first.validators)
    assert again.not_modified and again.url.endswith("/etag/photo3.jpg")


def test_a_304_to_a_plain_get_is_an_error_not_an_empty_image(validating):
    with pytest.raises(ImageFailure) as caught:
        fetch_image(validating.url("/status/304/x.jpg"), local())
    assert caught.value.code == "http_304" and not caught.value.retryable


def test_validators_that_could_not_be_sent_back_are_dropped():
    assert fetch._validator(' "abc" ') == '"abc"'
    assert fetch._validator("x" * 513) is None
    assert fetch._validator("a\tb") is None
    assert fetch._validator(None) is None
    assert not fetch.Validators() and fetch.Validators(None, None).headers() == {}
