"""Media on a real S3-compatible server (SeaweedFS): idempotent content-addressed writes, the three
ways output URLs reach the bytes, deleting a request, and an outage of the store mid-batch."""

from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image as PILImage
from tcpproxy import TcpProxy

from harness.livestack import Stack, wait_until
from pixshift.db.extensions import db
from pixshift.db.models import Image
from pixshift.pipeline import processing as pipeline
from pixshift.storage import S3Store, content_key
from pixshift.uploads.csv_input import ProductRow
from pixshift.uploads.intake import create_request


@pytest.fixture()
def aws_env(seaweed, monkeypatch):
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    return seaweed


def stored(store, key: str) -> bool:
    """Whether the store holds ``key`` (its size answers, or FileNotFoundError says it is gone)."""
    try:
        store.size(key)
        return True
    except FileNotFoundError:
        return False


def s3_app(seaweed, prefix: str, **config):
    from pixshift import create_app
    from pixshift.db.schema import upgrade_schema

    app = create_app(
        {"TESTING": True, "MEDIA_URL": f"s3://pixshift-media/{prefix}", "S3_ENDPOINT_URL": seaweed.endpoint, **config}
    )
    with app.app_context():
        upgrade_schema()
    return app


def process(app, urls: list[str], serial: int = 1) -> str:
    with app.app_context():
        request_id = create_request([ProductRow(2, serial, "P", tuple(urls))], filename=None, webhook_url=None)
        for image_id in db.session.scalars(db.select(Image.id).where(Image.request_id == request_id)).all():
            assert pipeline.process_image(image_id, app.extensions["pixshift"]).state == "done"
    return request_id


def test_s3_store_is_content_addressed_and_idempotent(aws_env):
    store = S3Store("pixshift-media", "unit", aws_env.endpoint)
    data = b"\xff\xd8 not really a jpeg " * 100
    key = store.put(data, "image/jpeg")
    assert key == content_key(data) == store.put(data, "image/jpeg")  # a retried upload changes nothing
    assert stored(store, key) and store.size(key) == len(data)
    assert b"".join(store.get(key).chunks) == data
    assert b"".join(store.get(key, 10, 20).chunks) == data[10:20]
    store.delete(key)
    assert not stored(store, key)


