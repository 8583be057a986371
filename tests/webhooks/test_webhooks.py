"""Webhooks against real receivers on loopback, verified with the `standardwebhooks` package,
with the embedded default's real Huey consumer threads doing the deliveries."""

from __future__ import annotations

import io
import os
import socket
import time

import pytest
from webhook_receiver import Receiver

from harness.livestack import wait_until

SECRET = os.environ["PIXSHIFT_WEBHOOK_SECRET"]


def upload(client, server, paths: list[str], webhook_url: str | None = None) -> str:
    csv = "Serial Number,Product Name,Input Image URLs\n" + "".join(
        f"{n},Product {n},{server.url(p)}\n" for n, p in enumerate(paths, start=1)
    )
    data = {"file": (io.BytesIO(csv.encode()), "p.csv")}
    if webhook_url:
        data["webhook_url"] = webhook_url
    response = client.post("/upload", data=data)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["request_id"]


def deliveries(client, request_id: str) -> list[dict]:
    return client.get(f"/status/{request_id}").get_json()["webhooks"]


def wait_delivery(client, request_id: str, predicate, timeout: float = 30) -> dict:
    return wait_until(
        lambda: next((d for d in deliveries(client, request_id) if predicate(d)), None),
        timeout,
        interval=0.05,
        message="the webhook delivery",
    )


def test_signed_event_delivered_on_the_third_attempt_with_the_same_id(client, inprocess_worker, image_server):
    with Receiver(SECRET, statuses=[500, 500]) as receiver:
        request_id = upload(client, image_server, ["photo1.jpg", "missing/a.jpg"], receiver.url)
        calls = receiver.wait_for(3)
        delivery = wait_delivery(client, request_id, lambda d: d["state"] == "delivered")
    assert [c["status"] for c in calls] == [500, 500, 200]
    assert len({c["headers"]["webhook-id"] for c in calls}) == 1
    assert calls[0]["headers"]["webhook-id"] == delivery["event_id"]
    body = calls[-1]["verified"]
    assert body["type"] == "request.completed"
    assert body["data"]["request_id"] == request_id
    assert body["data"]["state"] == "completed_with_errors"
    assert body["data"]["counts"]["done"] == 1 and body["data"]["counts"]["failed"] == 1
    assert body["data"]["status_url"].endswith(f"/status/{request_id}")
    assert body["data"]["output_csv_url"].endswith(f"/requests/{request_id}/output.csv")
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert all(a["latency_ms"] >= 0 and a["at"] for a in delivery["attempts"])


