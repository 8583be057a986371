"""The OpenAPI document (pixshift/web/api/openapi.json) is true: it is valid OpenAPI 3.1, it lists every API
route, real responses of a live ``python -m pixshift`` validate against it (success and error
cases, with undocumented fields refused), and Schemathesis fuzzing the running app from it finds
no 500s and no response that breaks it. /docs renders it with the bundled Swagger UI.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import time
import uuid
from datetime import datetime
from urllib.parse import quote, urlsplit

import pytest
import requests
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from webhook_receiver import Receiver

from harness.livestack import BIN, ROOT, Stack, wait_until

DOC_PATH = ROOT / "pixshift" / "web" / "api" / "openapi.json"
DOC = json.loads(DOC_PATH.read_text(encoding="utf-8"))
DOC_URI = "urn:pixshift:openapi"
HEADER = "Serial Number,Product Name,Input Image URLs\r\n"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
# Documented answers no test here provokes: a queue outage, a failing dependency, and the
# redirect of PIXSHIFT_MEDIA_DELIVERY=presigned (an object store's setting).
NOT_EXERCISED = {("post", "/upload", "503"), ("get", "/readyz", "503"), ("get", "/media/{request_id}/{name}", "302")}
TOKEN = "tok-openapi-test"


# --- the document itself ----------------------------------------------------------------------


def test_document_is_valid_openapi_3_1():
    # The official OAS 3.1 meta-schema, as the pinned Schemathesis ships it.
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    assert DOC["openapi"].startswith("3.1.")
    errors = [f"{e.json_path}: {e.message[:300]}" for e in Draft202012Validator(OPENAPI_31).iter_errors(DOC)]
    assert not errors, "\n".join(errors)
    for _pointer, schema in _schema_objects(DOC):
        Draft202012Validator.check_schema(schema)  # each Schema Object is valid JSON Schema 2020-12
    registry = _registry(DOC)
    for ref in _refs(DOC):
        registry.resolver(DOC_URI).lookup(ref)  # every $ref resolves
    ids = [op["operationId"] for _, _, op in _operations(DOC)]
    assert len(ids) == len(set(ids)), ids


def test_document_version_matches_the_package():
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert DOC["info"]["version"] == version


def test_every_api_route_is_documented_and_nothing_else(app):
    """Routes of the API and download blueprints <-> paths of the document, method by method."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] not in ("api", "downloads") or rule.endpoint in (
            "api.openapi_json",
            "api.api_docs",
        ):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        routes |= {(m.lower(), path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(method, path) for path, method, _ in _operations(DOC)}
    assert routes == documented, f"undocumented: {sorted(routes - documented)}; gone: {sorted(documented - routes)}"


def test_openapi_json_and_docs_are_served(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == DOC
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
    styles = re.findall(r'<link[^>]*href="([^"]+)"', html)
    assert "<script>" not in html and "style=" not in html  # the CSP allows neither
    assert any("swagger-ui-bundle.js" in s for s in scripts) and all(s.startswith("/static/") for s in scripts)
    assert all(s.startswith("/static/") for s in styles)
    for url in scripts + styles:
        with client.get(url) as static:  # a file response: closing it closes the file
            assert static.status_code == 200, url
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"]


def test_docs_are_open_on_a_server_with_tokens(tmp_path):
    """The description is public (it holds no data); Swagger UI's Authorize button takes the token."""
    with Stack(tmp_path, {"PIXSHIFT_API_TOKENS": TOKEN}, separate_consumer=False, workers=1) as stack:
        assert requests.get(stack.url("/openapi.json"), timeout=10).json() == DOC
        assert requests.get(stack.url("/docs"), timeout=10).status_code == 200
        assert requests.get(stack.url("/api/webhooks"), timeout=10).status_code == 401


# --- real responses against the document ------------------------------------------------------


class Contract:
    """Validates real responses against the document, strictly: fields it does not list are refused."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.strict = _strict(copy.deepcopy(doc))
        self.registry = _registry(self.strict)
        self.seen: set[tuple[str, str, str]] = set()

    def deref(self, obj: dict) -> dict:
        while "$ref" in obj:
            obj = self.registry.resolver(DOC_URI).lookup(obj["$ref"]).contents
        return obj

    def validate(self, instance, pointer: str) -> None:
        validator = Draft202012Validator(
            {"$ref": f"{DOC_URI}#{quote(pointer, safe='/~')}"}, registry=self.registry, format_checker=FORMATS
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: e.json_path)
        assert not errors, (
            f"{pointer}:\n"
            + "\n".join(f"  {e.json_path}: {e.message[:400]}" for e in errors)
            + f"\n  instance: {json.dumps(instance)[:2000]}"
        )

    def check(self, response: requests.Response, method: str, path: str) -> requests.Response:
        """``response`` must be documented for ``method path`` and match its schema and headers."""
        operation = self.doc["paths"][path][method]
        status = str(response.status_code)
        responses = operation["responses"]
        key = next((k for k in (status, f"{status[0]}XX", "default") if k in responses), None)
        what = f"{method.upper()} {path} -> {status} {response.text[:500]!r}"
        assert key, f"undocumented status: {what}"
        self.seen.add((method, path, status))
        pointer = f"/paths/{_escape(path)}/{method}/responses/{key}"
        documented = responses[key]
        if "$ref" in documented:
            pointer = documented["$ref"].removeprefix("#")
            documented = self.deref(documented)
        for name, header in documented.get("headers", {}).items():
            header = self.deref(header)
            if header.get("required"):
                assert name in response.headers, f"{what}: header {name} missing"
            if name in response.headers:
                Draft202012Validator(header["schema"]).validate(response.headers[name])
        content = documented.get("content")
        if not content:
            assert not response.content, f"{what}: a body where none is documented"
            return response
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        assert media_type in content, f"{what}: Content-Type {media_type!r} is not among {sorted(content)}"
        if media_type == "application/json":
            self.validate(response.json(), f"{pointer}/content/{_escape(media_type)}/schema")
        return response


def test_responses_match_the_document(tmp_path, image_server):
    c = Contract(DOC)
    with Receiver(secret=None) as receiver, Stack(tmp_path, {}, separate_consumer=False) as stack:
        s = requests.Session()
        u = stack.url
        c.check(s.get(u("/healthz")), "get", "/healthz")
        c.check(s.get(u("/readyz")), "get", "/readyz")

        # Webhook endpoints: register (it then gets the events below), list, bad bodies.
        endpoint = c.check(
            s.post(u("/api/webhooks"), json={"url": receiver.url + "/registered", "description": "contract test"}),
            "post",
            "/api/webhooks",
        ).json()
        assert endpoint["secret"].startswith("whsec_")
        for bad in ({"description": "no url"}, {"url": "ftp://example.com/x"}):
            r = c.check(s.post(u("/api/webhooks"), json=bad), "post", "/api/webhooks")
            assert r.status_code == 400
        assert c.check(s.post(u("/api/webhooks"), data="nope"), "post", "/api/webhooks").status_code == 400
        listed = c.check(s.get(u("/api/webhooks")), "get", "/api/webhooks").json()
        assert [e["id"] for e in listed["endpoints"]] == [endpoint["id"]]

        # Uploads: a good one (one image done, one failed, a webhook) and every kind of rejection.
        good = (
            HEADER + f'1,Sneaker,"{image_server.url("photo1.jpg")}, {image_server.url("missing/x.jpg")}"\r\n'
            f"2,Tote,{image_server.url('photo2.jpg')}\r\n"
        )
        accepted = c.check(stack.upload(good, webhook_url=receiver.url), "post", "/upload")
        assert accepted.status_code == 202
        request_id = accepted.json()["request_id"]
        slow = c.check(
            stack.upload(HEADER + f"1,Slow,{image_server.url('slow/photo3.jpg?delay=5')}\r\n"), "post", "/upload"
        ).json()["request_id"]
        for body, webhook, code in (
            (HEADER + "x,,ftp://nope\r\n", None, "invalid_csv"),
            ("Serial Number,Name\r\n1,a\r\n", None, "invalid_csv"),
            (HEADER + f"1,A,{image_server.url('photo1.jpg')}\r\n", "not a url", "invalid_webhook_url"),
        ):
            r = c.check(stack.upload(body, webhook_url=webhook), "post", "/upload")
            assert (r.status_code, r.json()["error"]) == (400, code)
        r = c.check(s.post(u("/upload"), data={"webhook_url": ""}), "post", "/upload")
        assert (r.status_code, r.json()["error"]) == (400, "missing_file")
        rejected = c.check(stack.upload(HEADER + "1,A,ftp://x/a.jpg\r\n1,,\r\n"), "post", "/upload").json()
        assert rejected["details"] and rejected["truncated"] is False

        # While the slow request runs: its status (items still queued/processing) and 409 for its CSV.
        c.check(s.get(u(f"/status/{slow}")), "get", "/status/{request_id}")
        r = c.check(s.get(u(f"/requests/{slow}/output.csv")), "get", "/requests/{request_id}/output.csv")
        assert (r.status_code, r.json()["error"]) == (409, "not_finished")

        # The good request, finished, with its webhook deliveries done.
        stack.wait_finished(request_id)
        deliveries = wait_until(lambda: _delivered(stack.status(request_id)), 30, 0.1, "webhook deliveries")
        assert {d["endpoint_id"] for d in deliveries} == {None, endpoint["id"]}
        doc = c.check(s.get(u(f"/status/{request_id}")), "get", "/status/{request_id}").json()
        assert doc["state"] == "completed_with_errors"
        states = [im["state"] for p in doc["items"] for im in p["images"]]
        assert sorted(states) == ["done", "done", "failed"]
        paged = c.check(
            s.get(u(f"/status/{request_id}"), params={"page": 2, "per_page": 1}), "get", "/status/{request_id}"
        ).json()
        assert paged["pagination"]["next"] is None and [p["serial_number"] for p in paged["items"]] == [2]
        for event in receiver.wait_for(2):
            c.validate(event["body"], "/components/schemas/WebhookEvent")
            assert {"webhook-id", "webhook-timestamp"} <= set(event["headers"])
        for params, code in (({"page": 3, "per_page": 1}, "invalid_page"), ({"per_page": "x"}, "invalid_page")):
            r = c.check(s.get(u(f"/status/{request_id}"), params=params), "get", "/status/{request_id}")
            assert (r.status_code, r.json()["error"]) == (400, code)
        for rid, status in (("not-a-uuid", 400), (str(uuid.uuid4()), 404)):
            r = c.check(s.get(u(f"/status/{rid}")), "get", "/status/{request_id}")
            assert r.status_code == status
            r = c.check(s.get(u(f"/requests/{rid}/output.csv")), "get", "/requests/{request_id}/output.csv")
            assert r.status_code == status

        csv_response = c.check(
            s.get(u(f"/requests/{request_id}/output.csv")), "get", "/requests/{request_id}/output.csv"
        )
        assert csv_response.status_code == 200 and "FAILED:" in csv_response.text

        # Media: a file, a conditional GET, an unknown name, and a file gone from the store.
        image = next(im for p in doc["items"] for im in p["images"] if im["state"] == "done")
        media = "/media/{request_id}/{name}"
        got = c.check(s.get(image["output_url"]), "get", media)
        assert got.status_code == 200 and got.headers["Content-Type"].startswith("image/")
        r = c.check(s.get(image["output_url"], headers={"If-None-Match": got.headers["ETag"]}), "get", media)
        assert r.status_code == 304
        assert c.check(s.get(u(f"/media/{request_id}/999-1.jpg")), "get", media).status_code == 404
        part = c.check(s.get(image["output_url"], headers={"Range": "bytes=0-9"}), "get", media)
        assert part.status_code == 206 and part.content == got.content[:10]
        size = len(got.content)
        r = c.check(s.get(image["output_url"], headers={"Range": f"bytes={size + 10}-"}), "get", media)
        assert r.status_code == 416
        key = image["output"]["sha256"]
        (tmp_path / "instance" / "media" / key[:2] / key[2:4] / key).unlink()  # DirectoryStore's layout
        assert c.check(s.get(image["output_url"]), "get", media).status_code == 503

        # Re-sending a delivery; unknown deliveries and endpoints.
        resend = "/api/deliveries/{delivery_id}/resend"
        r = c.check(s.post(u(f"/api/deliveries/{deliveries[0]['id']}/resend")), "post", resend)
        assert r.status_code == 202
        assert c.check(s.post(u("/api/deliveries/987654/resend")), "post", resend).status_code == 404
        one = "/api/webhooks/{endpoint_id}"
        assert c.check(s.delete(u(f"/api/webhooks/{endpoint['id']}")), "delete", one).status_code == 204
        assert c.check(s.delete(u(f"/api/webhooks/{endpoint['id']}")), "delete", one).status_code == 404
        listed = c.check(s.get(u("/api/webhooks")), "get", "/api/webhooks").json()
        assert listed["endpoints"] == []

        # Retry and cancel: not at the wrong moment, then a new run; a running request stopped.
        retry, cancel = "/requests/{request_id}/retry", "/requests/{request_id}/cancel"
        waiting = stack.upload(HEADER + f"1,Wait,{image_server.url('slow/photo3.jpg?delay=30')}\r\n").json()
        r = c.check(s.post(u(f"/requests/{waiting['request_id']}/retry")), "post", retry)
        assert (r.status_code, r.json()["error"]) == (409, "not_finished")
        r = c.check(s.post(u(f"/requests/{waiting['request_id']}/cancel")), "post", cancel)
        assert r.status_code == 202 and r.json()["cancelled_at"]
        r = c.check(s.post(u(f"/requests/{request_id}/cancel")), "post", cancel)
        assert (r.status_code, r.json()["error"]) == (409, "already_finished")
        r = c.check(s.post(u(f"/requests/{request_id}/retry")), "post", retry)
        assert r.status_code == 202 and (r.json()["retried"], r.json()["run"]) == (1, 2)
        assert stack.wait_finished(request_id)["run"] == 2
        for rid, status in (("not-a-uuid", 400), (str(uuid.uuid4()), 404)):
            for path in (retry, cancel):
                r = c.check(s.post(u(path.replace("{request_id}", rid))), "post", path)
                assert r.status_code == status

        # Deleting requests: not while one runs, then gone.
        gone = "/requests/{request_id}"
        r = c.check(s.delete(u(f"/requests/{slow}")), "delete", gone)
        assert (r.status_code, r.json()["error"]) == (409, "not_finished")
        assert c.check(s.delete(u(f"/requests/{request_id}")), "delete", gone).status_code == 204
        assert c.check(s.delete(u(f"/requests/{request_id}")), "delete", gone).status_code == 404
        assert c.check(s.delete(u("/requests/not-a-uuid")), "delete", gone).status_code == 400
        assert c.check(s.get(u(f"/status/{request_id}")), "get", "/status/{request_id}").status_code == 404

    # With API tokens: 401 for every operation that needs one, and 413 for a CSV over the limit.
    tokens_dir = tmp_path / "tokens"
    tokens_dir.mkdir()
    with Stack(
        tokens_dir, {"PIXSHIFT_API_TOKENS": TOKEN, "PIXSHIFT_MAX_CSV_BYTES": "2048"}, separate_consumer=False, workers=1
    ) as stack:
        rid = str(uuid.uuid4())
        calls = [
            ("post", "/upload", "/upload"),
            ("get", "/status/{request_id}", f"/status/{rid}"),
            ("get", "/requests/{request_id}/output.csv", f"/requests/{rid}/output.csv"),
            ("delete", "/requests/{request_id}", f"/requests/{rid}"),
            ("post", "/requests/{request_id}/retry", f"/requests/{rid}/retry"),
            ("post", "/requests/{request_id}/cancel", f"/requests/{rid}/cancel"),
            ("post", "/api/webhooks", "/api/webhooks"),
            ("get", "/api/webhooks", "/api/webhooks"),
            ("delete", "/api/webhooks/{endpoint_id}", f"/api/webhooks/{rid}"),
            ("post", "/api/deliveries/{delivery_id}/resend", "/api/deliveries/1/resend"),
        ]
        for method, path, url in calls:
            r = c.check(requests.request(method, stack.url(url), timeout=10), method, path)
            assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        big = HEADER + "".join(f"{n},Product {n},http://127.0.0.1/{n}.jpg\r\n" for n in range(100))
        r = c.check(
            requests.post(stack.url("/upload"), files={"file": ("big.csv", big)}, headers=auth, timeout=10),
            "post",
            "/upload",
        )
        assert (r.status_code, r.json()["error"]) == (413, "too_large")
        r = c.check(requests.get(stack.url(f"/status/{rid}"), headers=auth, timeout=10), "get", "/status/{request_id}")
        assert r.status_code == 404

    documented = {(m, p, s) for p, m, op in _operations(DOC) for s in op["responses"]}
    missing = documented - c.seen - NOT_EXERCISED
    assert not missing, f"documented responses no test validated: {sorted(missing)}"


def test_hostile_inputs_get_documented_answers(stack):
    """Inputs Schemathesis does not generate by default (lone surrogates in JSON) or rarely does
    (ids past 64 bits, NUL characters, which PostgreSQL cannot store) get a documented answer,
    never a 500; on SQLite and, when configured, on PostgreSQL."""
    c = Contract(DOC)
    json_header = {"Content-Type": "application/json"}
    csv_text = HEADER + "1,Lamp,http://127.0.0.1:9/lamp.jpg\r\n"
    cases = [
        (
            "post",
            "/api/webhooks",
            "/api/webhooks",
            {"data": '{"url": "http://127.0.0.1:9/hook", "description": "\\ud800"}', "headers": json_header},
        ),
        (
            "post",
            "/api/webhooks",
            "/api/webhooks",
            {"data": '{"url": "http://127.0.0.1:9/h\\udfff"}', "headers": json_header},
        ),
        (
            "post",
            "/api/webhooks",
            "/api/webhooks",
            {"data": '{"url": "http://127.0.0.1:9/hook", "description": "a\\u0000b"}', "headers": json_header},
        ),
        ("post", "/upload", "/upload", {"files": {"file": ("a\x00b.csv", csv_text)}}),
        ("delete", "/api/webhooks/{endpoint_id}", "/api/webhooks/%00", {}),
        ("get", "/media/{request_id}/{name}", "/media/%00/1-1.jpg", {}),
        ("get", "/media/{request_id}/{name}", f"/media/{uuid.uuid4()}/9999999999999999999-999999.jpg", {}),
        ("post", "/api/deliveries/{delivery_id}/resend", "/api/deliveries/9223372036854775808/resend", {}),
        ("post", "/api/deliveries/{delivery_id}/resend", "/api/deliveries/99999999999999999999999/resend", {}),
        ("get", "/status/{request_id}", f"/status/{uuid.uuid4()}?page=999999999&per_page=500", {}),
    ]
    failures = []
    for method, path, url, kwargs in cases:
        response = requests.request(method, stack.url(url), timeout=10, **kwargs)
        try:
            c.check(response, method, path)
            assert response.status_code < 500, "a server error"
        except AssertionError as exc:
            sent = kwargs.get("data") or kwargs.get("files", {}).get("file", ("",))[0]
            failures.append(f"{method.upper()} {url} {sent!r} -> {response.status_code}: {str(exc).splitlines()[0]}")
        if response.status_code == 201:  # accepted after all: leave no endpoint behind
            requests.delete(stack.url(f"/api/webhooks/{response.json()['id']}"), timeout=10)
    assert not failures, "\n".join(failures)


def _delivered(doc: dict) -> list[dict] | None:
    deliveries = doc["webhooks"]
    return deliveries if len(deliveries) == 2 and all(d["state"] == "delivered" for d in deliveries) else None


# --- Schemathesis against the running app -----------------------------------------------------

# Loaded into Schemathesis (SCHEMATHESIS_HOOKS): half the generated request ids are those of a real,
# finished request, and some media names are its real files, so the fuzzer reaches 200s too (the
# delete operation keeps its random ids, so the request stays for the others).
HOOKS = """
import schemathesis
from hypothesis import strategies as st

REQUEST_ID = {request_id!r}
MEDIA_NAMES = {media_names!r}


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    method = getattr(context.operation, "method", "").upper()
    if method == "DELETE" or not isinstance(path_parameters, dict) or "request_id" not in path_parameters:
        return st.just(path_parameters)
    real = {{**path_parameters, "request_id": REQUEST_ID}}
    choices = [path_parameters, real]
    if "name" in path_parameters:
        choices += [{{"request_id": REQUEST_ID, "name": name}} for name in MEDIA_NAMES]
    return st.sampled_from(choices)
"""

FUZZ_CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance"
)
FUZZ_SEED = os.environ.get("PIXSHIFT_FUZZ_SEED", "20260101")
# Per operation and phase (examples, coverage, fuzzing, stateful: all four run, on every deployment,
# for every operation). 10 costs about half of 30 (~690 cases per run against ~390); with the fixed
# seed CI sees the same cases every run. PIXSHIFT_FUZZ_EXAMPLES=30 (or a new seed) searches further.
FUZZ_EXAMPLES = os.environ.get("PIXSHIFT_FUZZ_EXAMPLES", "10")


def test_schemathesis_finds_no_server_errors_or_schema_violations(stack, tmp_path, image_server):
    """On the embedded default and, when configured, on PostgreSQL + Redis (the ``stack`` fixture)."""
    schemathesis = BIN / "schemathesis"
    if not schemathesis.exists():
        pytest.fail(f"{schemathesis} is missing: pip install -r requirements-dev.txt", pytrace=False)
    # A finished request for the fuzzer to read, so its status, CSV and media give 200s.
    csv_text = HEADER + f'1,Shoe,"{image_server.url("photo1.jpg")}, {image_server.url("missing/a.jpg")}"\r\n'
    request_id = stack.upload(csv_text).json()["request_id"]
    doc = stack.wait_finished(request_id)
    names = [
        urlsplit(url).path.rsplit("/", 1)[1]
        for p in doc["items"]
        for im in p["images"]
        for url in (im["output_url"], im["original"], *(im["thumbnails"] or {}).values())
        if url
    ]
    hooks = tmp_path / "pixshift_fuzz_hooks.py"
    hooks.write_text(HOOKS.format(request_id=request_id, media_names=names))
    env = {**os.environ, "SCHEMATHESIS_HOOKS": hooks.stem, "PYTHONPATH": str(tmp_path), "NO_COLOR": "1"}
    argv = [
        str(schemathesis),
        "run",
        stack.url("/openapi.json"),
        "--checks",
        FUZZ_CHECKS,
        "--max-examples",
        FUZZ_EXAMPLES,
        "--seed",
        FUZZ_SEED,
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--max-failures",
        "20",
        "--workers",  # one: two threads hit CPython 3.11.7's ast.parse race (gh-106905) in Hypothesis
        "1",
        "--no-color",
        "--suppress-health-check",
        "all",
    ]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - started
    output = proc.stdout[-25000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, f"Schemathesis failed ({elapsed:.0f}s):\n{output}\n{stack.logs(tail=3000)}"
    print(f"schemathesis: {elapsed:.1f}s\n{output[-3000:]}")


# --- helpers -----------------------------------------------------------------------------------


def _operations(doc: dict):
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _registry(doc: dict) -> Registry:
    return Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))


def _refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _schema_objects(doc: dict):
    """(where, schema) for every Schema Object: components and every inline schema."""

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "schema" and isinstance(value, dict):
                    yield f"{where}/schema", value
                else:
                    yield from walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}/{i}")

    yield from ((f"#/components/schemas/{k}", v) for k, v in doc["components"]["schemas"].items())
    yield from walk(doc["paths"], "#/paths")


def _strict(node):
    """Objects that list their properties get no others: the document must name every field."""
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


FORMATS = FormatChecker(formats=())


@FORMATS.checks("uuid", raises=ValueError)
def _is_uuid(value) -> bool:
    return not isinstance(value, str) or str(uuid.UUID(value)) == value  # canonical spelling


@FORMATS.checks("date-time", raises=ValueError)
def _is_datetime(value) -> bool:
    if not isinstance(value, str):
        return True
    return "T" in value and datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


@FORMATS.checks("uri")
def _is_uri(value) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
