"""A CSV in, every image fetched, compressed to half its bytes and stored, an output CSV out,
through real HTTP against real processes: embedded (SQLite) and scale-out (PostgreSQL + Redis)."""

from __future__ import annotations

import csv
import io
import threading
import time
import uuid

from csv_files import csv_text
from PIL import Image

from harness.imageserver import FIXTURES

GOOD = [
    "photo1.jpg",
    "photo2.jpg",
    "photo3.jpg",
    "alpha.png",
    "gray.jpg",
    "cmyk.jpg",
    "rotated.jpg",
    "gray16.png",
    "palette.png",
    "animated.gif",
    "photo.webp",
]
BAD = {  # path on the image server -> expected error code
    "missing/nothing.jpg": "http_404",
    "not-an-image.jpg": "not_an_image",
    "truncated.jpg": "corrupt_image",
    "bomb.png": "too_many_pixels",
}


class EventRecorder:
    """Collects the progress events a scale-out stack's consumers publish on Redis."""

    def __init__(self, env: dict) -> None:
        from pixshift.events import RedisBus

        bus = RedisBus(env["REDIS_URL"], env["PIXSHIFT_QUEUE_NAME"])
        self.subscription = bus.subscribe()
        self.events: list[tuple[str, dict]] = []
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        # Live once it hears its own probe: an event published before that would be missed unseen.
        probe = str(uuid.uuid4())  # a request id nobody has: relays that hear it find no request
        deadline = time.monotonic() + 10
        with self._arrived:
            while not any(rid == probe for rid, _ in self.events):
                assert time.monotonic() < deadline, "the event subscription never became live"
                bus.publish(probe, {"type": "probe"})
                self._arrived.wait(0.05)

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.subscription.get(0.2)
            if item:
                with self._arrived:
                    self.events.append(item)
                    self._arrived.notify_all()

    def wait_for(self, predicate, timeout: float = 10) -> list[tuple[str, dict]]:
        """The events so far, once ``predicate(events)`` holds."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: predicate(self.events), timeout):
                raise AssertionError(f"events never matched within {timeout} s: {self.events}")
            return list(self.events)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.subscription.close()


def test_csv_in_images_compressed_csv_out(stack, image_server):
    recorder = EventRecorder(stack.env) if stack.separate_consumer else None
    rows = [
        (1, "Astronaut poster", ["photo1.jpg", "photo2.jpg", "photo3.jpg"]),
        (7, "Odd formats", GOOD[3:]),
        (3, '=HYPERLINK("http://evil")', ["slow/photo2.jpg?delay=1.5", *BAD]),
    ]
    response = stack.upload(csv_text(rows, image_server))
    assert response.status_code == 202, response.text
    body = response.json()
    request_id = body["request_id"]
    assert uuid.UUID(request_id).version == 4
    assert body["status_url"] == stack.url(f"/status/{request_id}")
    assert response.headers["Location"] == body["status_url"]

    early = stack.session.get(stack.url(f"/requests/{request_id}/output.csv"))
    assert early.status_code == 409 and early.json()["error"] == "not_finished"

    status = stack.wait_finished(request_id)
    n_images = sum(len(paths) for _, _, paths in rows)
    assert status["state"] == "completed_with_errors"
    assert status["counts"] == {
        "total": n_images,
        "queued": 0,
        "processing": 0,
        "done": n_images - len(BAD),
        "failed": len(BAD),
        "cancelled": 0,
        "percent": 100.0,
    }
    assert [p["serial_number"] for p in status["items"]] == [1, 7, 3]

    # Every image: in input order, with bytes, quality and a stored output of at most half the bytes.
    for (_serial, _, paths), product in zip(rows, status["items"]):
        assert [im["input_url"] for im in product["images"]] == [image_server.url(p) for p in paths]
        for path, im in zip(paths, product["images"]):
            if path in BAD:
                assert im["state"] == "failed"
                assert im["error"]["code"] == BAD[path], im
                assert im["error"]["message"]
                assert im["output_url"] is None
                continue
            assert im["state"] == "done", im
            source = (FIXTURES / path.split("/")[-1].split("?")[0]).read_bytes()
            assert im["input_bytes"] == len(source)
            assert im["output_bytes"] <= len(source) // 2
            assert 1 <= im["quality"] <= 100
            output = stack.session.get(im["output_url"])
            assert output.status_code == 200
            assert len(output.content) == im["output_bytes"]
            decoded = Image.open(io.BytesIO(output.content))
            decoded.load()
            assert (decoded.width, decoded.height) == (im["output"]["width"], im["output"]["height"])
            for thumb in im["thumbnails"].values():
                t = Image.open(io.BytesIO(stack.session.get(thumb).content))
                assert max(t.size) <= 256
            assert stack.session.get(im["original"]).content == source

    # The output CSV: the input columns plus one output per input, same order, failures visible.
    csv_response = stack.session.get(status["links"]["output_csv"])
    assert csv_response.status_code == 200
    assert csv_response.headers["Content-Type"].startswith("text/csv")
    out_rows = list(csv.reader(io.StringIO(csv_response.text)))
    assert out_rows[0] == ["Serial Number", "Product Name", "Input Image URLs", "Output Image URLs"]
    assert len(out_rows) == 1 + len(rows)
    for (serial, name, paths), out, product in zip(rows, out_rows[1:], status["items"]):
        assert out[0] == str(serial)
        assert out[1] == ("'" + name if name.startswith("=") else name)
        assert out[2].split(", ") == [image_server.url(p) for p in paths]
        outputs = out[3].split(", ")
        assert len(outputs) == len(paths)
        for path, cell, im in zip(paths, outputs, product["images"]):
            assert cell == (f"FAILED:{BAD[path]}" if path in BAD else im["output_url"])

    if recorder:

        def ended(events):
            return [
                e
                for rid, e in events
                if rid == request_id and e["type"] == "image" and e["state"] in ("done", "failed")
            ]

        def requests_ended(events):
            return [e for rid, e in events if rid == request_id and e["type"] == "request"]

        # The request is finished in the database before its events are published: wait for them.
        events = recorder.wait_for(lambda events: len(ended(events)) >= n_images and requests_ended(events))
        recorder.close()
        image_events, request_events = ended(events), requests_ended(events)
        assert len(image_events) == n_images
        assert {e["image_id"] for e in image_events} == {im["id"] for p in status["items"] for im in p["images"]}
        assert len(request_events) == 1 and request_events[0]["state"] == "completed_with_errors"


def test_status_paging_and_unknown_ids(stack, image_server):
    rows = [(i, f"Product {i}", ["photo1.jpg"]) for i in range(1, 6)]
    request_id = stack.upload(csv_text(rows, image_server)).json()["request_id"]
    stack.wait_finished(request_id)
    page = stack.status(request_id, page=2, per_page=2)
    assert [p["serial_number"] for p in page["items"]] == [3, 4]
    assert page["pagination"]["pages"] == 3
    assert page["pagination"]["next"].endswith(f"/status/{request_id}?page=3&per_page=2")

    missing = stack.session.get(stack.url(f"/status/{uuid.uuid4()}"))
    assert missing.status_code == 404 and missing.json()["error"] == "request_not_found"
    malformed = stack.session.get(stack.url("/status/not-a-uuid"))
    assert malformed.status_code == 400 and malformed.json()["error"] == "invalid_request_id"