def test_proxy_delivery_streams_from_the_store_with_caching_headers_and_ranges(aws_env, image_server):
    app = s3_app(aws_env, "proxy")
    client = app.test_client()
    request_id = process(app, [image_server.url("photo1.jpg")])
    doc = client.get(f"/status/{request_id}").get_json()
    image = doc["items"][0]["images"][0]
    path = image["output_url"].split("localhost", 1)[1]
    response = client.get(path)
    assert response.status_code == 200 and response.content_type == "image/jpeg"
    assert response.headers["ETag"] == f'"{image["output"]["sha256"]}"'
    assert "immutable" in response.headers["Cache-Control"]
    assert len(response.data) == image["output_bytes"]
    PILImage.open(io.BytesIO(response.data)).load()
    partial = client.get(path, headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206 and partial.data == response.data[:100]
    assert partial.headers["Content-Range"] == f"bytes 0-99/{image['output_bytes']}"
    assert client.get(path, headers={"Range": "bytes=-10"}).data == response.data[-10:]
    assert client.get(path, headers={"If-None-Match": response.headers["ETag"]}).status_code == 304


def test_presigned_delivery_redirects_to_the_bucket(aws_env, image_server):
    app = s3_app(aws_env, "presigned", MEDIA_DELIVERY="presigned", PRESIGN_SECONDS=120)
    client = app.test_client()
    request_id = process(app, [image_server.url("photo2.jpg")])
    image = client.get(f"/status/{request_id}").get_json()["items"][0]["images"][0]
    response = client.get(image["output_url"].split("localhost", 1)[1])
    assert response.status_code == 302
    target = response.headers["Location"]
    assert target.startswith(aws_env.endpoint) and "Expires=" in target
    fetched = requests.get(target, timeout=10)
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "image/jpeg"
    assert len(fetched.content) == image["output_bytes"]


def test_public_delivery_puts_bucket_urls_in_the_output(aws_env, image_server):
    base = f"{aws_env.endpoint}/pixshift-media"
    app = s3_app(aws_env, "public", MEDIA_DELIVERY="public", MEDIA_PUBLIC_BASE_URL=base)
    client = app.test_client()
    request_id = process(app, [image_server.url("photo3.jpg")])
    image = client.get(f"/status/{request_id}").get_json()["items"][0]["images"][0]
    assert image["output_url"].startswith(f"{base}/public/")
    out = client.get(f"/requests/{request_id}/output.csv").get_data(as_text=True)
    assert image["output_url"] in out


def test_deleting_a_request_removes_only_the_objects_nobody_else_uses(aws_env, image_server):
    app = s3_app(aws_env, "delete")
    client = app.test_client()
    store = app.extensions["pixshift"].store
    seed = time.time_ns() % 10**9  # images no other test stored, so only these requests share them
    shared, own = image_server.url(f"gen/320x240.jpg?seed={seed}"), image_server.url(f"gen/320x240.jpg?seed={seed + 1}")
    shared_and_own = process(app, [shared, own], serial=1)
    shared_only = process(app, [shared], serial=2)
    with app.app_context():
        keys = {
            im.position: im.output_key
            for im in db.session.scalars(db.select(Image).where(Image.request_id == shared_and_own))
        }
    assert client.delete(f"/requests/{shared_and_own}").status_code == 204
    assert client.get(f"/status/{shared_and_own}").status_code == 404
    assert stored(store, keys[0]) and not stored(store, keys[1])
    assert client.delete(f"/requests/{shared_only}").status_code == 204
    assert not stored(store, keys[0])


def test_the_store_going_down_mid_batch_loses_nothing(aws_env, image_server, tmp_path):
    proxy = TcpProxy(aws_env.s3).start()
    env = {
        **aws_env.env(prefix="outage"),
        "PIXSHIFT_S3_ENDPOINT_URL": proxy.url,
        "PIXSHIFT_MAX_ATTEMPTS": "8",
        "PIXSHIFT_RETRY_DELAY": "0.5",
    }
    paths = [f"slow/photo{1 + n % 3}.jpg?delay=0.3&n={n}" for n in range(16)]
    csv = "Serial Number,Product Name,Input Image URLs\n" + "".join(
        f"{n},P{n},{image_server.url(p)}\n" for n, p in enumerate(paths, start=1)
    )
    with Stack(tmp_path, env, separate_consumer=False, workers=4) as stack:
        request_id = stack.upload(csv).json()["request_id"]
        wait_until(lambda: stack.status(request_id)["counts"]["done"] >= 2, 60, message="the batch to start")
        proxy.cut()
        assert stack.session.get(stack.url("/readyz")).json()["checks"]["media"] == "error"
        wait_until(
            lambda: any(
                im["error"] and im["error"]["code"] == "storage_unavailable"
                for p in stack.status(request_id)["items"]
                for im in p["images"]
            ),
            30,
            message="an image to meet the outage",
        )
        # The outage lasts until a retry has met it too: an image back in the queue after a second
        # failed attempt, backing off.
        wait_until(
            lambda: any(
                im["state"] == "queued"
                and im["attempts"] >= 2
                and im["error"]
                and im["error"]["code"] == "storage_unavailable"
                for p in stack.status(request_id)["items"]
                for im in p["images"]
            ),
            30,
            message="a retry to meet the outage",
        )
        proxy.start()
        doc = stack.wait_finished(request_id, timeout=120)
    assert doc["state"] == "completed" and doc["counts"]["done"] == 16, doc["counts"]
    store = S3Store("pixshift-media", "outage", aws_env.endpoint)
    for p in doc["items"]:
        for im in p["images"]:
            assert stored(store, im["output"]["sha256"]) and stored(store, im["input"]["sha256"])
    assert any(im["attempts"] > 1 for p in doc["items"] for im in p["images"])
