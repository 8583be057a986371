"""Safe by default: no fetching from internal networks, tokens that scope requests, hardened responses."""

from __future__ import annotations

import dataclasses
import io
import re
from urllib.parse import SplitResult, urljoin, urlsplit

import pytest

from pixshift.db.extensions import db
from pixshift.db.models import Image
from pixshift.net.host_slots import HostSlots
from pixshift.pipeline import processing as pipeline
from pixshift.uploads.csv_input import ProductRow
from pixshift.uploads.intake import create_request

CSV = b"Serial Number,Product Name,Input Image URLs\n1,Shoe,http://127.0.0.1:9/a.jpg\n"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.1", "[::1]", "[::ffff:127.0.0.1]"])
def test_an_image_on_an_internal_address_is_refused_without_a_request(app, image_server, host):
    rt = app.extensions["pixshift"]
    strict = dataclasses.replace(
        rt, fetch_policy=dataclasses.replace(rt.fetch_policy, allow_private=False), host_slots=HostSlots(8)
    )  # not the session worker's, which may be busy on this host
    image_server.reset()
    url = f"http://{host}:{image_server.port}/photo1.jpg"
    with app.app_context():
        request_id = create_request([ProductRow(2, 1, "P", (url,))], filename=None, webhook_url=None)
        image_id = db.session.scalar(db.select(Image.id).where(Image.request_id == request_id))
        assert pipeline.process_image(image_id, strict).state == "failed"
        image = db.session.get(Image, image_id)
        assert image.error_code == "blocked_address", image.error_message
    assert image_server.hits["/photo1.jpg"] == 0


def test_private_urls_are_refused_by_default():
    from pixshift.config import Config

    assert Config().ALLOW_PRIVATE_URLS is True  # the tests turn the switch on...
    import os

    saved = os.environ.pop("PIXSHIFT_ALLOW_PRIVATE_URLS")
    try:
        assert Config().ALLOW_PRIVATE_URLS is False  # ...and without it, it is off
    finally:
        os.environ["PIXSHIFT_ALLOW_PRIVATE_URLS"] = saved


@pytest.fixture(scope="module")
def token_app(app):
    from pixshift import create_app

    return create_app({"TESTING": True, "API_TOKENS": ("token-a", "token-b")})


@pytest.fixture(scope="module")
def token_client(token_app):
    return token_app.test_client()


def _upload(client, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/upload", data={"file": (io.BytesIO(CSV), "p.csv")}, headers=headers)


HTML = {"Accept": "text/html"}


def _login_form(client, query_string: str = "") -> str:
    """GET the login page (it must render) and return its CSRF token."""
    page = client.get("/login", query_string=query_string, headers=HTML)
    assert page.status_code == 200 and 'name="token"' in page.get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.get_data(as_text=True)).group(1)


def _where_a_browser_goes(location: str) -> SplitResult:
    """The URL a browser follows for a Location header seen on http://localhost/login (WHATWG
    parsing: C0 controls and spaces trimmed, tab and newline dropped, ``\\`` read as ``/``)."""
    cleaned = re.sub("[\t\n\r]", "", location.strip("".join(map(chr, range(0x21))))).replace("\\", "/")
    return urlsplit(urljoin("http://localhost/login", cleaned))


def test_the_browser_login_works_end_to_end(token_app):
    client = token_app.test_client()
    to_login = client.get("/requests", headers=HTML)
    assert to_login.status_code == 302 and to_login.headers["Location"].startswith("/login?next=")
    login_url = urlsplit(to_login.headers["Location"])
    csrf = _login_form(client, login_url.query)

    wrong = client.post("/login", query_string=login_url.query, data={"csrf_token": csrf, "token": "nope"})
    assert wrong.status_code == 400 and "That token is not valid." in wrong.get_data(as_text=True)
    assert client.get("/requests", headers=HTML).status_code == 302

    logged_in = client.post("/login", query_string=login_url.query, data={"csrf_token": csrf, "token": "token-a"})
    assert logged_in.status_code == 303 and urlsplit(logged_in.headers["Location"]).path == "/requests"
    assert "session=" in logged_in.headers["Set-Cookie"]
    page = client.get("/requests", headers=HTML)
    assert page.status_code == 200 and "text/html" in page.content_type


OFF_SITE = [
    "/%09/evil.example/phish",
    "/%0a/evil.example",
    "/%0d/evil.example",
    "//evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "/%5Cevil.example",
    "https://evil.example",
    "javascript:alert(1)",
    " /\t/evil",
    "%2F%2Fevil.example",
    "/\x00/evil",
]


@pytest.mark.parametrize(
    "raw_next, expected",
    [(raw, "/") for raw in OFF_SITE]
    + [("/requests", "/requests"), ("/status/abc?page=2", "/status/abc?page=2"), ("/", "/")],
)
def test_login_sends_the_browser_only_to_this_site(token_app, raw_next, expected):
    """``raw_next`` is the query string as written in a link; a 500 or a Location that a browser
    reads as another host would be an open redirect."""
    client = token_app.test_client()
    query = "next=" + raw_next
    csrf = _login_form(client, query)
    response = client.post("/login", query_string=query, data={"csrf_token": csrf, "token": "token-a"})
    assert response.status_code == 303
    location = response.headers["Location"]
    target = _where_a_browser_goes(location)
    assert (target.scheme, target.netloc) == ("http", "localhost"), location
    assert location == expected


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/a b/\u00e9?q=<x>#top", "/a%20b/%C3%A9?q=%3Cx%3E#top"),
        ("/a\\b", "/a/b"),
        ("/%09/x", "/%09/x"),
        ("\t/requests\n", "/requests"),
        ("/requests?", "/requests"),
        ("/\ud800", "/"),
        ("/\x7f", "/"),
        ("", "/"),
    ],
)
def test_safe_next_reserialises_what_it_keeps(target, expected):
    from pixshift.web.security import safe_next

    assert safe_next(target) == expected


