"""What a test needs from outside: the PostgreSQL and Redis of the scale-out variants, Chromium,
Graphviz. Without them a test is skipped on a developer's machine and fails in CI (``CI`` set):
a variant that did not run is not a pass."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from harness.livestack import scaleout_env


def unavailable(reason: str):
    """Skip locally; in CI fail loudly."""
    if os.environ.get("CI"):
        pytest.fail(f"cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        unavailable("set REDIS_URL to run the Redis variant")
    return url


@contextlib.contextmanager
def scaleout_services() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and Redis key prefix for one test (``DATABASE_URL``,
    ``REDIS_URL``, ``PIXSHIFT_QUEUE_NAME``), dropped afterwards."""
    database = os.environ.get("TEST_DATABASE_URL")
    if not database:
        unavailable("set DATABASE_URL and REDIS_URL to run the PostgreSQL + Redis variant")
    with scaleout_env(database, redis_url()) as env:
        yield env
