"""One bad peer costs only itself, in a real ``python -m pixshift``: an image host and a webhook
receiver that trickle their answers a byte at a time are cut at their deadlines, while another
request, on another host, starts and finishes at its own pace and /status stays quick. The cap
per host holds across consumer processes, and a host that answers 429 is left alone for its
Retry-After while other hosts flow."""

from __future__ import annotations

import contextlib
import math
import threading
import time

import pytest
from csv_files import csv_text, numbered
from services import scaleout_services
from trickler import Trickler

from harness.imageserver import ImageServer
from harness.livestack import Stack, wait_until

DOWNLOAD_TIMEOUT = 4.0


def csv_of(urls_per_product: list[list[str]]) -> str:
    return csv_text(numbered(urls_per_product, name="P{}"))


class FirstWave:
    """When the first downloads from a stalling host ended: the first moment (sampled every 2 ms)
    it holds fewer than two connections or has accepted a third; infinity while they last."""

    def __init__(self, host: Trickler) -> None:
        self.host = host
        self.ended = math.inf
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.002):
            if self.host.open < 2 or self.host.accepted > 2:
                self.ended = time.monotonic()
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.ended


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

        first_wave = FirstWave(host)
        uploaded = time.monotonic()
        healthy = stack.upload(csv_of([[image_server.url("photo1.jpg")]]))
        healthy_id = healthy.json()["request_id"]
        downloaded = wait_until(
            lambda: min((t for t, path in image_server.arrivals if t > uploaded and path == "/photo1.jpg"), default=0),
            30,
            message="the healthy image's download",
        )
        polls = []
        for _ in range(10):
            t0 = time.monotonic()
            stack.status(stalled_id)
            polls.append(time.monotonic() - t0)
        polled = time.monotonic()
        # Both before any stalled download ended (cut at its deadline): the healthy image had a worker
        # thread while the stalled images held the host's two slots, and /status answered meanwhile.
        ended = first_wave.stop()
        assert downloaded < ended, f"the healthy image waited behind the stalled host ({ended - downloaded:.2f} s)"
        assert polled < ended, "the polls waited behind the stalled host"
        assert max(polls) < 1.0, polls  # quick: a poll takes milliseconds, the deadline is 4 s
        assert stack.wait_finished(healthy_id, timeout=60)["state"] == "completed"

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

        # Long before the downloads' own deadline (30 s) could end them.
        wait_until(lost, 20, message="the sweep to reclaim the expired leases")


@pytest.mark.scaleout
def test_the_per_host_cap_holds_across_two_consumer_processes(tmp_path):
    """Two huey_consumer processes with 8 threads each, 30 slow images on one host, a cap of 3: the
    host never sees more than 3 downloads at once (a cap per process would let 6 through)."""
    cap, images = 3, 30
    with ImageServer() as host, scaleout_services() as env:
        with Stack(tmp_path, {**env, "PIXSHIFT_HOST_CONCURRENCY": str(cap)}, separate_consumer=True) as stack:
            stack.start_consumer("worker-2")
            for name in ("worker-1", "worker-2"):
                wait_until(lambda name=name: "consumer started" in log_of(stack, name), 30, message=f"{name} up")
            urls = [[host.url(f"slow/photo1.jpg?delay=0.4&n={n}")] for n in range(images)]
            request_id = stack.upload(csv_of(urls)).json()["request_id"]
            doc = stack.wait_finished(request_id, timeout=120)
            assert doc["state"] == "completed", doc
            assert host.hits["/slow/photo1.jpg"] == images  # each downloaded once
            assert host.max_waiting == cap, f"peak {host.max_waiting} downloads at once with a cap of {cap}"
            done = {name: log_of(stack, name).count("done: ") for name in ("worker-1", "worker-2")}
            assert sum(done.values()) == images and all(done.values()), done  # both processes downloaded


@pytest.mark.parametrize("deployment", ["embedded", pytest.param("scaleout", marks=pytest.mark.scaleout)])
def test_a_host_answering_429_gets_nothing_during_its_retry_after_while_other_hosts_flow(tmp_path, deployment):
    """Each of 6 images on the throttling host gets one 429 with Retry-After: 2, then its image.
    After every 429 the host (not just that image) gets no request for 2 s; meanwhile a request on
    another host (another name of the loopback) starts and finishes; the 429'd images end done."""
    retry_after, cap = 2.0, 2
    # Worker threads at the machine's priority: niced (the default, 10) beside un-niced work on a busy
    # machine, they got a tenth of a core and took 3 s to start the other host's downloads, longer
    # than the pause they are to fall in. What is under test is the pause, not the priority.
    env = {"PIXSHIFT_HOST_CONCURRENCY": str(cap), "PIXSHIFT_MAX_ATTEMPTS": "3", "PIXSHIFT_WORKER_NICE": "0"}
    with contextlib.ExitStack() as resources:
        if deployment == "scaleout":
            env.update(resources.enter_context(scaleout_services()))
        throttling, other = resources.enter_context(ImageServer()), resources.enter_context(ImageServer())
        stack = resources.enter_context(Stack(tmp_path, env, separate_consumer=deployment == "scaleout"))
        if deployment == "scaleout":
            stack.start_consumer("worker-2")  # the pause must hold in every process
        urls = [[throttling.url(f"throttle/1/{n}/photo1.jpg?retry_after={retry_after:g}")] for n in range(6)]
        throttled_id = stack.upload(csv_of(urls)).json()["request_id"]
        wait_until(lambda: throttling.throttled_at, 30, message="the first 429")

        elsewhere = [[f"http://localhost:{other.port}/photo2.jpg?n={n}"] for n in range(3)]
        elsewhere_id = stack.upload(csv_of(elsewhere)).json()["request_id"]
        assert stack.wait_finished(elsewhere_id, timeout=60)["state"] == "completed"

        doc = stack.wait_finished(throttled_id, timeout=60)
        assert doc["state"] == "completed", doc  # the 429'd images were retried, and are done
        paths = {path for _, path in throttling.arrivals}
        assert len(paths) == 6 and all(throttling.hits[p] == 2 for p in paths), throttling.hits

        # Downloads sent before the 429 reached PixShift may still land (at most the cap - 1 others
        # holding a slot then); nothing else until Retry-After has passed, whichever image asks.
        arrivals = sorted(t for t, _ in throttling.arrivals)
        for t429 in throttling.throttled_at:
            during = [round(t - t429, 2) for t in arrivals if t429 < t < t429 + retry_after - 0.05]
            assert len(during) <= cap - 1, f"requests {during} s after a 429 asking for {retry_after:g} s"
        # The other host did not wait for the pause: its downloads all came before the throttling host
        # was asked again after its first 429.
        first = throttling.throttled_at[0]
        resumed = min(t for t in arrivals if t >= first + retry_after - 0.05)
        fetched_elsewhere = sorted(t for t, _ in other.arrivals)
        print(f"first 429 -> next request to that host: {resumed - first:.2f} s (asked {retry_after:g})")
        print(f"429s at {[round(t - first, 2) for t in throttling.throttled_at]} s after the first")
        print(f"requests to that host at {[round(t - first, 2) for t in arrivals]} s after the first 429")
        print(f"other host's downloads came {[round(t - first, 2) for t in fetched_elsewhere]} s after the first 429")
        assert len(fetched_elsewhere) >= 3 and fetched_elsewhere[-1] < resumed, (
            "the other host waited behind the paused one"
        )


def log_of(stack: Stack, name: str) -> str:
    path = stack.tmp_path / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""
