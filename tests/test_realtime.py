"""Live progress over Socket.IO (Flask-SocketIO's test client): a snapshot on joining, then
coalesced batches while a real consumer processes the images."""
from __future__ import annotations

import io
import time

import pytest

from livestack import wait_until
from pixshift.extensions import socketio
from pixshift.realtime import RELAY_INTERVAL


@pytest.fixture(scope="module")
def live_app(app):
    """An app built here, so Socket.IO is bound to it even if other tests built apps since
    (Flask-SocketIO binds one app per process, as production has). The in-process bus is
    shared by every app in the process, so the session's worker threads reach this relay."""
    from pixshift import create_app
    from pixshift.realtime import start_relay

    live = create_app({"TESTING": True})
    start_relay(live)
    return live


@pytest.fixture()
def live_client(live_app):
    return live_app.test_client()


def _upload(client, server, paths):
    csv = "Serial Number,Product Name,Input Image URLs\n" + "".join(
        f"{n},P{n},{server.url(p)}\n" for n, p in enumerate(paths, start=1))
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
    received = _receive_until(sio, lambda m: m["name"] == "progress" and m["args"][0].get("state") in
                              ("completed", "completed_with_errors"))
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
    wait_until(lambda: client.get(f"/status/{request_id}").get_json()["state"] == "completed", 30,
               message=f"request {request_id} to complete")
    sio = socketio.test_client(app, flask_test_client=client)
    sio.emit("join", {"request_id": request_id})
    [snapshot] = [m["args"][0] for m in sio.get_received() if m["name"] == "snapshot"]
    sio.disconnect()
    assert snapshot["state"] == "completed" and snapshot["counts"]["done"] == 1
    assert list(snapshot["images"].values())[0]["state"] == "done"
