"""Self-check of the local test image server (harness/imageserver.py)."""

import io
import time

import pytest
import requests
from PIL import Image

from harness.imageserver import FIXTURES, ImageServer


@pytest.fixture(scope="module")
def srv():
    with ImageServer() as s:
        yield s


def test_serves_fixture_bytes_and_type(srv):
    r = requests.get(srv.url("photo1.jpg"), timeout=5)
    assert r.status_code == 200
    assert r.content == (FIXTURES / "photo1.jpg").read_bytes()
    assert r.headers["Content-Type"] == "image/jpeg"
    assert int(r.headers["Content-Length"]) == len(r.content)
    # real format, not the name
    r = requests.get(srv.url("not-an-image.jpg"), timeout=5)
    assert r.headers["Content-Type"].startswith("text/html")
    h = requests.head(srv.url("alpha.png"), timeout=5)
    assert h.status_code == 200 and h.content == b""
    assert h.headers["Content-Type"] == "image/png"
    assert int(h.headers["Content-Length"]) == (FIXTURES / "alpha.png").stat().st_size


def test_keep_alive_reuses_connection(srv):
    with requests.Session() as s:
        a = s.get(srv.url("gray.jpg"), timeout=5)
        b = s.get(srv.url("gray.jpg"), timeout=5)
    assert a.content == b.content and a.headers.get("Connection") != "close"


def test_error_routes(srv):
    assert requests.get(srv.url("missing/x.jpg"), timeout=5).status_code == 404
    assert requests.get(srv.url("no-such-file.jpg"), timeout=5).status_code == 404
    assert requests.get(srv.url("../imageserver.py"), timeout=5).status_code == 404
    assert requests.get(srv.url("gone/x.jpg"), timeout=5).status_code == 410
    r = requests.get(srv.url("status/429/x"), timeout=5)
    assert r.status_code == 429 and "429" in r.text


def test_flaky_counts(srv):
    path = "/flaky/2/photo2.jpg"
    codes = [requests.get(srv.url(path), timeout=5).status_code for _ in range(4)]
    assert codes == [503, 503, 200, 200]
    assert srv.hits[path] == 4


def test_slow_delays_at_least_delay(srv):
    t = time.monotonic()
    r = requests.get(srv.url("slow/photo1.jpg?delay=0.3"), timeout=5)
    assert r.status_code == 200 and time.monotonic() - t >= 0.3


def test_redirect_big_nolength(srv):
    r = requests.get(srv.url("redirect?to=/photo3.jpg"), timeout=5)
    assert r.status_code == 200 and r.history[0].status_code == 302
    assert r.content == (FIXTURES / "photo3.jpg").read_bytes()
    r = requests.get(srv.url("big?bytes=200000"), timeout=5)
    assert len(r.content) == 200000 and r.content.count(0) == 200000
    r = requests.get(srv.url("nolength/photo2.jpg"), timeout=5)
    assert "Content-Length" not in r.headers
    assert r.content == (FIXTURES / "photo2.jpg").read_bytes()


def test_stall_times_out_and_server_stops_quickly():
    s = ImageServer()
    s.start()
    with pytest.raises(requests.exceptions.ConnectionError):  # ReadTimeout mid-body
        _ = requests.get(s.url("stall/photo1.jpg"), timeout=(2, 0.3)).content
    t = time.monotonic()
    s.stop()
    assert time.monotonic() - t < 2


def test_gen_jpeg_decodes_and_is_deterministic(srv):
    r = requests.get(srv.url("gen/320x240.jpg?q=80&seed=7"), timeout=10)
    assert r.headers["Content-Type"] == "image/jpeg"
    im = Image.open(io.BytesIO(r.content))
    im.load()
    assert im.size == (320, 240) and im.mode == "RGB"
    again = requests.get(srv.url("gen/320x240.jpg?q=80&seed=7"), timeout=10).content
    other = requests.get(srv.url("gen/320x240.jpg?q=80&seed=8"), timeout=10).content
    assert again == r.content != other


def test_validated_routes_answer_conditional_gets_and_set_file_changes_the_bytes(srv):
    srv.reset()
    first = requests.get(srv.url("etag/gray.jpg"), timeout=5)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and first.content == (FIXTURES / "gray.jpg").read_bytes()
    again = requests.get(srv.url("etag/gray.jpg"), headers={"If-None-Match": etag}, timeout=5)
    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    dated = requests.get(srv.url("lastmod/gray.jpg"), timeout=5)
    since = {"If-Modified-Since": dated.headers["Last-Modified"]}
    assert "ETag" not in dated.headers
    assert requests.get(srv.url("lastmod/gray.jpg"), headers=since, timeout=5).status_code == 304
    srv.set_file("gray.jpg", b"\x89PNG\r\n\x1a\nother")
    try:
        changed = requests.get(srv.url("etag/gray.jpg"), headers={"If-None-Match": etag}, timeout=5)
        assert changed.status_code == 200 and changed.content.endswith(b"other") and changed.headers["ETag"] != etag
        assert requests.get(srv.url("lastmod/gray.jpg"), headers=since, timeout=5).status_code == 200
        assert requests.get(srv.url("gray.jpg"), timeout=5).content.endswith(b"other")
    finally:
        srv.forget_files()
    assert srv.conditional == {"/etag/gray.jpg": 2, "/lastmod/gray.jpg": 2}
    assert srv.not_modified == {"/etag/gray.jpg": 1, "/lastmod/gray.jpg": 1}
