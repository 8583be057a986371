"""One bad peer costs only itself, in a real ``python -m pixshift``: an image host and a webhook
receiver that trickle their answers a byte at a time are cut at their deadlines, while another
request, on another host, starts and finishes at its own pace and /status stays quick."""

from __future__ import annotations

import time

from trickler import Trickler

from harness.livestack import Stack, wait_until

DOWNLOAD_TIMEOUT = 4.0


def csv_of(urls_per_product: list[list[str]]) -> str:
    rows = "".join(f'{n},P{n},"{", ".join(urls)}"\n' for n, urls in enumerate(urls_per_product, start=1))
    return "Serial Number,Product Name,Input Image URLs\n" + rows


def test_trickling_hosts_and_receivers_cost_only_themselves(tmp_path, image_server):
    env = {
        "PIXSHIFT_DOWNLOAD_TIMEOUT": str(DOWNLOAD_TIMEOUT),
        "PIXSHIFT_READ_TIMEOUT": "2",
        "PIXSHIFT_MAX_ATTEMPTS": "1",
        "PIXSHIFT_HOST_CONCURRENCY": "2",
        "PIXSHIFT_SWEEP_SECONDS": "1",
        "PIXSHIFT_WEBHOOK_TIMEOUT": "1",
        "PIXSHIFT_WEBHOOK_RETRY_SCHEDULE": "0.2",
    }
    with Trickler() as host, Trickler() as receiver, Stack(tmp_path, env, separate_consumer=False, workers=4) as stack:
        # Six images on one stalling host: before, they held all four worker threads (for ever,
        # since each byte came within the read timeout).
        stalled = stack.upload(csv_of([[host.url(f"/{n}.jpg")] for n in range(6)]), webhook_url=receiver.url("/hook"))
        assert stalled.status_code == 202, stalled.text
        stalled_id = stalled.json()["request_id"]
        wait_until(lambda: host.open >= 2, 10, message="downloads from the stalling host")

        started = time.monotonic()
        healthy = stack.upload(csv_of([[image_server.url("photo1.jpg")]]))
        healthy_id = healthy.json()["request_id"]
        doc = stack.wait_finished(healthy_id, timeout=30)
        took = time.monotonic() - started
        assert doc["state"] == "completed"
        assert took < DOWNLOAD_TIMEOUT - 1, f"the healthy request waited {took:.1f} s behind the stalled host"

        polls = []
        for _ in range(10):
            t0 = time.monotonic()
            stack.status(stalled_id)
            polls.append(time.monotonic() - t0)
        assert max(polls) < 1.0, polls

        # Three waves of two, each cut at the deadline (plus a margin for a busy machine).
        doc = stack.wait_finished(stalled_id, timeout=3 * DOWNLOAD_TIMEOUT + 10)
        images = [image for product in doc["items"] for image in product["images"]]
        assert [i["error"]["code"] for i in images] == ["timeout"] * 6
        assert all("longer than 4 s" in i["error"]["message"] for i in images)
        assert host.accepted == 6
        assert host.most_open == 2  # the per-host cap: the other four waited without a thread

        # The receiver trickles too: every attempt is cut at 1 s, two attempts in all (the schedule's one
        # retry), never two at once.
        def delivery_done():
            (delivery,) = stack.status(stalled_id)["webhooks"]
            return delivery if delivery["state"] == "failed" else None

        delivery = wait_until(delivery_done, 20, message="the webhook delivery to give up")
        assert [a["error"].split(":")[0] for a in delivery["attempts"]] == ["timeout", "timeout"]
        assert all(a["latency_ms"] < 2000 for a in delivery["attempts"])
        assert receiver.accepted == 2

        # Nothing is left talking to either peer.
        wait_until(
            lambda: host.open == 0 and receiver.open == 0,
            5,
            message=f"connections closed ({host.open} to the host, {receiver.open} to the receiver)",
        )


def test_the_sweep_runs_while_every_worker_is_busy(tmp_path, image_server):
    """The sweep finishes a request its finishing worker left (here: a webhook whose task was lost
    is found overdue) even while every worker thread is stuck on a stalling host."""
    env = {
        "PIXSHIFT_DOWNLOAD_TIMEOUT": "30",
        "PIXSHIFT_READ_TIMEOUT": "20",
        "PIXSHIFT_MAX_ATTEMPTS": "1",
        "PIXSHIFT_SWEEP_SECONDS": "1",
        "PIXSHIFT_LEASE_SECONDS": "2",
    }
    with Trickler() as host, Stack(tmp_path, env, separate_consumer=False, workers=2) as stack:
        stalled = stack.upload(csv_of([[host.url("/a.jpg")], [host.url("/b.jpg")]])).json()["request_id"]
        wait_until(lambda: host.open >= 2, 10, message="both workers on the stalling host")

        # The lease (2 s) runs out while the downloads go on: only the sweep can notice, and it must not
        # wait for a worker. It hands the images back as worker_lost (queued again, retried later).
        def lost():
            images = [i for p in stack.status(stalled)["items"] for i in p["images"]]
            return all(i["error"] and i["error"]["code"] == "worker_lost" for i in images)

        wait_until(lost, 8, message="the sweep to reclaim the expired leases")
