"""The progress event bus: workers publish, the web process relays to browsers.

With ``REDIS_URL`` it is Redis pub/sub, so consumers on any machine reach every web process;
without it, an in-process fan-out for the embedded default. Events are fire-and-forget
JSON objects: a subscriber that is not listening misses them and reads a snapshot instead.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Protocol

import redis
import redis.client

Event = dict[str, object]  # a JSON object: "type", "request_id" and what that type carries


class EventBus(Protocol):
    def publish(self, request_id: str, event: Event) -> None: ...

    def subscribe(self) -> Subscription: ...


class Subscription(Protocol):
    def get(self, timeout: float) -> tuple[str, Event] | None:
        """The next (request_id, event), or None when ``timeout`` passes without one."""

    def close(self) -> None: ...


class LocalBus:
    """Fan-out to subscribers in this process (the embedded default)."""

    def __init__(self) -> None:
        self._subscribers: list[queue.SimpleQueue[tuple[str, Event]]] = []
        self._lock = threading.Lock()

    def publish(self, request_id: str, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            q.put((request_id, event))

    def subscribe(self) -> LocalSubscription:
        q: queue.SimpleQueue[tuple[str, Event]] = queue.SimpleQueue()
        with self._lock:
            self._subscribers.append(q)
        return LocalSubscription(self, q)

    def _unsubscribe(self, q: queue.SimpleQueue[tuple[str, Event]]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)


class LocalSubscription:
    def __init__(self, bus: LocalBus, q: queue.SimpleQueue[tuple[str, Event]]) -> None:
        self._bus, self._queue = bus, q

    def get(self, timeout: float) -> tuple[str, Event] | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._bus._unsubscribe(self._queue)


class RedisBus:
    """Redis pub/sub on one channel per request: ``<queue name>:events:<request id>``."""

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = redis.Redis.from_url(url)
        self._url = url
        self._prefix = f"{prefix}:events:"

    def publish(self, request_id: str, event: Event) -> None:
        self._redis.publish(self._prefix + request_id, json.dumps(event, separators=(",", ":")))

    def subscribe(self) -> RedisSubscription:
        pubsub = redis.Redis.from_url(self._url).pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(self._prefix + "*")
        return RedisSubscription(pubsub, len(self._prefix))


class RedisSubscription:
    def __init__(self, pubsub: redis.client.PubSub, prefix_len: int) -> None:
        self._pubsub, self._prefix_len = pubsub, prefix_len

    def get(self, timeout: float) -> tuple[str, Event] | None:
        message = self._pubsub.get_message(timeout=timeout)
        if message is None or message.get("type") != "pmessage":
            return None
        channel: str = message["channel"].decode()
        event: Event = json.loads(message["data"])
        return channel[self._prefix_len :], event

    def close(self) -> None:
        self._pubsub.close()


_LOCAL_BUS = LocalBus()  # one per process: the web relay and the worker threads must share it


def make_bus(redis_url: str | None, prefix: str) -> EventBus:
    return RedisBus(redis_url, prefix) if redis_url else _LOCAL_BUS
