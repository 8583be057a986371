"""Catalog scale against real processes, on the embedded default and on PostgreSQL + Redis with a
separate consumer: a URL shared by many products is fetched once; cancel stops a running request;
retry runs a finished request's failed images again, each ending with a signed webhook event."""

from __future__ import annotations

import csv
import io
import os

import pytest
from catalog_server import CatalogHost
from csv_files import csv_text
from services import scaleout_services
from webhook_receiver import Receiver

from harness.livestack import Stack, wait_until

SECRET = os.environ["PIXSHIFT_WEBHOOK_SECRET"]


# Held downloads wait for the test, not for a read timeout and a retry.
PATIENT = {"PIXSHIFT_READ_TIMEOUT": "30", "PIXSHIFT_DOWNLOAD_TIMEOUT": "60"}
# A request's turns in the queue (pixshift.pipeline.windows; 64 by default): smaller, so that waiting
# behind a window of another request costs the test 16 images, not 64. Still twice the workers.
WINDOW = 16
SETTINGS = {**PATIENT, "PIXSHIFT_REQUEST_WINDOW": str(WINDOW)}


@pytest.fixture(scope="module", params=["embedded", pytest.param("scaleout", marks=pytest.mark.scaleout)])
def stack(request, tmp_path_factory):
    """One live stack per deployment for the module: every test makes requests of its own, from an
    image host of its own."""
    tmp_path = tmp_path_factory.mktemp(f"catalog-{request.param}")
    if request.param == "embedded":
        with Stack(tmp_path, SETTINGS, separate_consumer=False, workers=8) as s:
            yield s
        return
    with scaleout_services() as env:
        with Stack(tmp_path, {**env, **SETTINGS}, separate_consumer=True, workers=8) as s:
            yield s


@pytest.fixture()
def host():
    with CatalogHost() as h:
        yield h


def csv_of(rows: list[tuple[int, list[str]]]) -> str:
    return csv_text((serial, f"Product {serial}", urls) for serial, urls in rows)


def output_rows(stack: Stack, request_id: str) -> list[list[str]]:
    response = stack.session.get(stack.url(f"/requests/{request_id}/output.csv"), timeout=10)
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.text)))[1:]


def images(doc: dict) -> list[dict]:
    return [im for p in doc["items"] for im in p["images"]]


def test_a_url_shared_by_many_products_is_fetched_and_compressed_once(stack, host):
    shared = host.url("detail-shot")
    rows = [(n, [host.url(f"front-{n}"), shared]) for n in range(1, 11)] + [(11, [shared, shared])]
    request_id = stack.upload(csv_of(rows)).json()["request_id"]
    doc = stack.wait_finished(request_id)

    assert doc["state"] == "completed" and doc["counts"]["done"] == 22
    assert host.hits["detail-shot"] == 1  # one download for twelve slots
    assert all(host.hits[f"front-{n}"] == 1 for n in range(1, 11))
    slots = [im for im in images(doc) if im["input_url"] == shared]
    assert len(slots) == 12
    assert len({im["output"]["sha256"] for im in slots}) == 1
    assert [im["reused"] for im in slots].count(False) == 1  # the one that was fetched; the rest shared it
    # Every product still has its own output URL in its own slot, in input order.
    for serial, _urls, outputs in ((int(r[0]), r[2], r[3].split(", ")) for r in output_rows(stack, request_id)):
        assert len(outputs) == 2 and all(
            o.startswith(stack.base_url + f"/media/{request_id}/{serial}-") for o in outputs
        )
        assert stack.session.get(outputs[-1], timeout=10).status_code == 200


def test_cancel_stops_a_running_request_and_says_so(stack, host):
    with Receiver(SECRET) as receiver:
        rows = [(1, [host.url("quick-1"), host.url("quick-2")])] + [
            (n, [host.url(f"held-{n}-{k}") for k in range(4)]) for n in range(2, 12)
        ]
        request_id = stack.upload(csv_of(rows), webhook_url=receiver.url).json()["request_id"]
        wait_until(lambda: stack.status(request_id)["counts"]["done"] == 2, 30, message="the quick images done")
        host.wait_held(8)  # the workers' 8 downloads from this host are in flight; 32 images wait

        response = stack.session.post(stack.url(f"/requests/{request_id}/cancel"), timeout=10)
        assert response.status_code == 202, response.text
        assert response.json()["cancelled_at"]
        # At once: while the 8 downloads are still held, the 32 queued images are cancelled (status
        # pages of a running request are cached for a second).
        wait_until(
            lambda: (
                [stack.status(request_id)["counts"][k] for k in ("queued", "cancelled", "processing")] == [0, 32, 8]
            ),
            30,
            message="the queued images cancelled while the running ones are held",
        )
        host.release()  # the 8 downloads end; none of them is compressed, and no new one starts

        doc = stack.wait_finished(request_id)
        assert doc["state"] == "cancelled"
        assert doc["counts"] | {"percent": 0} == {
            "total": 42,
            "queued": 0,
            "processing": 0,
            "done": 2,
            "failed": 0,
            "cancelled": 40,
            "percent": 0,
        }
        assert sum(n for name, n in host.hits.items() if name.startswith("held")) == 8
        assert {im["error"]["code"] for im in images(doc) if im["state"] == "cancelled"} == {"cancelled"}
        again = stack.session.post(stack.url(f"/requests/{request_id}/cancel"), timeout=10)
        assert again.status_code == 409 and again.json()["error"] == "already_finished"

        outputs = [r[3].split(", ") for r in output_rows(stack, request_id)]
        assert all(o.startswith(stack.base_url) for o in outputs[0])  # what was done is in the CSV
        assert {o for row in outputs[1:] for o in row} == {"CANCELLED"}

        (call,) = receiver.wait_for(1)
        assert call["verified"]["type"] == "request.cancelled"
        assert call["verified"]["data"]["counts"]["cancelled"] == 40


