"""How many downloads from one host run at once, whether a host asked us to wait, and who goes next.

A host that stalls every connection would otherwise hold every worker thread until its deadlines
pass, and every other request would wait behind it. With a cap per host, a slow host holds at
most ``limit`` slots; its other images are parked here, holding no thread and no claim (still
``queued`` in the database), and whoever frees a slot hands back the first parked image to be
enqueued again. A host that answers 429 or 503 is paused: no download from it starts until the
pause ends (its ``Retry-After``, or a per-host backoff), and ``wake`` hands its parked images back
then. Scrapy's per-domain concurrency and AutoThrottle do the same for crawlers, and suppliers'
servers see a polite client.

Two implementations, one interface (``HostGate``): ``HostSlots`` in memory, for the embedded
default, where one process is already all processes; ``RedisHostSlots`` for scale-out, where the
cap and the pauses hold across every consumer. Parked images whose hand-back is lost (a process
died) are found by the sweep, like any queued image whose task was lost.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from typing import Protocol
from urllib.parse import urlsplit

import redis

from pixshift.config import MAX_RETRY_AFTER

__all__ = ["BACKOFF_CAP", "BACKOFF_FIRST", "HostGate", "HostSlots", "RedisHostSlots", "host_of"]

# A host that throttles without saying for how long: 1 s, doubling per throttle, at most 60 s; a
# successful download from it starts again at 1 s.
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 60.0


def host_of(url: str) -> str:
    """The politeness key of a URL: its host name, lower-case (every port of a host counts)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


class HostGate(Protocol):
    """Download slots and pauses per host; what ``pipeline.process_image`` needs of either kind."""

    limit: int

    def try_acquire(self, host: str, image_id: int) -> str | None:
        """A slot token for ``image_id``'s download, or None: the image is parked (host full or paused)."""

    def release(self, host: str, token: str, *, succeeded: bool = False) -> int | None:
        """Give the slot back (``succeeded`` ends the host's backoff); returns a parked image to
        enqueue again, if a slot is free and the host is not paused."""

    def pause(self, host: str, retry_after: float | None) -> float:
        """Start no download from ``host`` for ``retry_after`` seconds (capped), or the next backoff
        step when it is None; returns the seconds until the host's pause ends."""

    def wake(self, host: str) -> tuple[list[int], float]:
        """After a pause: (parked images to enqueue again, up to the free slots; 0.0), or, while
        the pause lasts, ([], seconds left)."""

    def parked(self) -> int:
        """Images parked, all hosts (a gauge for tests and logs)."""


class HostSlots:
    """``HostGate`` in this process's memory: at most ``limit`` downloads per host at once; the
    rest wait in first-come order (a handed-back image that lost the race keeps its place)."""

    def __init__(self, limit: int, max_pause: float = MAX_RETRY_AFTER) -> None:
        if limit < 1:
            raise ValueError("the per-host download limit must be at least 1")
        self.limit = limit
        self.max_pause = max_pause
        self._lock = threading.Lock()
        self._busy: defaultdict[str, int] = defaultdict(int)
        self._parked: defaultdict[str, OrderedDict[int, None]] = defaultdict(OrderedDict)
        self._handed_back: set[int] = set()
        self._paused_until: dict[str, float] = {}
        self._throttles: defaultdict[str, int] = defaultdict(int)

    def _paused(self, host: str) -> float:
        """Seconds left of the host's pause (caller holds the lock)."""
        left = self._paused_until.get(host, 0.0) - time.monotonic()
        if left <= 0:
            self._paused_until.pop(host, None)
            return 0.0
        return left

    def try_acquire(self, host: str, image_id: int) -> str | None:
        with self._lock:
            handed_back = image_id in self._handed_back
            self._handed_back.discard(image_id)
            if self._busy[host] < self.limit and not self._paused(host):
                self._busy[host] += 1
                self._parked[host].pop(image_id, None)
                return str(image_id)
            queue = self._parked[host]
            queue[image_id] = None
            if handed_back:  # it waited its turn once already: first in line again
                queue.move_to_end(image_id, last=False)
            return None

    def release(self, host: str, token: str, *, succeeded: bool = False) -> int | None:
        with self._lock:
            self._busy[host] -= 1
            if self._busy[host] <= 0:
                del self._busy[host]
            if succeeded:
                self._throttles.pop(host, None)
            if self._paused(host):
                return None  # wake hands the parked images back when the pause ends
            handed = self._hand_back(host, 1)
            return handed[0] if handed else None

    def pause(self, host: str, retry_after: float | None) -> float:
        with self._lock:
            if retry_after is None:
                self._throttles[host] += 1
                delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (self._throttles[host] - 1))
            else:
                delay = max(0.0, min(retry_after, self.max_pause))
            left = self._paused(host)
            if delay > left:
                self._paused_until[host] = time.monotonic() + delay
                return float(delay)
            return left

    def wake(self, host: str) -> tuple[list[int], float]:
        with self._lock:
            left = self._paused(host)
            if left:
                return [], left
            return self._hand_back(host, self.limit - self._busy.get(host, 0)), 0.0

    def _hand_back(self, host: str, n: int) -> list[int]:
        queue = self._parked.get(host)
        handed: list[int] = []
        while queue and len(handed) < n:
            image_id, _ = queue.popitem(last=False)
            self._handed_back.add(image_id)
            handed.append(image_id)
        if not queue:
            self._parked.pop(host, None)
        return handed

    def parked(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._parked.values())