def test_receiver_down_then_up_still_gets_the_event(client, inprocess_worker, image_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    request_id = upload(client, image_server, ["photo2.jpg"], url)
    wait_delivery(client, request_id, lambda d: len(d["attempts"]) >= 2)
    first = deliveries(client, request_id)[0]["attempts"][0]
    assert first["status_code"] is None and first["error"].startswith("connection_failed")
    with Receiver(SECRET, port=port) as receiver:
        receiver.wait_for(1)
        delivery = wait_delivery(client, request_id, lambda d: d["state"] == "delivered")
    assert delivery["attempts"][-1]["status_code"] == 200


def test_a_slow_receiver_is_a_failed_attempt_not_a_hung_worker(client, inprocess_worker, image_server):
    with Receiver(SECRET, delay=3) as receiver:  # the configured timeout is 1 s
        request_id = upload(client, image_server, ["photo3.jpg"], receiver.url)
        wait_delivery(client, request_id, lambda d: len(d["attempts"]) >= 1)
        attempt = deliveries(client, request_id)[0]["attempts"][0]
        assert attempt["status_code"] is None and attempt["error"].startswith("timeout")
        assert attempt["latency_ms"] < 2500
        receiver.delay = 0
        wait_delivery(client, request_id, lambda d: d["state"] == "delivered")


def test_410_disables_a_registered_endpoint(client, inprocess_worker, image_server):
    with Receiver(None, statuses=[410]) as receiver:
        created = client.post("/api/webhooks", json={"url": receiver.url, "description": "shop"})
        assert created.status_code == 201
        endpoint = created.get_json()
        assert endpoint["secret"].startswith("whsec_") and endpoint["enabled"]
        request_id = upload(client, image_server, ["photo1.jpg"])
        delivery = wait_delivery(
            client, request_id, lambda d: d["endpoint_id"] == endpoint["id"] and d["state"] == "failed"
        )
        assert "410" in delivery["last_error"] and len(delivery["attempts"]) == 1
        listed = {e["id"]: e for e in client.get("/api/webhooks").get_json()["endpoints"]}
        assert listed[endpoint["id"]]["enabled"] is False
        assert "secret" not in listed[endpoint["id"]]
        second = upload(client, image_server, ["photo1.jpg"])
        wait_until(lambda: client.get(f"/status/{second}").get_json()["links"]["output_csv"], 30)
        assert all(d["endpoint_id"] != endpoint["id"] for d in deliveries(client, second))
    assert len(receiver.received) == 1
    assert client.delete(f"/api/webhooks/{endpoint['id']}").status_code == 204
    assert endpoint["id"] not in {e["id"] for e in client.get("/api/webhooks").get_json()["endpoints"]}


def test_registered_endpoint_signs_with_its_own_secret_and_resend_keeps_the_id(client, inprocess_worker, image_server):
    with Receiver(None) as receiver:
        endpoint = client.post("/api/webhooks", json={"url": receiver.url}).get_json()
        receiver.secret = endpoint["secret"]
        request_id = upload(client, image_server, ["missing/x.jpg"])
        first = receiver.wait_for(1)[0]
        assert first["verified"]["type"] == "request.failed"
        delivery = wait_delivery(
            client, request_id, lambda d: d["endpoint_id"] == endpoint["id"] and d["state"] == "delivered"
        )
        resent = client.post(f"/api/deliveries/{delivery['id']}/resend")
        assert resent.status_code == 202
        second = receiver.wait_for(2)[1]
    assert second["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    client.delete(f"/api/webhooks/{endpoint['id']}")


@pytest.mark.parametrize(
    "body, code",
    [
        ({}, "invalid_body"),
        ({"url": "ftp://example.com/hook"}, "invalid_webhook_url"),
        ({"url": "http://169.254.169.254/latest"}, "invalid_webhook_url"),
    ],
)
def test_webhook_registration_is_validated(client, body, code, app):
    from pixshift import create_app

    strict = create_app({"TESTING": True, "ALLOW_PRIVATE_URLS": False}).test_client()
    response = strict.post("/api/webhooks", json=body)
    assert response.status_code == 400 and response.get_json()["error"] == code


def test_signature_matches_the_standard(app):
    import datetime

    from standardwebhooks import Webhook

    from pixshift.webhooks.signing import sign

    ts = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    assert sign(SECRET, "msg_1", int(ts.timestamp()), b'{"a":1}') == Webhook(SECRET).sign("msg_1", ts, '{"a":1}')


# --- a hostile receiver costs only its own delivery --------------------------------------------


def _delivery_to(url: str) -> int:
    """A finished request with one pending delivery to ``url``, written as the pipeline writes it."""
    import uuid

    from pixshift.db.extensions import db
    from pixshift.db.models import Request, utcnow
    from pixshift.webhooks.outbox import create_event

    req = Request(id=str(uuid.uuid4()), state="completed", webhook_url=url, product_count=0, finished_at=utcnow())
    db.session.add(req)
    db.session.flush()
    (delivery_id,) = create_event(req, {"total": 0, "done": 0, "failed": 0}, "http://127.0.0.1")
    db.session.commit()
    return delivery_id


def test_a_trickling_receiver_is_cut_at_the_timeout_with_no_connection_held(any_db_app):
    """Before: the POST had no total deadline and kept a database connection checked out throughout."""
    from pixshift.db.extensions import db
    from pixshift.db.models import WebhookDelivery
    from pixshift.webhooks.delivery import WebhookSettings, attempt_delivery

    rt = any_db_app.extensions["pixshift"]
    settings = WebhookSettings(secret=SECRET, timeout=0.8, schedule=(60,))
    with any_db_app.app_context():
        engine = db.engine
        with Receiver(SECRET, trickle=True, while_answering=lambda: engine.pool.checkedout()) as receiver:
            delivery_id = _delivery_to(receiver.url)
            started = time.monotonic()
            retry_in = attempt_delivery(delivery_id, settings, rt.fetch_policy)
            elapsed = time.monotonic() - started
        assert receiver.observed == [0]  # while the receiver held the POST, no connection was checked out
        assert 0.75 <= elapsed < 2.0 and retry_in is not None
        delivery = db.session.get(WebhookDelivery, delivery_id)
        assert delivery.attempts == 1 and delivery.state == "pending" and delivery.lease_expires_at is None
        assert delivery.attempt_log[0].error.startswith("timeout")
        db.session.commit()


def test_no_second_attempt_starts_beside_a_running_one_nor_past_the_schedule(any_db_app):
    """The sweep re-enqueues overdue deliveries; a claimed attempt's lease keeps it to one in flight,
    and a delivery whose schedule is used up is never claimed again, however often it is enqueued."""
    import threading
    from datetime import timedelta

    from sqlalchemy import update

    from pixshift.db.extensions import db
    from pixshift.db.models import WebhookDelivery, utcnow
    from pixshift.webhooks.delivery import WebhookSettings, attempt_delivery
    from pixshift.webhooks.outbox import overdue_deliveries

    rt = any_db_app.extensions["pixshift"]
    settings = WebhookSettings(secret=SECRET, timeout=1.5, schedule=(0, 0))
    with any_db_app.app_context():
        with Receiver(SECRET, trickle=True) as receiver:
            delivery_id = _delivery_to(receiver.url)

            def attempt():
                with any_db_app.app_context():
                    attempt_delivery(delivery_id, settings, rt.fetch_policy)

            first = threading.Thread(target=attempt)
            first.start()
            receiver.wait_for(1, timeout=5)
            # The sweep looks while the first attempt runs, even well past the attempt's deadline: not
            # overdue; and a duplicate task claims nothing.
            later = utcnow() + timedelta(seconds=settings.timeout + 30)
            assert delivery_id not in overdue_deliveries(later, grace=0)
            assert attempt_delivery(delivery_id, settings, rt.fetch_policy) is None
            first.join(5)
            assert len(receiver.received) == 1
            for _ in range(5):  # duplicated tasks, as many as you like
                attempt_delivery(delivery_id, settings, rt.fetch_policy)
            # A lease from a worker that died long ago is no reason to exceed the schedule either.
            db.session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id)
                .values(state="pending", lease_expires_at=utcnow() - timedelta(seconds=1))
            )
            db.session.commit()
            assert attempt_delivery(delivery_id, settings, rt.fetch_policy) is None
        delivery = db.session.get(WebhookDelivery, delivery_id)
        assert delivery.attempts == len(settings.schedule) + 1 == len(receiver.received)
        db.session.commit()


