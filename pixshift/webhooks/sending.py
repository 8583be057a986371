"""One POST of an event to a receiver: signed, under the outbound address rule, within one deadline."""

from __future__ import annotations

import time

import requests

from pixshift.failures import DeliveryFailure, UrlRefused
from pixshift.net import deadlines, outbound
from pixshift.net.fetch import FetchPolicy
from pixshift.webhooks.signing import signed_headers


def post_event(
    url: str, event_id: str, body: bytes, secret: str | None, policy: FetchPolicy, timeout: float
) -> tuple[int | None, str | None, int]:
    """Send one signed attempt: (status code, error, latency in ms), the status None when it failed.

    A refused, unreachable or slow receiver is an error (``"<code>: <message>"``), not an exception,
    so the caller records every attempt the same way.
    """
    headers = signed_headers(event_id, body, secret)
    started = time.monotonic()
    try:
        status, error = post_json(url, body, headers, policy, timeout), None
    except (DeliveryFailure, UrlRefused) as failure:
        status, error = None, f"{failure.code}: {failure.message}"
    return status, error, round(1000 * (time.monotonic() - started))


def post_json(url: str, body: bytes, headers: dict[str, str], policy: FetchPolicy, timeout: float) -> int:
    """POST ``body`` to a receiver's URL under the address rule; returns the status code.

    One attempt, no redirects followed (a receiver that moved must be re-registered); the
    caller owns retries. ``timeout`` bounds the whole attempt: connecting, sending and the
    receiver's status line and headers. Raises UrlRefused for invalid, blocked or unreachable
    receivers and DeliveryFailure ``timeout`` for slow ones.
    """
    host = outbound.validate_url(url, "webhook URL").hostname or ""
    slow = DeliveryFailure("timeout", f"{host} did not answer within {timeout:g} s", retryable=True)
    with deadlines.limit(time.monotonic() + timeout) as limit:
        try:
            response = outbound.session(policy.allow_private).post(
                url,
                data=body,
                allow_redirects=False,
                stream=True,
                headers={"Content-Type": "application/json", "User-Agent": policy.user_agent, **headers},
                timeout=(min(policy.connect_timeout, timeout), timeout),
            )
        except outbound.InvalidIPAddress as exc:
            raise outbound.blocked(exc.args[0] if exc.args else "?", host) from None
        except requests.RequestException as exc:
            if limit.expired or isinstance(exc, requests.exceptions.Timeout):
                raise slow from None
            raise outbound.connection_failure(exc, host) from None
        response.close()  # the receiver's body is not needed
        if limit.expired:  # headers cut short by the deadline end like complete ones
            raise slow
    return response.status_code
