"""The per-host cap and pauses: a host's downloads beyond the limit, or while it asked us to wait,
park unclaimed and without a thread in first-come order, and each freed slot (or the pause's end)
hands them back. Both kinds: in memory (embedded) and in the real Redis (scale-out), where two
instances stand for two consumer processes."""

from __future__ import annotations

import secrets
import time

import pytest
from services import redis_url

from harness.livestack import wait_until
from pixshift.net.host_slots import BACKOFF_CAP, HostSlots, RedisHostSlots, host_of


@pytest.fixture()
def redis_client():
    import redis

    client = redis.Redis.from_url(redis_url())
    prefix = "pixshift_test_slots_" + secrets.token_hex(4)
    yield client, prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.scaleout)])
def make_slots(request):
    """Builds gates of one kind; on Redis, every gate built shares the same keys (one deployment)."""
    if request.param == "memory":
        return lambda limit, **kw: HostSlots(limit, **{k: v for k, v in kw.items() if k != "lease_seconds"})
    client, prefix = request.getfixturevalue("redis_client")
    return lambda limit, lease_seconds=60.0, **kw: RedisHostSlots(client, prefix, limit, lease_seconds, **kw)


def test_beyond_the_limit_images_park_and_each_freed_slot_hands_back_the_oldest(make_slots):
    slots = make_slots(2)
    t1, t2 = slots.try_acquire("a.example", 1), slots.try_acquire("a.example", 2)
    assert t1 and t2 and t1 != t2
    assert slots.try_acquire("a.example", 3) is None and slots.try_acquire("a.example", 4) is None
    t5 = slots.try_acquire("b.example", 5)  # another host is not held up
    assert t5
    assert slots.parked() == 2
    assert slots.release("a.example", t1) == 3
    t3 = slots.try_acquire("a.example", 3)
    assert t3
    assert slots.release("a.example", t2) == 4
    assert slots.release("a.example", t3) is None  # 4 was handed back, not yet here
    t4 = slots.try_acquire("a.example", 4)
    assert t4
    assert slots.release("a.example", t4) is None and slots.release("b.example", t5) is None
    assert slots.parked() == 0


def test_a_handed_back_image_that_loses_the_race_is_first_in_line_again(make_slots):
    slots = make_slots(1)
    t1 = slots.try_acquire("h", 1)
    assert slots.try_acquire("h", 2) is None
    time.sleep(0.002)  # Redis orders parked images by the millisecond they came
    assert slots.try_acquire("h", 3) is None
    assert slots.release("h", t1) == 2
    t9 = slots.try_acquire("h", 9)  # a new image took the free slot before 2 came back
    assert t9
    assert slots.try_acquire("h", 2) is None
    assert slots.release("h", t9) == 2  # ahead of 3, which came after it


def test_an_image_enqueued_twice_parks_once(make_slots):
    slots = make_slots(1)
    assert slots.try_acquire("h", 1)
    assert slots.try_acquire("h", 2) is None and slots.try_acquire("h", 2) is None
    assert slots.parked() == 1


def test_a_paused_host_starts_nothing_and_wakes_its_parked_images_up_to_the_cap(make_slots):
    slots = make_slots(2)
    t1 = slots.try_acquire("h", 1)
    assert 0.25 < slots.pause("h", 0.3) <= 0.3
    assert slots.try_acquire("h", 2) is None  # a slot is free, but the host asked us to wait
    assert slots.try_acquire("h", 3) is None and slots.try_acquire("h", 4) is None
    assert slots.try_acquire("other", 5)  # other hosts flow on
    assert slots.release("h", t1) is None  # no hand-back during the pause: the wake does it
    images, left = slots.wake("h")
    assert images == [] and 0 < left <= 0.3
    assert 0 < slots.pause("h", 0.1) <= 0.3  # a shorter pause does not cut the longer one
    images = wait_until(lambda: slots.wake("h")[0], 5, message="the pause to end")
    assert images == [2, 3]  # two free slots: the first two in line
    assert slots.try_acquire("h", 2) and slots.try_acquire("h", 3)
    assert slots.wake("h") == ([], 0.0)  # no free slot for 4 yet


def test_without_retry_after_the_backoff_doubles_per_host_until_a_success(make_slots):
    slots = make_slots(1, max_pause=120.0)
    assert [slots.pause("h", None) for _ in range(3)] == [1.0, 2.0, 4.0]
    assert slots.pause("other", None) == 1.0  # per host
    assert slots.pause("h", 300.0) == 120.0  # a Retry-After is capped at max_pause
    for _ in range(10):
        slots.pause("big", None)
    assert slots.pause("big", None) == BACKOFF_CAP
    token = slots.try_acquire("z", 1)
    assert token and slots.pause("z", None) == 1.0 and slots.pause("z", None) == 2.0
    slots.release("z", token, succeeded=True)  # a success starts the backoff again at 1 s...
    assert 1.5 < slots.pause("z", 0) <= 2.0  # (a zero Retry-After leaves the pause in force)
    assert slots.pause("z", None) <= 2.0  # ...so the next step (1 s) does not extend it


@pytest.mark.scaleout
def test_redis_a_dead_holders_slot_expires_after_its_lease(redis_client):
    client, prefix = redis_client
    crashed = RedisHostSlots(client, prefix, 1, lease_seconds=0.5)
    alive = RedisHostSlots(client, prefix, 1, lease_seconds=0.5)
    assert crashed.try_acquire("h", 1)  # ...and its process dies without releasing
    started = time.monotonic()
    assert alive.try_acquire("h", 2) is None
    token = wait_until(lambda: alive.try_acquire("h", 2), 5, interval=0.02, message="the lease to expire")
    assert 0.4 < time.monotonic() - started < 2
    assert alive.release("h", token) is None
    assert alive.parked() == 0


@pytest.mark.scaleout
def test_redis_a_release_in_one_process_hands_back_what_another_parked(redis_client):
    client, prefix = redis_client
    one, two = RedisHostSlots(client, prefix, 1, 60), RedisHostSlots(client, prefix, 1, 60)
    token = one.try_acquire("cdn.example", 1)
    assert token
    assert two.try_acquire("cdn.example", 7) is None  # the cap is shared: process two parks
    assert one.parked() == 1  # ...and process one sees it
    assert one.release("cdn.example", token) == 7
    # Pauses are shared too: one pauses the host, two starts nothing, and either can wake it.
    two_token = two.try_acquire("cdn.example", 7)
    assert two_token and one.pause("cdn.example", 0.2) > 0
    assert two.release("cdn.example", two_token) is None
    assert one.try_acquire("cdn.example", 8) is None
    assert wait_until(lambda: two.wake("cdn.example")[0], 5, message="the pause to end") == [8]
    assert -1 not in [client.pttl(k) for k in client.scan_iter(f"{prefix}*")], "every key expires"


@pytest.mark.parametrize(
    "url, host",
    [
        ("https://CDN.Example.com:8443/a.jpg", "cdn.example.com"),
        ("http://cdn.example.com/b.jpg", "cdn.example.com"),
        ("http://[::1]:80/x", "::1"),
        ("http://bad[/x", ""),
    ],
)
def test_host_of_ignores_case_and_port(url, host):
    assert host_of(url) == host
