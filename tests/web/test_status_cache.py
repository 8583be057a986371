"""A running request's status page is rendered once per STATUS_CACHE_SECONDS, however many poll."""

from __future__ import annotations

import threading
import time

from threads import waiting_in

from harness.livestack import ROOT, wait_until
from pixshift.uploads.csv_input import ProductRow
from pixshift.uploads.intake import create_request
from pixshift.web.api import routes

POLLERS = 12


def _new_request(app) -> str:
    with app.app_context():
        return create_request(
            [ProductRow(2, 1, "P", ("http://127.0.0.1:9/a.jpg",))], filename="t.csv", webhook_url=None
        )


class HeldRender:
    """Stands in for routes.request_status: records each render, and holds every render after the
    first ``free`` ones until ``release()``, so the test decides how long a render lasts."""

    def __init__(self, free: int) -> None:
        self.render = routes.request_status
        self.renders: list[int] = []  # the thread of each render
        self.free = free
        self.holding = threading.Event()  # a held render has begun
        self.released = threading.Event()

    def __call__(self, *args, **kwargs):
        self.renders.append(threading.get_ident())
        if len(self.renders) > self.free:
            self.holding.set()
            assert self.released.wait(30), "the test never released the render"
        return self.render(*args, **kwargs)

    def release(self) -> None:
        self.released.set()


def test_an_expired_page_is_rendered_by_one_poller_while_the_others_get_the_previous_one(app, monkeypatch):
    request_id = _new_request(app)
    held = HeldRender(free=1)
    monkeypatch.setattr(routes, "request_status", held)
    monkeypatch.setitem(app.config, "STATUS_CACHE_SECONDS", 0.2)
    answers: list = []
    pollers = [threading.Thread(target=lambda: answers.append(app.test_client().get(f"/status/{request_id}")))]
    try:
        first = app.test_client().get(f"/status/{request_id}")
        rendered_by = time.monotonic()  # the page was stored before the answer: it expires before this + 0.2 s
        assert first.status_code == 200 and len(held.renders) == 1
        # The next render's page is kept for a minute: a poll that came after it would get that page
        # rather than render again, so two renders below means one poller rendered.
        app.config["STATUS_CACHE_SECONDS"] = 60
        time.sleep(max(0.0, rendered_by + 0.2 - time.monotonic()) + 0.01)  # a clock deadline: expired
        pollers = [
            threading.Thread(target=lambda: answers.append(app.test_client().get(f"/status/{request_id}")))
            for _ in range(POLLERS)
        ]
        for t in pollers:
            t.start()
        # The render one of them started is held: every other poll is answered meanwhile, with the
        # previous page, instead of rendering too or waiting for it.
        assert held.holding.wait(10), "no poller rendered the expired page"
        wait_until(lambda: len(answers) == POLLERS - 1, 10, message=f"{POLLERS - 1} polls answered meanwhile")
        assert len(held.renders) == 2 and not held.released.is_set()
        assert [a.get_data() for a in answers] == [first.get_data()] * (POLLERS - 1)
    finally:
        held.release()
        for t in pollers:
            t.join(10)
    assert [a.status_code for a in answers] == [200] * POLLERS
    assert len(held.renders) == 2  # one of the twelve rendered; eleven got the previous page meanwhile
    assert {a.get_json()["request_id"] for a in answers} == {request_id}


def test_the_first_polls_of_a_page_wait_for_one_render_instead_of_each_rendering(app, monkeypatch):
    """A page nobody has polled yet (a new request, or many pollers arriving at once): one renders."""
    request_id = _new_request(app)
    held = HeldRender(free=0)
    monkeypatch.setattr(routes, "request_status", held)
    monkeypatch.setitem(app.config, "STATUS_CACHE_SECONDS", 60)  # no poll below finds the page expired
    answers: list = []

    def poll():
        answers.append(app.test_client().get(f"/status/{request_id}"))

    first = threading.Thread(target=poll)
    others = [threading.Thread(target=poll) for _ in range(8)]
    try:
        first.start()
        assert held.holding.wait(10), "the first poll did not render"
        for t in others:
            t.start()
        # Each of the others has arrived and waits, in PixShift's code, for the render under way.
        wait_until(
            lambda: all(waiting_in(t, ROOT / "pixshift") for t in others),
            10,
            message="the other polls to wait for the first render",
        )
        assert answers == [] and len(held.renders) == 1
    finally:
        held.release()
        for t in [first, *others]:
            t.join(10)
    assert [a.status_code for a in answers] == [200] * 9
    assert len(held.renders) == 1
    assert len({a.get_data() for a in answers}) == 1
