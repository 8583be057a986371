"""Processing inside one process, as the embedded default runs it: real Huey consumer threads,
real SQLite, the in-process event bus; plus the state rules that keep images from getting stuck."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from csv_files import csv_text, numbered, upload
from images import scan_bomb
from sqlalchemy import update

from harness.imageserver import ImageServer
from harness.livestack import wait_until
from pixshift.db.extensions import db
from pixshift.db.models import Image, Request, WebhookEvent, utcnow
from pixshift.imaging import codec_processes
from pixshift.net.host_slots import HostSlots
from pixshift.pipeline import processing as pipeline
from pixshift.pipeline.sweep import reclaim_expired
from pixshift.uploads.csv_input import ProductRow
from pixshift.uploads.intake import create_request


def test_progress_events_are_published_as_images_finish(app, client, inprocess_worker, image_server):
    subscription = app.extensions["pixshift"].bus.subscribe()
    try:
        paths = [["photo1.jpg", "photo2.jpg"], ["missing/x.jpg", "photo3.jpg"]]
        request_id = upload(client, csv_text(numbered(paths), image_server), filename="p.csv")
        events = []

        def finished():
            item = subscription.get(0.2)
            if item and item[0] == request_id:
                events.append(item[1])
            return any(e["type"] == "request" for e in events)

        wait_until(finished, 60, interval=0, message="the request event")
    finally:
        subscription.close()
    started = [e for e in events if e["type"] == "image" and e["state"] == "processing"]
    images = [e for e in events if e["type"] == "image" and e["state"] != "processing"]
    assert len(images) == 4
    assert len({e["image_id"] for e in images}) == 4
    assert {e["image_id"] for e in started} == {e["image_id"] for e in images}
    assert {e["state"] for e in images} == {"done", "failed"}
    failed = [e for e in images if e["state"] == "failed"]
    assert failed[0]["error_code"] == "http_404" and failed[0]["serial_number"] == 2
    assert events[-1] == {**events[-1], "type": "request", "state": "completed_with_errors"}
    assert events[-1]["counts"]["total"] == 4


def test_downloads_overlap_so_a_slow_host_does_not_serialise_the_batch(app, client, inprocess_worker, image_server):
    image_server.reset()
    paths = [[f"slow/photo1.jpg?delay=0.4&n={n}"] for n in range(12)]
    request_id = upload(client, csv_text(numbered(paths), image_server), filename="p.csv")
    wait_until(lambda: client.get(f"/status/{request_id}").get_json()["links"]["output_csv"], 60)
    assert image_server.max_in_flight >= 4


def own_runtime(app, **changes) -> pipeline.Runtime:
    """The app's runtime with download slots of its own: the session's in-process worker may be
    busy with the same test host, and its per-host cap would park the image this test runs."""
    return dataclasses.replace(app.extensions["pixshift"], host_slots=HostSlots(8), **changes)


def _new_request(app, urls: list[str]) -> str:
    with app.app_context():
        return create_request([ProductRow(2, 1, "P", tuple(urls))], filename="t.csv", webhook_url=None)


def _image_ids(request_id: str) -> list[int]:
    return list(db.session.scalars(db.select(Image.id).where(Image.request_id == request_id).order_by(Image.position)))


def _expire_leases(request_id: str) -> None:
    db.session.execute(
        update(Image).where(Image.request_id == request_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()


def test_image_of_a_dead_worker_is_requeued_then_processed(app, image_server):
    rt = own_runtime(app)
    request_id = _new_request(app, [image_server.url("photo1.jpg")])
    with app.app_context():
        [image_id] = _image_ids(request_id)
        assert pipeline.claim_image(image_id, rt.lease_seconds)[0] == 1  # ...and the worker dies here
        assert pipeline.claim_image(image_id, rt.lease_seconds) is None  # leased: nobody else takes it
        assert reclaim_expired(rt, queue_empty=False).images == []  # the lease has not expired yet
        _expire_leases(request_id)
        assert reclaim_expired(rt, queue_empty=False).images == [image_id]
        image = db.session.get(Image, image_id)
        assert (image.state, image.error_code) == ("queued", "worker_lost")
        assert pipeline.process_image(image_id, rt).state == "done"
        image = db.session.get(Image, image_id)
        assert (image.state, image.attempts, image.error_code) == ("done", 2, None)
        assert db.session.get(Request, request_id).state == "completed"


def test_image_fails_with_a_reason_after_its_attempts_and_the_request_finishes(app, image_server):
    rt = own_runtime(app, max_attempts=2)
    request_id = _new_request(app, [image_server.url("photo1.jpg"), image_server.url("photo2.jpg")])
    with app.app_context():
        first, second = _image_ids(request_id)
        assert pipeline.process_image(second, rt).state == "done"
        for _ in range(2):  # two workers die holding the first image
            pipeline.claim_image(first, rt.lease_seconds)
            _expire_leases(request_id)
            reclaim_expired(rt, queue_empty=False)
        image = db.session.get(Image, first)
        assert image.state == "failed" and "stopped 2 times" in image.error_message
        req = db.session.get(Request, request_id)
        assert req.state == "completed_with_errors" and req.finished_at is not None


def test_a_worker_that_outlived_its_lease_cannot_overwrite_the_new_attempt(app, image_server):
    rt = own_runtime(app)
    request_id = _new_request(app, [image_server.url("photo1.jpg")])
    with app.app_context():
        [image_id] = _image_ids(request_id)
        old_attempt, _, _ = pipeline.claim_image(image_id, rt.lease_seconds)
        _expire_leases(request_id)
        reclaim_expired(rt, queue_empty=False)
        assert pipeline.process_image(image_id, rt).state == "done"
        stale = pipeline._finish_image(image_id, old_attempt, {"state": "failed", "error_code": "x"}, rt)
        assert stale.state is None
        assert db.session.get(Image, image_id).state == "done"


def test_the_lease_is_renewed_after_a_slow_download_only(app, image_server, monkeypatch):
    rt = own_runtime(app, lease_seconds=2)
    renewals = []
    monkeypatch.setattr(pipeline, "renew_lease", lambda *args: renewals.append(args))
    image_server.reset()
    request_id = _new_request(app, [image_server.url("photo1.jpg"), image_server.url("slow/photo2.jpg?delay=0.8")])
    with app.app_context():
        fast, slow = _image_ids(request_id)
        assert pipeline.process_image(fast, rt).state == "done"
        assert renewals == []  # a quarter of the lease had not passed: one UPDATE and commit saved
        assert pipeline.process_image(slow, rt).state == "done"
        assert renewals == [(slow, 1, 2)]


def test_costly_images_fail_too_costly_on_their_first_attempt_and_the_rest_is_done(app, image_server, tmp_path):
    """A scan bomb is refused from its bytes; a picture over the CPU budget has its child killed;
    neither is retried (it would cost the same again), and the next image is processed as usual."""
    (tmp_path / "bomb.jpg").write_bytes(scan_bomb())
    rt = own_runtime(app, image_cpu_seconds=0.5)
    with ImageServer(tmp_path) as bombs:
        request_id = _new_request(
            app, [bombs.url("bomb.jpg"), image_server.url("gen/3000x2000.webp?q=90"), image_server.url("photo1.jpg")]
        )
        with app.app_context():
            outcomes = [pipeline.process_image(i, rt).state for i in _image_ids(request_id)]
            images = [db.session.get(Image, i) for i in _image_ids(request_id)]
            request = db.session.get(Request, request_id)
    assert outcomes == ["failed", "failed", "done"]
    assert [(i.error_code, i.attempts) for i in images] == [("too_costly", 1), ("too_costly", 1), (None, 1)]
    assert "more than 256 scans" in images[0].error_message
    assert "more than 0.5 s of CPU time" in images[1].error_message  # 6 MP of WebP: seconds of encodes
    assert request.state == "completed_with_errors"


def test_waiting_for_a_compression_slot_keeps_the_lease(app, image_server):
    """The only slot is busy for longer than the whole lease; a sweep runs all along. The waiting
    image renews its lease (every quarter of it), so the sweep leaves it alone and it ends done."""
    rt = own_runtime(app, lease_seconds=2, cpu_slots=1)
    request_id = _new_request(app, [image_server.url("photo1.jpg")])
    with app.app_context():
        [image_id] = _image_ids(request_id)
    holding, stop = threading.Event(), threading.Event()

    def sweep() -> None:
        with app.app_context():
            while not stop.wait(0.2):
                reclaim_expired(rt, queue_empty=False)

    with ThreadPoolExecutor(2) as threads:
        # Its heartbeat first fires while it waits for its result, that is while it holds the slot.
        holder = threads.submit(
            codec_processes.run, time.sleep, 3, processes=1, heartbeat=holding.set, heartbeat_seconds=0.05
        )
        assert holding.wait(10)
        sweeper = threads.submit(sweep)
        try:
            with app.app_context():
                outcome = pipeline.process_image(image_id, rt)
                image = db.session.get(Image, image_id)
                assert (outcome.state, image.state, image.attempts, image.error_code) == ("done", "done", 1, None)
        finally:
            stop.set()
        holder.result()
        sweeper.result()


def test_retryable_failure_is_retried_and_then_succeeds(app, image_server):
    rt = own_runtime(app)
    rt = dataclasses.replace(rt, retry_delay=30, fetch_policy=dataclasses.replace(rt.fetch_policy, retries=0))
    image_server.reset()
    request_id = _new_request(app, [image_server.url("flaky/1/photo2.jpg?status=500")])
    with app.app_context():
        [image_id] = _image_ids(request_id)
        pipeline.mark_enqueued(request_id)
        outcome = pipeline.process_image(image_id, rt)
        assert outcome.state == "queued" and outcome.retry_in == rt.retry_delay and outcome.wake is None
        assert db.session.get(Image, image_id).error_code == "http_500"
        assert pipeline.claim_image(image_id, rt.lease_seconds) is None  # not before its backoff
        _expire_leases(request_id)  # the backoff is over...
        assert reclaim_expired(rt, queue_empty=False).images == []  # ...its task may be queued
        assert reclaim_expired(rt, queue_empty=True).images == [image_id]  # ...or was lost
        assert pipeline.process_image(image_id, rt).state == "done"


def test_a_throttled_host_is_paused_and_its_image_retried_when_the_pause_ends(app, image_server):
    """A 429 ends the attempt at once: the host is paused for its Retry-After, the image is due
    then (not after the usual retry delay), and the host's next image parks until the wake."""
    rt = own_runtime(app, retry_delay=30)
    image_server.reset()
    throttled, other = image_server.url("throttle/1/t1/photo1.jpg?retry_after=1"), image_server.url("photo2.jpg")
    request_id = _new_request(app, [throttled, other])
    with app.app_context():
        first, second = _image_ids(request_id)
        pipeline.mark_enqueued(request_id)
        outcome = pipeline.process_image(first, rt)
        assert (outcome.state, outcome.retry_in, outcome.wake) == ("queued", 1.0, ("127.0.0.1", 1.0))
        assert db.session.get(Image, first).error_code == "http_429"
        assert pipeline.process_image(second, rt) == pipeline.Outcome(None)  # parked: its host is paused
        assert rt.host_slots.parked() == 1 and image_server.hits["/photo2.jpg"] == 0
        assert wait_until(lambda: rt.host_slots.wake("127.0.0.1")[0], 5, message="the pause to end") == [second]
        assert pipeline.process_image(second, rt).state == "done"
        assert pipeline.process_image(first, rt).state == "done"  # due with its host
        assert db.session.get(Image, first).attempts == 2


