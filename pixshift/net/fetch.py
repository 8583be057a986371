"""Download of image URLs that strangers put in a CSV: safe, bounded, retried.

Connections go through `outbound` (the address rule, pinned and re-checked on every redirect
hop we follow ourselves). Bodies are streamed under a byte cap, the whole call under one
deadline, and only transient failures are retried.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from pixshift.failures import ImageFailure, Throttled, UrlRefused
from pixshift.net import deadlines, outbound

# Jitter from a generator of our own: the random module's shared state belongs to whoever seeds it.
_jitter = random.Random()

__all__ = ["FetchPolicy", "Fetched", "Validators", "fetch_image", "retry_after_seconds"]

_CHUNK = 64 * 1024
_HEADERS = {"Accept": "image/*, */*;q=0.5", "Accept-Encoding": "identity"}
_MAX_VALIDATOR = 512  # longer ETag or Last-Modified values are not kept (nor sent back)


@dataclass(frozen=True)
class FetchPolicy:
    """How far PixShift trusts an image server: addresses, size, time and retries.

    The settings come from the config (``from_config``); only what no setting covers has a default."""

    allow_private: bool
    max_bytes: int
    connect_timeout: float
    read_timeout: float
    total_timeout: float  # per image: all attempts, redirects and backoff together
    retries: int  # extra attempts after the first
    backoff: float  # first retry delay, seconds; doubles, with jitter
    backoff_cap: float = 10.0
    max_redirects: int = 5
    user_agent: str = "PixShift/0.1 (+image batch service)"

    @classmethod
    def from_config(cls, c: Mapping[str, Any]) -> FetchPolicy:
        return cls(
            allow_private=c["ALLOW_PRIVATE_URLS"],
            max_bytes=c["MAX_IMAGE_BYTES"],
            connect_timeout=c["CONNECT_TIMEOUT"],
            read_timeout=c["READ_TIMEOUT"],
            total_timeout=c["DOWNLOAD_TIMEOUT"],
            retries=c["DOWNLOAD_RETRIES"],
            backoff=c["DOWNLOAD_BACKOFF"],
        )

    def __post_init__(self) -> None:
        positive = ("max_bytes", "connect_timeout", "read_timeout", "total_timeout")
        non_negative = ("retries", "backoff", "backoff_cap", "max_redirects")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"FetchPolicy.{name} must be positive")
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ValueError(f"FetchPolicy.{name} must not be negative")


@dataclass(frozen=True)
class Validators:
    """What the host said identifies the bytes it sent (RFC 9110 8.8): sent back on a later
    download as If-None-Match / If-Modified-Since, so an unchanged image costs a 304, not a body."""

    etag: str | None = None
    last_modified: str | None = None

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)

    def headers(self) -> dict[str, str]:
        sent = {}
        if self.etag:
            sent["If-None-Match"] = self.etag
        if self.last_modified:
            sent["If-Modified-Since"] = self.last_modified
        return sent


@dataclass(frozen=True)
class Fetched:
    """A downloaded body. `content_type` is the server's claim only: decode `data` to verify.

    ``not_modified``: the host answered 304 to our conditional GET; ``data`` is then empty and
    the caller already has the bytes. ``validators`` are the ones the final answer carried."""

    data: bytes
    url: str  # after redirects
    status: int
    content_type: str | None
    attempts: int
    elapsed: float
    validators: Validators = Validators()
    not_modified: bool = False


# --- fetching ---------------------------------------------------------------------------


class _Retry(Exception):
    """A failure worth another attempt, with the server's Retry-After if it gave one."""

    def __init__(self, failure: ImageFailure, retry_after: float | None = None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.retry_after = retry_after


def fetch_image(
    url: str, policy: FetchPolicy, validators: Validators | None = None, *, stop: Callable[[], bool] | None = None
) -> Fetched:
    """Download `url` within `policy`, retrying transient failures; raises ImageFailure.

    With ``validators``, the GET is conditional (sent on every redirect hop: they describe the
    final representation) and a 304 returns a Fetched with ``not_modified`` and no body; without
    them a 304 is an error like any other non-2xx answer.

    `policy.total_timeout` bounds the whole call (connecting, status line, headers, body,
    redirects, retries and backoff), however slowly the server trickles its answer.
    Retried: connection errors, timeouts and 5xx other than 503. When attempts or time run out
    the failure is raised with retryable=True, so the caller may requeue the image later.
    Not retried here: 429 and 503 raise ``Throttled`` at once (with the server's Retry-After),
    since waiting in this call would hold the host's slot and a thread, and the whole host should
    wait, not this one image. Not retried (retryable=False): other 4xx, blocked addresses, bad
    URLs, oversized or empty bodies, redirect loops. ``stop`` is asked before each retry: when it
    says so (the image's request was cancelled) the last failure is raised instead of trying again.
    """
    started = time.monotonic()
    _validate(url)
    session = outbound.session(policy.allow_private)
    attempt = 0
    with deadlines.limit(started + policy.total_timeout) as limit:
        while True:
            attempt += 1
            try:
                final_url, response_headers, status, data = _attempt(session, url, policy, limit, validators)
            except _Retry as retry:
                if attempt > policy.retries or (stop is not None and stop()):
                    raise retry.failure from None
                delay = _backoff_delay(attempt, policy, retry.retry_after)
                if delay >= limit.remaining():
                    raise retry.failure from None
                time.sleep(delay)
                continue
            return Fetched(
                data=data,
                url=final_url,
                status=status,
                content_type=response_headers.get("Content-Type"),
                attempts=attempt,
                elapsed=time.monotonic() - started,
                validators=Validators(
                    _validator(response_headers.get("ETag")), _validator(response_headers.get("Last-Modified"))
                ),
                not_modified=status == HTTPStatus.NOT_MODIFIED,
            )


def _validator(value: str | None) -> str | None:
    """A header value fit to send back: present, bounded, and without control characters."""
    value = (value or "").strip()
    if not value or len(value) > _MAX_VALIDATOR or not value.isprintable():
        return None
    return value


def _validate(url: str) -> None:
    try:
        outbound.validate_url(url, "image URL")
    except UrlRefused as refused:
        raise ImageFailure(refused.code, refused.message) from None


def _backoff_delay(attempt: int, policy: FetchPolicy, retry_after: float | None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    The server's Retry-After wins but never beyond backoff_cap; otherwise exponential
    backoff with jitter in [delay/2, delay], so workers that failed together do not
    retry in lockstep.
    """
    if retry_after is not None:
        return min(retry_after, policy.backoff_cap)
    delay = min(policy.backoff_cap, policy.backoff * 2 ** (attempt - 1))
    return _jitter.uniform(delay / 2, delay)


def _attempt(
    session: requests.Session, url: str, policy: FetchPolicy, limit: deadlines.Limit, validators: Validators | None
) -> tuple[str, Mapping[str, str], int, bytes]:
    """One try: follow redirects from `url` and read the body (none for a 304 to a conditional GET)."""
    current = url
    conditional = validators.headers() if validators else {}
    for _hop in range(policy.max_redirects + 1):
        host = urlsplit(current).hostname or ""
        response = _request(session, current, host, policy, limit, conditional)
        try:
            if response.is_redirect:
                target = session.get_redirect_target(response) or ""
                current = urljoin(current, target)
                _validate(current)  # scheme and credentials; the address is checked on connect
                continue
            if response.status_code == HTTPStatus.NOT_MODIFIED and conditional:
                return current, response.headers, response.status_code, b""
            if not 200 <= response.status_code < 300:
                raise _http_failure(response)
            data = _read_body(response, host, policy, limit)
            return current, response.headers, response.status_code, data
        finally:
            response.close()  # unread error and redirect bodies are dropped with the connection
    raise ImageFailure("too_many_redirects", f"the image URL redirected more than {policy.max_redirects} times")


def _request(
    session: requests.Session,
    url: str,
    host: str,
    policy: FetchPolicy,
    limit: deadlines.Limit,
    conditional: Mapping[str, str],
) -> requests.Response:
    remaining = limit.remaining()
    if remaining <= 0:
        raise _Retry(_deadline_failure(policy))
    try:
        response = session.get(
            url,
            headers={**_HEADERS, "User-Agent": policy.user_agent, **conditional},
            stream=True,
            allow_redirects=False,
            timeout=(min(policy.connect_timeout, remaining), min(policy.read_timeout, remaining)),
        )
    except outbound.InvalidIPAddress as exc:
        raise _image_failure(outbound.blocked(exc.args[0] if exc.args else "?", host)) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema):
        raise ImageFailure("invalid_url", "the image URL is not a valid URL") from None
    except requests.RequestException as exc:
        if limit.expired:  # the deadline shut the socket under a trickling status line or headers
            raise _Retry(_deadline_failure(policy)) from None
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            raise _Retry(ImageFailure("timeout", f"connecting to {host} timed out", retryable=True)) from None
        if isinstance(exc, requests.exceptions.Timeout):
            raise _Retry(_read_timeout_failure(host, policy)) from None
        raise _image_failure(outbound.connection_failure(exc, host)) from None
    except ValueError:  # e.g. an IDNA host name that cannot be encoded
        raise ImageFailure("invalid_url", "the image URL is not a valid URL") from None
    if limit.expired:  # headers cut short by the deadline end like complete ones
        response.close()
        raise _Retry(_deadline_failure(policy))
    return response


def _read_body(response: requests.Response, host: str, policy: FetchPolicy, limit: deadlines.Limit) -> bytes:
    """Stream the body under the byte cap and the deadline.

    read1 returns whatever one socket read brings, so the cap is checked as soon as it is
    passed; the deadline shuts the socket under a read that a trickling server keeps alive.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > policy.max_bytes:
        raise _too_large(policy)
    chunks: list[bytes] = []
    received = 0
    try:
        for chunk in _read1_chunks(response.raw):
            received += len(chunk)
            if received > policy.max_bytes:
                raise _too_large(policy)
            chunks.append(chunk)
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        if limit.expired:
            raise _Retry(_deadline_failure(policy)) from None
        if outbound.find(exc, (urllib3.exceptions.TimeoutError, TimeoutError)):
            raise _Retry(_read_timeout_failure(host, policy)) from None
        raise _image_failure(outbound.connection_failure(exc, host)) from None
    if limit.expired:  # a body without Content-Length just ends when the socket is shut
        raise _Retry(_deadline_failure(policy))
    if not received:
        raise ImageFailure("empty_response", f"the image server at {host} sent an empty response")
    return b"".join(chunks)


def _read1_chunks(raw: urllib3.HTTPResponse) -> Iterator[bytes]:
    while chunk := raw.read1(_CHUNK, decode_content=True):
        yield chunk


# --- failures ---------------------------------------------------------------------------


def _http_failure(response: requests.Response) -> Exception:
    status = response.status_code
    try:
        phrase = " " + HTTPStatus(status).phrase
    except ValueError:
        phrase = ""  # the server's own reason text is not shown to people
    code, message = f"http_{status}", f"the image server answered {status}{phrase}"
    retry_after = retry_after_seconds(response.headers.get("Retry-After", ""))
    if status in (429, 503):
        return Throttled(code, message, retry_after=retry_after)
    failure = ImageFailure(code, message, retryable=status >= 500)
    return _Retry(failure, retry_after) if failure.retryable else failure


def retry_after_seconds(value: str, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from now (RFC 9110: delay-seconds or an HTTP-date; a
    date in the past is 0), or None when absent or unreadable."""
    value = value.strip()
    if re.fullmatch(r"\d{1,9}", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP-dates are
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _too_large(policy: FetchPolicy) -> ImageFailure:
    mib, kib = 1024 * 1024, 1024
    n = policy.max_bytes
    limit = f"{n // mib} MB" if n % mib == 0 else f"{n // kib} KB" if n % kib == 0 else f"{n} bytes"
    return ImageFailure("too_large", f"image is larger than {limit}")


def _deadline_failure(policy: FetchPolicy) -> ImageFailure:
    return ImageFailure("timeout", f"downloading the image took longer than {policy.total_timeout:g} s", retryable=True)


def _read_timeout_failure(host: str, policy: FetchPolicy) -> ImageFailure:
    return ImageFailure(
        "timeout", f"the image server at {host} sent nothing for {policy.read_timeout:g} s", retryable=True
    )


def _image_failure(refused: UrlRefused) -> ImageFailure | _Retry:
    failure = ImageFailure(refused.code, refused.message, retryable=refused.retryable)
    return _Retry(failure) if failure.retryable else failure