# --- in Redis, for every process at once ----------------------------------------------------------
# Per host, under "<queue>:host:<host>:": "slots" (a sorted set of slot tokens scored by their
# expiry, ms), "parked" (image ids scored by when they first parked), "handed" (images handed back,
# with their old score, so one that loses the race parks in its old place), "pause" (a key that
# lives as long as the pause) and "throttles" (the backoff's step). Each operation is one Lua
# script, so it is atomic, and time is Redis's clock, the same for every process. A slot whose
# holder died expires after its lease; the keys expire once a host is left alone.

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# Give back up to n parked images (n: a Lua variable), remembering each one's place.
_HAND_BACK = """
local handed = {}
if n > 0 then
  local first = redis.call('ZRANGE', KEYS[2], 0, n - 1, 'WITHSCORES')
  for i = 1, #first, 2 do
    redis.call('ZREM', KEYS[2], first[i])
    redis.call('HSET', KEYS[3], first[i], first[i + 1])
    handed[#handed + 1] = first[i]
  end
  if #handed > 0 then redis.call('EXPIRE', KEYS[3], 86400) end
end
"""
# KEYS: slots parked handed pause; ARGV: limit lease_ms token image_id. Returns 1 (a slot) or 0.
_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('EXISTS', KEYS[4]) == 0 and redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('HDEL', KEYS[3], ARGV[4])
  return 1
end
if not redis.call('ZSCORE', KEYS[2], ARGV[4]) then
  local score = redis.call('HGET', KEYS[3], ARGV[4]) or now
  redis.call('HDEL', KEYS[3], ARGV[4])
  redis.call('ZADD', KEYS[2], score, ARGV[4])
end
redis.call('EXPIRE', KEYS[2], 86400)
return 0
"""
)
# KEYS: slots parked handed pause throttles; ARGV: limit token succeeded. Returns an image id or nil.
_RELEASE = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[2])
if ARGV[3] == '1' then redis.call('DEL', KEYS[5]) end
if redis.call('EXISTS', KEYS[4]) == 1 then return false end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = math.min(1, tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1]))
"""
    + _HAND_BACK
    + """
return handed[1] or false
"""
)
# KEYS: pause throttles; ARGV: delay_ms (-1: backoff) first_ms cap_ms. Returns the pause left, ms.
_PAUSE = """
local delay = tonumber(ARGV[1])
if delay < 0 then
  local step = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], 3600)
  delay = math.min(tonumber(ARGV[3]), tonumber(ARGV[2]) * 2 ^ (step - 1))
end
delay = math.floor(delay)
local left = redis.call('PTTL', KEYS[1])
if delay > left then
  if delay > 0 then redis.call('SET', KEYS[1], '1', 'PX', delay) end
  return delay
end
return left
"""
# KEYS: slots parked handed pause; ARGV: limit. Returns {pause left ms, image ids...}.
_WAKE = (
    _NOW
    + """
local left = redis.call('PTTL', KEYS[4])
if left > 0 then return {left} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
"""
    + _HAND_BACK
    + """
table.insert(handed, 1, 0)
return handed
"""
)


class RedisHostSlots:
    """``HostGate`` in Redis: the cap, the parked images and the pauses are shared by every process
    of the deployment (keys prefixed with ``prefix``, the queue name). A slot lives ``lease_seconds``
    at most, so a crashed process's slots come back on their own."""

    def __init__(
        self, client: redis.Redis, prefix: str, limit: int, lease_seconds: float, max_pause: float = MAX_RETRY_AFTER
    ) -> None:
        if limit < 1:
            raise ValueError("the per-host download limit must be at least 1")
        self.limit = limit
        self.max_pause = max_pause
        self._redis = client
        self._prefix = f"{prefix}:host:"
        self._lease_ms = int(lease_seconds * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._pause = client.register_script(_PAUSE)
        self._wake = client.register_script(_WAKE)

    def _keys(self, host: str, *names: str) -> list[str]:
        return [f"{self._prefix}{host}:{name}" for name in names]

    def try_acquire(self, host: str, image_id: int) -> str | None:
        token = uuid.uuid4().hex
        keys = self._keys(host, "slots", "parked", "handed", "pause")
        got = self._acquire(keys=keys, args=[self.limit, self._lease_ms, token, image_id])
        return token if got == 1 else None

    def release(self, host: str, token: str, *, succeeded: bool = False) -> int | None:
        keys = self._keys(host, "slots", "parked", "handed", "pause", "throttles")
        image_id = self._release(keys=keys, args=[self.limit, token, int(succeeded)])
        return int(image_id) if image_id is not None else None

    def pause(self, host: str, retry_after: float | None) -> float:
        delay_ms = -1 if retry_after is None else max(0.0, min(retry_after, self.max_pause)) * 1000
        left = self._pause(
            keys=self._keys(host, "pause", "throttles"),
            args=[int(delay_ms), int(BACKOFF_FIRST * 1000), int(BACKOFF_CAP * 1000)],
        )
        return max(0, int(left)) / 1000

    def wake(self, host: str) -> tuple[list[int], float]:
        left, *ids = self._wake(keys=self._keys(host, "slots", "parked", "handed", "pause"), args=[self.limit])
        return [int(i) for i in ids], int(left) / 1000

    def parked(self) -> int:
        return sum(int(self._redis.zcard(key)) for key in self._redis.scan_iter(f"{self._prefix}*:parked"))
