"""A request's turns in the queue (pixshift.pipeline.windows), on SQLite and PostgreSQL: the window opens
once, moves on by one distinct image per call even when many workers call at once, skips images
that share an earlier image's URL, stops for a cancelled request, and a stalled window is found."""

from __future__ import annotations

import threading

from pixshift.db.extensions import db
from pixshift.db.models import Image, Request, utcnow
from pixshift.pipeline import windows
from pixshift.uploads.csv_input import ProductRow
from pixshift.uploads.intake import create_request


def a_request(urls: list[str]) -> str:
    return create_request([ProductRow(2, 1, "P", tuple(urls))], filename="w.csv", webhook_url=None)


def test_concurrent_workers_each_get_another_image_and_shared_urls_are_skipped(any_db_app):
    with any_db_app.app_context():
        urls = [f"http://h.example/{n}.jpg" for n in range(60)] + ["http://h.example/0.jpg"] * 5
        request_id = a_request(urls)
        assert windows.link_shared_urls(request_id) == 5
        first = windows.open_window(request_id, 10)
        assert len(first) == 10 and windows.open_window(request_id, 0) == []

    got: list[int | None] = []
    lock = threading.Lock()

    def worker() -> None:
        with any_db_app.app_context():
            for _ in range(8):
                image_id = windows.next_in_window(request_id)
                with lock:
                    got.append(image_id)
            db.session.remove()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    handed = [i for i in got if i is not None]
    assert len(handed) == 50 and len(set(handed)) == 50  # each of the 50 left, once; then None
    with any_db_app.app_context():
        followers = set(db.session.scalars(db.select(Image.id).where(Image.source_id.is_not(None))).all())
        assert not followers & set(first + handed)
        assert windows.next_in_window(request_id) is None


def test_a_cancelled_request_hands_out_nothing_and_a_stalled_window_is_found(any_db_app):
    with any_db_app.app_context():
        request_id = a_request([f"http://s.example/{n}.jpg" for n in range(5)])
        windows.link_shared_urls(request_id)
        opened = windows.open_window(request_id, 2)
        req = db.session.get(Request, request_id)
        req.enqueued_at = utcnow()
        db.session.commit()
        assert request_id not in windows.stalled_requests()  # its 2 images are in the window
        db.session.execute(db.update(Image).where(Image.id.in_(opened)).values(state="done"))
        db.session.commit()
        assert request_id in windows.stalled_requests()  # the task that should move it on was lost
        req = db.session.get(Request, request_id)
        req.cancelled_at = utcnow()
        db.session.commit()
        assert windows.next_in_window(request_id) is None
        assert request_id not in windows.stalled_requests()
