"""Scale-out and crash safety with real processes: PostgreSQL, Redis, gunicorn (eventlet) and
huey_consumer processes; one consumer is SIGKILLed mid-batch and nothing is lost."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import threading
import time

import psycopg
import pytest
import socketio
from services import scaleout_services
from webhook_receiver import Receiver

from harness.livestack import Stack, wait_until

pytestmark = pytest.mark.scaleout
N_IMAGES = 64


@pytest.fixture(params=["directory", "s3"])
def scaleout(request, tmp_path):
    """gunicorn + two consumers on PostgreSQL and Redis; media in a shared directory, or on a real
    S3 server so that no shared file system is involved."""
    with scaleout_services() as env:
        env.update(
            {
                "PIXSHIFT_LEASE_SECONDS": "4",
                "PIXSHIFT_SWEEP_SECONDS": "1",
                "PIXSHIFT_RETRY_DELAY": "0.5",
                "PIXSHIFT_LOG_FORMAT": "json",
            }
        )
        if request.param == "s3":
            env.update(request.getfixturevalue("seaweed").env(prefix=env["PIXSHIFT_QUEUE_NAME"]))
        with Stack(tmp_path, env, separate_consumer=True, gunicorn=True, workers=8) as stack:
            stack.start_consumer("worker-2")
            yield stack


class LiveClient:
    """A Socket.IO client of the gunicorn web process, recording progress batches."""

    def __init__(self, base_url: str) -> None:
        self.batches: list[dict] = []
        self.snapshot = threading.Event()
        self.finished = threading.Event()
        self.client = socketio.Client(reconnection=False)
        self.client.on("progress", self._progress)
        self.client.on("snapshot", lambda data: self.snapshot.set())
        self.client.connect(base_url, transports=["websocket"], wait_timeout=10)

    def _progress(self, batch: dict) -> None:
        self.batches.append(batch)
        if batch.get("state") in ("completed", "completed_with_errors", "failed"):
            self.finished.set()

    def join(self, request_id: str) -> None:
        self.client.emit("join", {"request_id": request_id})
        assert self.snapshot.wait(10), "no snapshot after joining"

    def close(self) -> None:
        self.client.disconnect()


def test_a_killed_consumer_loses_nothing(scaleout, image_server):
    stack = scaleout
    live = LiveClient(stack.base_url)
    paths = [f"slow/photo{1 + n % 3}.jpg?delay=0.4&n={n}" for n in range(N_IMAGES - 2)]
    paths += ["missing/a.jpg", "not-an-image.jpg"]  # designed to fail
    rows = [paths[i : i + 4] for i in range(0, len(paths), 4)]
    text = "Serial Number,Product Name,Input Image URLs\n" + "".join(
        f'{n},Product {n},"{", ".join(image_server.url(p) for p in urls)}"\n' for n, urls in enumerate(rows, 1)
    )
    with Receiver(os.environ["PIXSHIFT_WEBHOOK_SECRET"]) as receiver:
        response = stack.upload(text, webhook_url=receiver.url)
        assert response.status_code == 202, response.text
        request_id = response.json()["request_id"]
        live.join(request_id)

        # Mid-batch, kill one consumer outright; then start a fresh one.
        wait_until(
            lambda: 8 <= stack.status(request_id)["counts"]["done"] < N_IMAGES - 20,
            60,
            interval=0.02,
            message="the batch to be under way",
        )
        victim = stack.processes["worker-1"]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        in_flight = stack.status(request_id, per_page=500)
        stack.start_consumer("worker-3")

        status = stack.wait_finished(request_id, timeout=120)
        recovered_after = time.monotonic() - killed_at
        receiver.wait_for(1)
        # Once its delivery is closed nothing sends that event again, so the calls counted then are all.
        (delivery,) = wait_until(
            lambda: [d for d in stack.status(request_id)["webhooks"] if d["state"] != "pending"],
            30,
            message="the webhook delivery to be closed",
        )
        calls = list(receiver.received)
    assert live.finished.wait(30), "the Socket.IO client never saw the request finish"
    live.close()

    assert status["state"] == "completed_with_errors", status["counts"]
    assert status["counts"]["done"] == N_IMAGES - 2 and status["counts"]["failed"] == 2
    doc = stack.status(request_id, per_page=500)
    images = [im for p in doc["items"] for im in p["images"]]
    failed = {im["input_url"].rsplit("/", 1)[-1]: im["error"]["code"] for im in images if im["state"] == "failed"}
    assert failed == {"a.jpg": "http_404", "not-an-image.jpg": "not_an_image"}
    retried = [im for im in images if im["attempts"] > 1]
    print(
        f"\nkilled worker-1 with {in_flight['counts']['processing']} images processing; "
        f"request finished {recovered_after:.1f} s after the kill; {len(retried)} images needed a second attempt"
    )

    # The output CSV is complete: one output per input, in order.
    out = list(csv.reader(io.StringIO(stack.session.get(doc["links"]["output_csv"]).text)))
    assert len(out) == 1 + len(rows)
    for urls, row in zip(rows, out[1:]):
        assert len(row[3].split(", ")) == len(urls)
    assert sum(c.startswith("http") for row in out[1:] for c in row[3].split(", ")) == N_IMAGES - 2

    # Exactly one completion event, delivered once.
    assert [d["id"] for d in doc["webhooks"]] == [delivery["id"]]
    assert delivery["state"] == "delivered" and len(delivery["attempts"]) == 1, delivery
    assert len(calls) == 1 and calls[0]["verified"]["data"]["request_id"] == request_id
    assert calls[0]["headers"]["webhook-id"] == delivery["event_id"]
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        events = conn.execute("select count(*) from webhook_events where request_id = %s", (request_id,)).fetchone()
    assert events[0] == 1

    # The browser-side client saw live progress published by the consumers, relayed by gunicorn.
    assert live.batches, "no live progress reached the Socket.IO client"
    finished = [b["counts"]["done"] + b["counts"]["failed"] for b in live.batches if b.get("counts")]
    assert len(set(finished)) >= 3 and max(finished) == N_IMAGES
    assert any(b.get("state") == "completed_with_errors" for b in live.batches)

    # gunicorn's web process logs as configured: every line it wrote (gunicorn's own, the access log,
    # what libraries write to wsgi.errors) is one JSON object, tagged with the ids in context. The
    # deletion's record is written before its answer is sent.
    assert stack.session.delete(stack.url(f"/requests/{request_id}")).status_code == 204
    lines = (stack.tmp_path / "web.log").read_text().splitlines()
    unparsed = [line for line in lines if not _is_json_object(line)]
    assert not unparsed, unparsed[:5]
    records = [json.loads(line) for line in lines]
    deleted = [r for r in records if r["message"].startswith(f"deleted request {request_id}")]
    assert len(deleted) == 1 and deleted[0]["http_request_id"], records[-5:]
    assert any(r["logger"] == "gunicorn.access" for r in records)


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
