"""Live progress over Socket.IO (Flask-SocketIO's test client): a snapshot on joining, then
coalesced batches while a real consumer processes the images. With API tokens, against a real
server and client: only logged-in browsers connect, and each joins only its own requests' rooms."""

from __future__ import annotations

import io
import time

import pytest

from harness.livestack import wait_until
from pixshift.db.extensions import socketio
from pixshift.web.realtime import RELAY_INTERVAL


@pytest.fixture(scope="module")
def live_app(app):
    """An app built here, so Socket.IO is bound to it even if other tests built apps since
    (Flask-SocketIO binds one app per process, as production has). The in-process bus is
    shared by every app in the process, so the session's worker threads reach this relay."""
    from pixshift import create_app
    from pixshift.web.realtime import start_relay

    live = create_app({"TESTING": True})
    start_relay(live)
    return live


@pytest.fixture()
def live_client(live_app):
    return live_app.test_client()


def _upload(client, server, paths):
    csv = "Serial Number,Product Name,Input Image URLs\n" + "".join(
        f"{n},P{n},{server.url(p)}\n" for n, p in enumerate(paths, start=1)
    )
    response = client.post("/upload", data={"file": (io.BytesIO(csv.encode()), "p.csv")})
    assert response.status_code == 202
    return response.get_json()["request_id"]


def _receive_until(sio, predicate, timeout=30):
    """Everything the test client received, once a message matches ``predicate`` (it can only be polled)."""
    got = []

    def arrived():
        got.extend(sio.get_received())
        return any(predicate(m) for m in got)

    try:
        wait_until(arrived, timeout, message="a matching Socket.IO message")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; received {got}") from None
    return got


def test_join_gives_a_snapshot_then_live_batches(live_app, live_client, inprocess_worker, image_server):
    app, client = live_app, live_client
    paths = [f"slow/photo1.jpg?delay=0.3&n={n}" for n in range(6)] + ["missing/x.jpg"]
    request_id = _upload(client, image_server, paths)
    sio = socketio.test_client(app, flask_test_client=client)
    assert sio.is_connected()
    joined = time.monotonic()
    sio.emit("join", {"request_id": request_id})
    received = _receive_until(
        sio, lambda m: m["name"] == "progress" and m["args"][0].get("state") in ("completed", "completed_with_errors")
    )
    listened = time.monotonic() - joined
    sio.disconnect()
    assert received[0]["name"] == "snapshot"
    snapshot = received[0]["args"][0]
    assert snapshot["request_id"] == request_id and snapshot["counts"]["total"] == 7
    assert len(snapshot["images"]) == 7
    batches = [m["args"][0] for m in received if m["name"] == "progress"]
    assert all(b["request_id"] == request_id for b in batches)
    finished = [b["counts"]["done"] + b["counts"]["failed"] for b in batches]
    assert finished == sorted(finished) and finished[-1] == 7
    states = {}
    for b in batches:
        for image_id, image in b["images"].items():
            states[image_id] = image["state"]
    assert sorted(states.values()) == ["done"] * 6 + ["failed"]
    assert batches[-1]["state"] == "completed_with_errors"
    # Coalesced: the relay sends a room at most one batch per interval, however many events come
    # (here 15: seven images processing, seven ending, the request finishing).
    assert len(batches) <= 1 + listened / RELAY_INTERVAL, (len(batches), listened)


def test_joining_an_unknown_or_malformed_request_is_an_error_event(live_app, live_client):
    app, client = live_app, live_client
    sio = socketio.test_client(app, flask_test_client=client)
    sio.emit("join", {"request_id": "not-a-uuid"})
    sio.emit("join", {"request_id": "00000000-0000-4000-8000-000000000000"})
    errors = [m["args"][0]["error"] for m in sio.get_received() if m["name"] == "error"]
    sio.disconnect()
    assert errors == ["invalid_request_id", "request_not_found"]


def test_a_late_joiner_gets_the_finished_state_at_once(live_app, live_client, inprocess_worker, image_server):
    app, client = live_app, live_client
    request_id = _upload(client, image_server, ["photo2.jpg"])
    wait_until(
        lambda: client.get(f"/status/{request_id}").get_json()["state"] == "completed",
        30,
        message=f"request {request_id} to complete",
    )
    sio = socketio.test_client(app, flask_test_client=client)
    sio.emit("join", {"request_id": request_id})
    [snapshot] = [m["args"][0] for m in sio.get_received() if m["name"] == "snapshot"]
    sio.disconnect()
    assert snapshot["state"] == "completed" and snapshot["counts"]["done"] == 1
    assert next(iter(snapshot["images"].values()))["state"] == "done"


# --- with API tokens: who may connect, and which rooms they may join ----------------------------
# A real `python -m pixshift` and the python-socketio client over a WebSocket, as a browser connects.

TOKENS = ("token-alice", "token-bob")


@pytest.fixture(scope="module")
def token_stack(tmp_path_factory):
    from harness.livestack import Stack

    with Stack(
        tmp_path_factory.mktemp("realtime-tokens"),
        {"PIXSHIFT_API_TOKENS": ",".join(TOKENS)},
        separate_consumer=False,
        workers=2,
    ) as stack:
        yield stack


