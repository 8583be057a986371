"""The per-host cap: a host's downloads beyond the limit wait, unclaimed and without a thread, in
first-come order, and each freed slot hands one of them back."""

from __future__ import annotations

import pytest

from pixshift.host_slots import HostSlots, host_of


def test_beyond_the_limit_images_park_and_each_freed_slot_hands_back_the_oldest():
    slots = HostSlots(2)
    assert slots.try_acquire("a.example", 1) and slots.try_acquire("a.example", 2)
    assert not slots.try_acquire("a.example", 3) and not slots.try_acquire("a.example", 4)
    assert slots.try_acquire("b.example", 5)  # another host is not held up
    assert slots.parked() == 2
    assert slots.release("a.example") == 3
    assert slots.try_acquire("a.example", 3)
    assert slots.release("a.example") == 4
    assert slots.release("a.example") is None  # 4 was handed back, not yet here
    assert slots.try_acquire("a.example", 4)
    assert slots.release("a.example") is None and slots.release("b.example") is None
    assert slots.parked() == 0


def test_a_handed_back_image_that_loses_the_race_is_first_in_line_again():
    slots = HostSlots(1)
    assert slots.try_acquire("h", 1)
    assert not slots.try_acquire("h", 2) and not slots.try_acquire("h", 3)
    assert slots.release("h") == 2
    assert slots.try_acquire("h", 9)  # a new image took the free slot before 2 came back
    assert not slots.try_acquire("h", 2)
    assert slots.release("h") == 2  # ahead of 3, which came after it


def test_an_image_enqueued_twice_parks_once():
    slots = HostSlots(1)
    assert slots.try_acquire("h", 1)
    assert not slots.try_acquire("h", 2) and not slots.try_acquire("h", 2)
    assert slots.parked() == 1


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