def test_a_lost_image_task_is_enqueued_again_once_the_queue_is_empty(app, image_server):
    rt = own_runtime(app)
    request_id = _new_request(app, [image_server.url("photo1.jpg")])
    with app.app_context():
        [image_id] = _image_ids(request_id)
        assert pipeline.fan_out_targets(request_id, 64) == [image_id]
        pipeline.mark_enqueued(request_id)  # ...and the task is lost (say, Redis restarted)
        assert pipeline.fan_out_targets(request_id, 64) == []  # a second fan-out adds nothing
        assert image_id not in reclaim_expired(rt, queue_empty=False).images  # may still be queued
        assert image_id in reclaim_expired(rt, queue_empty=True).images


def test_a_fan_out_that_never_completed_is_run_again(app):
    rt = own_runtime(app)
    request_id = _new_request(app, ["http://127.0.0.1:1/a.jpg"])
    with app.app_context():
        assert request_id not in reclaim_expired(rt, queue_empty=False).requests  # just created
        db.session.execute(
            update(Request)
            .where(Request.id == request_id)
            .values(created_at=utcnow() - timedelta(seconds=rt.lease_seconds + 1))
        )
        db.session.commit()
        assert request_id in reclaim_expired(rt, queue_empty=False).requests
        pipeline.mark_enqueued(request_id)
        assert request_id not in reclaim_expired(rt, queue_empty=False).requests