def test_retry_runs_only_the_failed_images_again_and_finishes_once_more(stack, host):
    with Receiver(SECRET) as receiver:
        host.broken = {"b-1", "b-2"}
        rows = [(1, [host.url("g-1"), host.url("b-1")]), (2, [host.url("g-2")]), (3, [host.url("b-2")])]
        request_id = stack.upload(csv_of(rows), webhook_url=receiver.url).json()["request_id"]
        first = stack.wait_finished(request_id)
        assert first["state"] == "completed_with_errors" and first["run"] == 1
        (event1,) = receiver.wait_for(1)
        assert event1["verified"]["type"] == "request.completed"
        assert event1["verified"]["data"]["counts"]["failed"] == 2

        host.broken.clear()  # the host is back
        response = stack.session.post(stack.url(f"/requests/{request_id}/retry"), timeout=10)
        assert response.status_code == 202, response.text
        body = response.json()
        assert (body["retried"], body["run"], body["state"]) == (2, 2, "processing")
        assert body["links"]["output_csv"] is None  # unfinished again
        doc = stack.wait_finished(request_id)
        assert doc["state"] == "completed" and doc["counts"]["done"] == 4 and doc["run"] == 2
        assert (host.hits["g-1"], host.hits["g-2"], host.hits["b-1"], host.hits["b-2"]) == (1, 1, 2, 2)

        event1, event2 = receiver.wait_for(2)
        assert event2["verified"]["type"] == "request.completed"
        assert event2["verified"]["data"]["run"] == 2 and event2["verified"]["data"]["counts"]["done"] == 4
        assert event2["headers"]["webhook-id"] != event1["headers"]["webhook-id"]
        outputs = [o for r in output_rows(stack, request_id) for o in r[3].split(", ")]
        assert len(outputs) == 4 and all(o.startswith(stack.base_url) for o in outputs)

        again = stack.session.post(stack.url(f"/requests/{request_id}/retry"), timeout=10)
        assert again.status_code == 409 and again.json()["error"] == "nothing_to_retry"
        wait_until(lambda: len(receiver.received) >= 2, 1)
        assert len(receiver.received) == 2  # the run finished exactly once


def test_retry_and_cancel_refuse_the_wrong_moment(stack, host):
    rows = [(1, [host.url("held-a")])]
    request_id = stack.upload(csv_of(rows)).json()["request_id"]
    host.wait_held(1)
    early = stack.session.post(stack.url(f"/requests/{request_id}/retry"), timeout=10)
    assert early.status_code == 409 and early.json()["error"] == "not_finished"
    cancelled = stack.session.post(stack.url(f"/requests/{request_id}/cancel"), timeout=10)
    assert cancelled.status_code == 202
    host.release()
    assert stack.wait_finished(request_id)["state"] == "cancelled"
    # A cancelled request's images can be retried: they run to the end this time.
    assert stack.session.post(stack.url(f"/requests/{request_id}/retry"), timeout=10).status_code == 202
    doc = stack.wait_finished(request_id)
    assert doc["state"] == "completed" and doc["cancelled_at"] is None
    unknown = stack.session.post(stack.url("/requests/00000000-0000-0000-0000-000000000000/cancel"), timeout=10)
    assert unknown.status_code == 404


def test_a_small_request_beside_a_big_one_starts_at_once(stack, host):
    """Requests take turns in the queue (pixshift.pipeline.windows): a 3-image request uploaded while a
    big one from the same host runs finishes while the big one still runs, after at most a window of
    the big one's images. In one first-in-first-out queue it waited for the big one's every image.
    The big one is eight windows, so that it cannot finish first however busy the machine: it has
    about seven to go when the small one arrives, and the small one waits for one at most."""
    big = [(n, [host.url(f"slow-{n}-{k}") for k in range(4)]) for n in range(1, 8 * WINDOW // 4 + 1)]
    big_id = stack.upload(csv_of(big)).json()["request_id"]
    wait_until(lambda: stack.status(big_id)["counts"]["done"] >= 1, 60, message="the big request under way")

    small = [(1, [host.url("small-1"), host.url("small-2")]), (2, [host.url("small-3")])]
    small_id = stack.upload(csv_of(small)).json()["request_id"]
    doc = stack.wait_finished(small_id, timeout=60)
    assert doc["state"] == "completed"
    big_doc = stack.status(big_id)  # a finished request's status is never served from the cache
    assert big_doc["state"] == "processing", big_doc["counts"]  # the small one did not wait for it
    counts = big_doc["counts"]
    assert counts["done"] + counts["processing"] <= counts["total"] - WINDOW, counts  # long before its end
    stack.session.post(stack.url(f"/requests/{big_id}/cancel"), timeout=10)
    assert stack.wait_finished(big_id)["state"] == "cancelled"