# --- giving up, and endpoints that went away ---------------------------------------------------


def test_a_receiver_that_always_fails_is_given_up_after_the_schedule(app, client, inprocess_worker, image_server):
    """One attempt, then one per slot of PIXSHIFT_WEBHOOK_RETRY_SCHEDULE, then the delivery fails
    saying so: a receiver that never recovers is not retried for ever."""
    attempts = len(app.extensions["pixshift"].webhooks.schedule) + 1
    with Receiver(SECRET, statuses=[500] * (attempts + 3)) as receiver:
        request_id = upload(client, image_server, ["photo1.jpg"], receiver.url)
        delivery = wait_delivery(client, request_id, lambda d: d["url"] == receiver.url and d["state"] == "failed")
        calls = list(receiver.received)  # a failed delivery is never claimed again: these are all
    assert delivery["last_error"] == f"the receiver answered 500; gave up after {attempts} attempts"
    assert [a["status_code"] for a in delivery["attempts"]] == [500] * attempts
    assert delivery["next_attempt_at"] is None and delivery["delivered_at"] is None
    assert len(calls) == attempts
    assert {c["headers"]["webhook-id"] for c in calls} == {delivery["event_id"]}


def _deliveries_of_a_finished_request() -> dict[int | None, int]:
    """A finished request's event, written as the pipeline writes it: its delivery ids by endpoint id."""
    import uuid

    from pixshift.db.extensions import db
    from pixshift.db.models import Request, WebhookDelivery, utcnow
    from pixshift.webhooks.outbox import create_event

    req = Request(id=str(uuid.uuid4()), state="completed", product_count=0, finished_at=utcnow())
    db.session.add(req)
    db.session.flush()
    delivery_ids = create_event(req, {"total": 0, "done": 0, "failed": 0}, "http://127.0.0.1")
    db.session.commit()
    return {db.session.get(WebhookDelivery, i).endpoint_id: i for i in delivery_ids}


@pytest.mark.parametrize("gone", ["deleted", "disabled by a 410"])
def test_a_delivery_to_an_endpoint_gone_before_its_attempt_fails_without_calling_it(any_db_app, gone):
    """Deliveries are written when a request finishes, to every endpoint enabled then. An endpoint
    deleted since, or disabled by its 410 to an earlier event, must not be called for them."""
    from pixshift.db.extensions import db
    from pixshift.db.models import WebhookDelivery
    from pixshift.webhooks.delivery import WebhookSettings, attempt_delivery

    rt = any_db_app.extensions["pixshift"]
    settings = WebhookSettings(secret=SECRET, timeout=1, schedule=(0, 0))
    client = any_db_app.test_client()
    with Receiver(None, statuses=[410]) as receiver:
        endpoint = client.post("/api/webhooks", json={"url": receiver.url}).get_json()
        with any_db_app.app_context():
            earlier = _deliveries_of_a_finished_request()[endpoint["id"]]
            later = _deliveries_of_a_finished_request()[endpoint["id"]]
            if gone == "deleted":
                assert client.delete(f"/api/webhooks/{endpoint['id']}").status_code == 204
            else:
                assert attempt_delivery(earlier, settings, rt.fetch_policy) is None
                assert [c["status"] for c in receiver.received] == [410]
                listed = {e["id"]: e for e in client.get("/api/webhooks").get_json()["endpoints"]}
                assert listed[endpoint["id"]]["enabled"] is False
            called = len(receiver.received)

            assert attempt_delivery(later, settings, rt.fetch_policy) is None
            delivery = db.session.get(WebhookDelivery, later)
            assert (delivery.state, delivery.last_error) == ("failed", "the endpoint is disabled or deleted")
            assert delivery.attempt_log == [] and delivery.delivered_at is None  # no request was made
            db.session.commit()
        assert len(receiver.received) == called
    client.delete(f"/api/webhooks/{endpoint['id']}")