def _session_cookie(stack, token: str | None) -> str:
    """The cookie a browser holds after the login page, and after logging in with ``token`` if given."""
    import re

    import requests

    browser = requests.Session()
    page = browser.get(stack.url("/login"), headers={"Accept": "text/html"}, timeout=10)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
    if token:
        logged_in = browser.post(
            stack.url("/login"), data={"csrf_token": csrf, "token": token}, allow_redirects=False, timeout=10
        )
        assert logged_in.status_code == 303, logged_in.text
    return "; ".join(f"{c.name}={c.value}" for c in browser.cookies)


class Browser:
    """A python-socketio client over a WebSocket, recording what the server sends it."""

    def __init__(self, stack, cookie: str | None) -> None:
        import threading

        import socketio as socketio_client

        self.received: list[tuple[str, dict]] = []
        self.refusal: dict | None = None
        self._answered = threading.Event()
        self._arrived = threading.Condition()
        self.client = socketio_client.Client(reconnection=False)
        self.client.on("connect", self._answered.set)
        self.client.on("connect_error", self._refused)
        for name in ("snapshot", "progress", "error"):
            self.client.on(name, lambda data, name=name: self._record(name, data))
        # wait=False: a refusal arrives as connect_error, without the client's own disconnect (below).
        self.client.connect(
            stack.base_url, headers={"Cookie": cookie} if cookie else {}, transports=["websocket"], wait=False
        )
        assert self._answered.wait(10), "the server never answered the Socket.IO connect"

    def _refused(self, data) -> None:
        self.refusal = data
        self._answered.set()

    def _record(self, name: str, data: dict) -> None:
        with self._arrived:
            self.received.append((name, data))
            self._arrived.notify_all()

    def wait_for(self, predicate, timeout: float = 30) -> list[tuple[str, dict]]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: any(predicate(n, d) for n, d in self.received), timeout):
                raise AssertionError(f"nothing matched within {timeout} s; received {self.received}")
            return list(self.received)

    def close(self) -> None:
        """In the background: after the server's WebSocket close frame, which the client's reader
        consumes, the client waits 3 s for another one before it gives up."""
        import threading

        threading.Thread(target=self.client.disconnect, daemon=True).start()


def _upload_as(stack, token: str, server, paths: list[str]) -> str:
    csv = "Serial Number,Product Name,Input Image URLs\n" + "".join(
        f"{n},P{n},{server.url(p)}\n" for n, p in enumerate(paths, start=1)
    )
    response = stack.session.post(
        stack.url("/upload"),
        files={"file": ("p.csv", csv.encode(), "text/csv")},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response.json()["request_id"]


def test_with_tokens_socketio_refuses_a_browser_that_has_not_logged_in(token_stack):
    """Progress names request ids and image states: only a logged-in browser may connect. A session
    that only visited the login page is not logged in."""
    for cookie in (None, _session_cookie(token_stack, None)):
        refused = Browser(token_stack, cookie)
        refused.close()
        assert refused.refusal == {"message": "Connection rejected by server"}
    accepted = Browser(token_stack, _session_cookie(token_stack, TOKENS[0]))
    accepted.close()
    assert accepted.refusal is None


def test_with_tokens_a_browser_joins_only_the_rooms_of_its_own_requests(token_stack, image_server):
    """Joining another token's request answers exactly as for an id that does not exist, and puts
    the browser in no room: it gets no snapshot and none of that request's progress."""
    alice_request = _upload_as(token_stack, TOKENS[0], image_server, ["slow/photo1.jpg?delay=0.5", "photo2.jpg"])
    bob_request = _upload_as(token_stack, TOKENS[1], image_server, ["photo3.jpg"])
    alice = Browser(token_stack, _session_cookie(token_stack, TOKENS[0]))
    bob = Browser(token_stack, _session_cookie(token_stack, TOKENS[1]))
    assert alice.refusal is None and bob.refusal is None
    try:
        alice.client.emit("join", {"request_id": alice_request})
        bob.client.emit("join", {"request_id": alice_request})
        bob.client.emit("join", {"request_id": bob_request})
        bob.wait_for(lambda name, data: name == "snapshot")
        bob.wait_for(lambda name, data: name == "error")  # handlers run concurrently: either may come first
        seen_by_alice = alice.wait_for(
            lambda name, data: data.get("request_id") == alice_request and data.get("state") == "completed"
        )
        seen_by_bob = list(bob.received)
    finally:
        alice.close()
        bob.close()
    assert [d["request_id"] for n, d in seen_by_alice if n == "snapshot"] == [alice_request]
    assert [d for n, d in seen_by_bob if n == "error"] == [{"error": "request_not_found"}]
    assert [d["request_id"] for n, d in seen_by_bob if n == "snapshot"] == [bob_request]
    assert all(d["request_id"] != alice_request for n, d in seen_by_bob if n == "progress")