def test_with_tokens_the_api_needs_one(token_client):
    for response in (
        _upload(token_client),
        _upload(token_client, "wrong"),
        token_client.get("/status/00000000-0000-4000-8000-000000000000"),
    ):
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert token_client.get("/healthz").status_code == 200


def test_a_request_is_visible_only_to_its_token(token_client):
    response = _upload(token_client, "token-a")
    assert response.status_code == 202
    request_id = response.get_json()["request_id"]
    mine = token_client.get(f"/status/{request_id}", headers={"Authorization": "Bearer token-a"})
    assert mine.status_code == 200
    theirs = token_client.get(f"/status/{request_id}", headers={"Authorization": "Bearer token-b"})
    assert theirs.status_code == 404 and theirs.get_json()["error"] == "request_not_found"
    csv = token_client.get(f"/requests/{request_id}/output.csv", headers={"Authorization": "Bearer token-b"})
    assert csv.status_code == 404


def test_without_tokens_the_api_is_open(client):
    assert _upload(client).status_code == 202


def test_responses_carry_security_headers_and_errors_are_json(client):
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    wrong_method = client.get("/upload")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"] == "method_not_allowed"


def test_an_unexpected_error_is_json_without_a_stack_trace(app, client, monkeypatch):
    import pixshift.web.api.routes as routes

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(routes, "request_status", boom)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    try:
        response = client.get(f"/status/{_upload(client).get_json()['request_id']}")
    finally:
        app.config["PROPAGATE_EXCEPTIONS"] = None
    assert response.status_code == 500
    body = response.get_json()
    assert body["error"] == "internal_error" and "secret" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/media/{id}/99999999999999999999-1.jpg",
        "/media/{id}/1-99999999999.jpg",
        "/media/{id}/" + "9" * 5000 + "-1.jpg",
        "/media/{id}/../../etc/passwd",
        "/media/{id}/1-1.exe",
    ],
)
def test_odd_media_names_are_404_not_500(client, path):
    response = client.get(path.format(id="00000000-0000-4000-8000-000000000000"))
    assert response.status_code == 404


@pytest.mark.parametrize(
    "query", ["page=0", "page=abc", "per_page=0", "per_page=501", "page=99999999999999999999", "page=2"]
)
def test_bad_status_pages_are_400(client, query):
    request_id = _upload(client).get_json()["request_id"]
    response = client.get(f"/status/{request_id}?{query}")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_page"


def test_any_spelling_of_a_request_id_finds_it(client):
    request_id = _upload(client).get_json()["request_id"]
    for spelling in (request_id.upper(), request_id.replace("-", ""), "urn:uuid:" + request_id):
        assert client.get(f"/status/{spelling}").get_json()["request_id"] == request_id


def test_readiness_names_failing_checks_without_details(app, client, monkeypatch):
    assert client.get("/readyz").get_json() == {
        "status": "ok",
        "checks": {"database": "ok", "media": "ok", "queue": "ok"},
    }
    store = app.extensions["pixshift"].store

    def broken():
        raise OSError("/secret/path is read-only")

    monkeypatch.setattr(store, "check", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["media"] == "error" and "secret" not in response.get_data(as_text=True)


def test_every_response_carries_a_request_id(client):
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "trace-42"}).headers["X-Request-ID"] == "trace-42"
    assert client.get("/healthz", headers={"X-Request-ID": "bad id <x>"}).headers["X-Request-ID"] != "bad id <x>"


def test_log_lines_carry_the_ids_in_context():
    import json
    import logging

    from pixshift import logs

    record = logging.LogRecord("pixshift.pipeline.processing", logging.INFO, __file__, 1, "done", None, None)
    token = logs.bind(request_id="r-1", image_id=7)
    try:
        logs.ContextFilter().filter(record)
    finally:
        logs.unbind(token)
    assert json.loads(logs.JsonFormatter().format(record)) | {"time": None} == {
        "time": None,
        "level": "INFO",
        "logger": "pixshift.pipeline.processing",
        "message": "done",
        "request_id": "r-1",
        "image_id": 7,
    }
    assert logs.TextFormatter("%(message)s").format(record) == "done [request_id=r-1 image_id=7]"


def test_what_a_library_writes_to_wsgi_errors_is_a_whole_log_record(capsys):
    """eventlet writes "socket shutdown error" to wsgi.errors with no newline: the next record was
    glued onto it and no longer parsed as JSON. Every line the process writes is one record."""
    import json
    import logging

    from werkzeug.test import create_environ

    from pixshift import logs
    from pixshift.web.request_ids import errors_to_log

    def library(environ, start_response):
        environ["wsgi.errors"].write("server=/socket.io/ client=127.0.0.1:5 socket shutdown error: [Errno 9]")
        environ["wsgi.errors"].writelines(["two\nlines\n"])
        start_response("200 OK", [])
        return [b""]

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("json", "INFO")
    try:
        errors_to_log(library)(create_environ("/socket.io/"), lambda status, headers: None)
        logging.getLogger("pixshift.wsgi-test").info("deleted request r-1")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)
    # Every line is a JSON record; other threads of this process may log meanwhile: keep ours.
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["message"] for r in records if r["logger"] in ("pixshift.wsgi", "pixshift.wsgi-test")] == [
        "server=/socket.io/ client=127.0.0.1:5 socket shutdown error: [Errno 9]",
        "two",
        "lines",
        "deleted request r-1",
    ]
