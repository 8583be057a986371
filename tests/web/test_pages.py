"""Pages without a browser: forms need their CSRF token, the no-JavaScript upload works,
text is escaped, and browsers get HTML errors."""

from __future__ import annotations

import io
import re

from pixshift.db.extensions import db
from pixshift.db.models import WebhookEndpoint

CSV = (
    b"Serial Number,Product Name,Input Image URLs\n1,<b>bold</b> & <script>alert(1)</script>,http://127.0.0.1:9/a.jpg\n"
)
HTML = {"Accept": "text/html"}


def csrf_token(client, path: str) -> str:
    page = client.get(path, headers=HTML).get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)


def test_the_upload_form_works_without_javascript(client):
    token = csrf_token(client, "/")
    response = client.post("/", data={"csrf_token": token, "file": (io.BytesIO(CSV), "p.csv")}, headers=HTML)
    assert response.status_code == 303
    page = client.get(response.headers["Location"], headers=HTML)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp;" in html


def test_upload_form_errors_are_shown_inline_with_row_and_column(client):
    token = csrf_token(client, "/")
    bad = b"Serial Number,Product Name,Input Image URLs\n1,,http://x.example/a.jpg\n"
    response = client.post("/", data={"csrf_token": token, "file": (io.BytesIO(bad), "p.csv")}, headers=HTML)
    assert response.status_code == 400
    assert 'data-row="2" data-column="Product Name"' in response.get_data(as_text=True)


def test_forms_without_their_csrf_token_are_refused(app, client):
    before = _endpoints(app)
    assert client.post("/webhooks", data={"url": "http://127.0.0.1:9/hook"}, headers=HTML).status_code == 400
    assert _endpoints(app) == before
    assert client.post("/", data={"file": (io.BytesIO(CSV), "p.csv")}, headers=HTML).status_code == 400
    endpoint = client.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook"}).get_json()
    assert client.post(f"/webhooks/{endpoint['id']}/delete", headers=HTML).status_code == 404
    assert endpoint["id"] in {e["id"] for e in client.get("/api/webhooks").get_json()["endpoints"]}
    client.delete(f"/api/webhooks/{endpoint['id']}")


def test_the_webhook_form_shows_the_secret_once(app, client):
    """Post/redirect/get: the POST answers 303, the page it leads to shows the secret once, and
    neither a reload nor a second registration of the same URL adds an endpoint."""
    token = csrf_token(client, "/webhooks")
    before = _endpoints(app)
    data = {"csrf_token": token, "url": "http://127.0.0.1:9/hook", "description": "<i>shop</i>"}
    response = client.post("/webhooks", data=data, headers=HTML)
    assert response.status_code == 303 and response.headers["Location"] == "/webhooks"
    html = client.get("/webhooks", headers=HTML).get_data(as_text=True)
    secret = re.search(r'id="endpoint-secret">(whsec_[^<]+)<', html).group(1)
    assert "&lt;i&gt;shop&lt;/i&gt;" in html
    assert secret not in client.get("/webhooks", headers=HTML).get_data(as_text=True)
    assert _endpoints(app) == before + 1

    again = client.post("/webhooks", data={**data, "csrf_token": csrf_token(client, "/webhooks")}, headers=HTML)
    assert again.status_code == 400 and "That URL is already registered." in again.get_data(as_text=True)
    assert _endpoints(app) == before + 1
    assert client.post("/api/webhooks", json={"url": "http://127.0.0.1:9/hook"}).get_json()["error"] == (
        "duplicate_webhook_url"
    )

    wrong = client.post(
        "/webhooks", data={"csrf_token": csrf_token(client, "/webhooks"), "url": "not a url"}, headers=HTML
    )
    assert wrong.status_code == 400
    assert "Enter a full web address starting with https://" in wrong.get_data(as_text=True)
    with app.app_context():
        endpoint = db.session.scalar(db.select(WebhookEndpoint).where(WebhookEndpoint.secret == secret))
        endpoint_id = endpoint.id

    # Delete asks first: without confirm=yes the answer is a confirmation page and nothing is deleted.
    path = f"/webhooks/{endpoint_id}/delete"
    asked = client.post(path, data={"csrf_token": csrf_token(client, "/webhooks")}, headers=HTML)
    assert asked.status_code == 200 and 'name="confirm" value="yes"' in asked.get_data(as_text=True)
    assert endpoint_id in {e["id"] for e in client.get("/api/webhooks").get_json()["endpoints"]}
    done = client.post(path, data={"csrf_token": csrf_token(client, "/webhooks"), "confirm": "yes"}, headers=HTML)
    assert done.status_code == 303
    assert endpoint_id not in {e["id"] for e in client.get("/api/webhooks").get_json()["endpoints"]}


