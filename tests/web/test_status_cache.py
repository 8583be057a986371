"""A running request's status page is rendered once per STATUS_CACHE_SECONDS, however many poll."""

from __future__ import annotations

import threading
import time

from pixshift.uploads.csv_input import ProductRow
from pixshift.uploads.intake import create_request
from pixshift.web.api import routes


def test_an_expired_page_is_rendered_by_one_poller_while_the_others_get_the_previous_one(app, monkeypatch):
    with app.app_context():
        request_id = create_request(
            [ProductRow(2, 1, "P", ("http://127.0.0.1:9/a.jpg",))], filename="t.csv", webhook_url=None
        )
    app.config["STATUS_CACHE_SECONDS"] = 0.2
    renders, render = [], routes.request_status

    def slow_render(*args, **kwargs):
        renders.append(threading.get_ident())
        time.sleep(0.3)  # longer than the cache lifetime: every poll meanwhile finds the page expired
        return render(*args, **kwargs)

    monkeypatch.setattr(routes, "request_status", slow_render)
    try:
        first = app.test_client().get(f"/status/{request_id}")
        assert first.status_code == 200 and len(renders) == 1
        time.sleep(0.25)  # expired
        answers = []

        def poll():
            answers.append(app.test_client().get(f"/status/{request_id}"))

        pollers = [threading.Thread(target=poll) for _ in range(12)]
        for t in pollers:
            t.start()
        for t in pollers:
            t.join()
        assert [a.status_code for a in answers] == [200] * 12
        assert len(renders) == 2  # one of the twelve rendered; eleven got the previous page meanwhile
        assert {a.get_json()["request_id"] for a in answers} == {request_id}
    finally:
        app.config["STATUS_CACHE_SECONDS"] = 1.0


def test_the_first_polls_of_a_page_wait_for_one_render_instead_of_each_rendering(app, monkeypatch):
    """A page nobody has polled yet (a new request, or many pollers arriving at once): one renders."""
    with app.app_context():
        request_id = create_request(
            [ProductRow(2, 1, "P", ("http://127.0.0.1:9/a.jpg",))], filename="t.csv", webhook_url=None
        )
    renders, render = [], routes.request_status
    rendering = threading.Event()

    def slow_render(*args, **kwargs):
        renders.append(threading.get_ident())
        rendering.set()
        time.sleep(0.3)  # the other polls arrive meanwhile
        return render(*args, **kwargs)

    monkeypatch.setattr(routes, "request_status", slow_render)
    answers = []

    def poll():
        answers.append(app.test_client().get(f"/status/{request_id}"))

    first = threading.Thread(target=poll)
    first.start()
    assert rendering.wait(10)
    others = [threading.Thread(target=poll) for _ in range(8)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert [a.status_code for a in answers] == [200] * 9
    assert len(renders) == 1
    assert len({a.get_data() for a in answers}) == 1