def test_a_request_finishes_exactly_once_however_many_workers_race(any_db_app, image_server):
    """Eight workers end the last image at once: one finishes the request and writes one event."""
    app = any_db_app
    rt = own_runtime(app)
    with app.app_context():
        request_id = create_request(
            [ProductRow(2, 1, "P", (image_server.url("photo1.jpg"),))],
            filename=None,
            webhook_url="http://127.0.0.1:9/hook",
        )
        db.session.execute(update(Image).where(Image.request_id == request_id).values(state="done"))
        db.session.commit()
    results = []
    barrier = threading.Barrier(8)

    def finish():
        with app.app_context():
            barrier.wait()
            results.append(pipeline.finish_request_if_complete(request_id, rt))

    threads = [threading.Thread(target=finish) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0] * 7 + [1]
    with app.app_context():
        assert db.session.get(Request, request_id).state == "completed"
        events = db.session.scalars(db.select(WebhookEvent).where(WebhookEvent.request_id == request_id)).all()
        assert len(events) == 1 and len(events[0].deliveries) == 1


def test_no_database_connection_is_held_while_downloading_compressing_or_storing(any_db_app, image_server, monkeypatch):
    """A slow host, a costly image or a slow media store must not hold one of the pool's connections:
    the attempt commits before each and writes its result in a short transaction afterwards. The
    same holds when the image is revalidated (a conditional GET, and the store checked for the
    remembered result's objects) instead of compressed."""
    app = any_db_app
    rt = own_runtime(app)
    held: dict[str, list[int]] = {"fetch": [], "compress": [], "store": [], "check": []}

    def probing(name, real):
        def call(*args, **kwargs):
            held[name].append(db.engine.pool.checkedout() + db.session().in_transaction())
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(pipeline, "fetch_image", probing("fetch", pipeline.fetch_image))
    monkeypatch.setattr(pipeline.codec_processes, "run", probing("compress", pipeline.codec_processes.run))
    monkeypatch.setattr(rt.store, "put", probing("store", rt.store.put))
    monkeypatch.setattr(rt.store, "size", probing("check", rt.store.size))
    # Bytes no other test compressed (a seed of its own), else their remembered result is reused.
    name, seed = f"held-{uuid.uuid4().hex}.jpg", uuid.uuid4().int % 10**9
    image_server.set_file(name, image_server.generated(64, 48, seed=seed))
    reused = []
    for _ in range(2):  # compressed, then revalidated (a 304) and reused
        request_id = _new_request(app, [image_server.url(f"etag/{name}")])
        with app.app_context():
            [image_id] = _image_ids(request_id)
            outcome = pipeline.process_image(image_id, rt)
            image = db.session.get(Image, image_id)
            assert outcome.state == "done", image.error_message
            reused.append(image.reused)
    assert reused == [False, True]
    assert held == {"fetch": [0, 0], "compress": [0], "store": [0, 0, 0, 0], "check": [0, 0, 0, 0]}