def test_pages_carry_a_content_security_policy_and_errors_are_html_for_browsers(client):
    page = client.get("/", headers=HTML)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "<script>" not in page.get_data(as_text=True)  # no inline scripts: the CSP would block them
    missing = client.get("/requests/00000000-0000-4000-8000-000000000000", headers=HTML)
    assert missing.status_code == 404 and missing.content_type.startswith("text/html")


def _endpoints(app) -> int:
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(WebhookEndpoint))


def test_the_requests_list_shows_only_this_browsers_uploads(app, client):
    token = csrf_token(client, "/")
    response = client.post("/", data={"csrf_token": token, "file": (io.BytesIO(CSV), "mine.csv")}, headers=HTML)
    request_id = response.headers["Location"].rsplit("/", 1)[1]
    mine = client.get("/requests", headers=HTML).get_data(as_text=True)
    assert request_id in mine
    assert 'data-label="Images">1</td>' in mine and ">Queued</span>" in mine, mine  # words, not codes
    assert re.search(r'<time class="local" datetime="[^"]+">\d{1,2} \w{3} \d{4}, \d\d:\d\d UTC</time>', mine), mine
    api_upload = client.post("/upload", data={"file": (io.BytesIO(CSV), "api.csv")}).get_json()["request_id"]
    stranger = app.test_client()
    listed = stranger.get("/requests", headers=HTML).get_data(as_text=True)
    assert request_id not in listed and api_upload not in listed


def test_the_request_page_cancels_and_retries_with_its_buttons(app, client):
    """No worker runs here, so the upload stays queued: Cancel ends it at once, then Retry queues
    its cancelled image again as a new run. Both forms need their CSRF token."""
    token = csrf_token(client, "/")
    page = client.post("/", data={"csrf_token": token, "file": (io.BytesIO(CSV), "p.csv")}, headers=HTML)
    path = page.headers["Location"]
    html = client.get(path, headers=HTML).get_data(as_text=True)
    assert 'id="cancel"' in html and 'id="retry"' not in html
    assert client.post(path + "/actions/cancel", headers=HTML).status_code == 404  # no CSRF token

    cancelled = client.post(path + "/actions/cancel", data={"csrf_token": csrf_token(client, path)}, headers=HTML)
    assert cancelled.status_code == 303 and cancelled.headers["Location"] == path
    html = client.get(path, headers=HTML).get_data(as_text=True)
    assert "state-cancelled" in html and 'id="cancel"' not in html and "Retry 1 failed or cancelled image" in html

    retried = client.post(path + "/actions/retry", data={"csrf_token": csrf_token(client, path)}, headers=HTML)
    assert retried.status_code == 303
    doc = client.get("/status/" + path.rsplit("/", 1)[1]).get_json()
    assert (doc["state"], doc["run"], doc["counts"]["queued"]) == ("processing", 2, 1)
    html = client.get(path, headers=HTML).get_data(as_text=True)
    assert "Retrying 1 image." in html and 'id="cancel"' in html
    client.post(path + "/actions/cancel", data={"csrf_token": csrf_token(client, path)}, headers=HTML)


def test_the_upload_page_states_its_limits(app, client):
    html = client.get("/", headers=HTML).get_data(as_text=True)
    limits = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", re.search(r'id="limits".*?</p>', html, re.S).group(0)))
    config = app.config
    for number in (config["MAX_ROWS"], config["MAX_IMAGES_PER_REQUEST"], config["MAX_URLS_PER_ROW"]):
        assert f"{number:,}" in limits, limits
    assert "MB" in limits or "KB" in limits, limits


def test_the_output_csv_is_named_after_the_uploaded_file(client):
    request_id = client.post("/upload", data={"file": (io.BytesIO(CSV), "Frühjahr catalog.csv")}).get_json()[
        "request_id"
    ]
    assert client.post(f"/requests/{request_id}/cancel").status_code == 202  # no worker here: it ends at once
    response = client.get(f"/requests/{request_id}/output.csv")
    assert response.status_code == 200
    disposition = response.headers["Content-Disposition"]
    assert 'filename="Fr_hjahr catalog-output.csv"' in disposition  # an ASCII name for old clients
    assert "filename*=UTF-8''Fr%C3%BChjahr%20catalog-output.csv" in disposition
    response.close()


def test_an_output_name_never_carries_a_path_and_falls_back_to_the_id():
    from types import SimpleNamespace

    from pixshift.uploads.reporting import output_csv_disposition

    def name(filename):
        return output_csv_disposition(SimpleNamespace(filename=filename, id="abc"))

    assert name("../../etc/passwd") == "attachment; filename=\"passwd-output.csv\"; filename*=UTF-8''passwd-output.csv"
    assert name("C:\\shop\\feed.CSV").startswith('attachment; filename="feed-output.csv"')
    assert name(None) == name("") == name(".csv") == 'attachment; filename="pixshift-abc.csv"'
    assert name("日本.csv").startswith("attachment; filename=\"pixshift-abc-output.csv\"; filename*=UTF-8''%E6%97%A5")
