"""Safe download of image URLs that strangers put in a CSV.

Every connection goes through requests-hardened's IP filter: it resolves the host
once, checks that address and pins the connection to it, so DNS rebinding cannot swap
it, and it does so for every request, hence for every redirect hop we follow ourselves.
`is_blocked_address` layers the ranges requests-hardened lets through on top of its
check, and `check_public_url` applies the same rule ahead of time. Bodies are streamed
under a byte cap and a total deadline, and only transient failures are retried.
The filter is off only with `allow_private` (PIXSHIFT_ALLOW_PRIVATE_URLS).
"""

from __future__ import annotations

import ipaddress
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import SplitResult, urljoin, urlsplit

import requests
import urllib3
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES, InvalidIPAddress
from requests_hardened.ip_filter_adapter import IPFilterAdapter

from . import deadlines
from .errors import ImageFailure

__all__ = ["FetchPolicy", "Fetched", "check_public_url", "fetch_image", "is_blocked_address", "post_json"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CHUNK = 64 * 1024
_SCHEMES = ("http", "https")
_HEADERS = {"Accept": "image/*, */*;q=0.5", "Accept-Encoding": "identity"}


@dataclass(frozen=True)
class FetchPolicy:
    """How far PixShift trusts an image server: addresses, size, time and retries."""

    allow_private: bool = False
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 60.0  # per image: all attempts, redirects and backoff together
    retries: int = 3  # extra attempts after the first
    backoff: float = 0.5  # first retry delay, seconds; doubles, with jitter
    backoff_cap: float = 10.0
    max_redirects: int = 5
    user_agent: str = "PixShift/0.1 (+image batch service)"

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
class Fetched:
    """A downloaded body. `content_type` is the server's claim only: decode `data` to verify."""

    data: bytes
    url: str  # after redirects
    status: int
    content_type: str | None
    attempts: int
    elapsed: float


# --- the address rule -------------------------------------------------------------------


def is_blocked_address(ip: IPAddress) -> bool:
    """Whether PixShift refuses to connect to `ip`; the one rule for fetches and checks.

    It includes requests-hardened's own rule (private, loopback, link-local,
    unspecified, reserved 240/4, multicast, CGNAT, NAT64, 6to4, ...), so the check at
    connect time and `check_public_url` agree, and adds what that rule lets through:
    IPv4-compatible (::a.b.c.d) and IPv4-translated (::ffff:0:a.b.c.d) IPv6 forms, other
    reserved and non-global ranges, and deprecated IPv6 site-local fec0::/10.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 on the wire
    return (
        ip.is_private
        or ip.is_multicast
        or any(ip in net for net in EXTRA_BLOCKED_NET_RANGES)
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or not ip.is_global
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


class _AddressFilterAdapter(deadlines.WatchedPoolsAdapter, IPFilterAdapter):
    """requests-hardened's adapter, plus `is_blocked_address` on the address it pinned.

    The parent resolves the host, rejects with its own rule and swaps the host for the
    checked IP; we check that same IP again, so no second DNS lookup can disagree.
    """

    def build_connection_pool_key_attributes(self, request, verify, cert=None):  # type: ignore[no-untyped-def]
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        ip = ipaddress.ip_address(host_params["host"].strip("[]"))
        if is_blocked_address(ip) and not (self._allow_loopback and ip.is_loopback):
            raise InvalidIPAddress(ip)
        return host_params, pool_kwargs


# --- sessions ---------------------------------------------------------------------------

_local = threading.local()


def _new_session(allow_private: bool, *, allow_loopback: bool = False) -> requests.Session:
    """A hardened Session; `allow_loopback` exists for tests that serve from 127.0.0.1."""
    session = HTTPSession(Config(
        ip_filter_enable=not allow_private,
        ip_filter_allow_loopback_ips=allow_loopback,
        never_redirect=True,  # we follow redirects ourselves, hop by hop
        default_timeout=(5.0, 15.0),  # unused: every call passes its own timeouts
    ))
    for prefix, https in (("http://", False), ("https://", True)):
        session.mount(prefix, deadlines.WatchedPoolsAdapter() if allow_private
                      else _AddressFilterAdapter(is_https_proto=https, allow_loopback=allow_loopback))
    # No proxies or ~/.netrc credentials from the environment (a proxy would resolve the
    # host itself, past the filter), and no cookies carried from one stranger's URL to another.
    session.trust_env = False
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


def _session(policy: FetchPolicy) -> requests.Session:
    """This thread's Session: Sessions are not thread-safe, but reusing one keeps connections alive."""
    sessions: dict[bool, requests.Session] | None = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    session = sessions.get(policy.allow_private)
    if session is None:
        session = sessions[policy.allow_private] = _new_session(policy.allow_private)
    return session


# --- URL checks -------------------------------------------------------------------------


def _validate_url(url: str) -> SplitResult:
    """Scheme, host and no credentials; raises invalid_url. Addresses are checked at connect time."""
    if not isinstance(url, str) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ImageFailure("invalid_url", "the image URL is not a valid URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ImageFailure("invalid_url", "the image URL is not a valid URL") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise ImageFailure("invalid_url", "only http and https image URLs can be fetched")
    if "@" in parts.netloc:
        raise ImageFailure("invalid_url", "image URLs with a user name or password are not accepted")
    # A backslash or space in the host part is read differently by different URL parsers.
    if not parts.hostname or any(c.isspace() or c == "\\" for c in parts.netloc):
        raise ImageFailure("invalid_url", "the image URL has no valid host")
    return parts


def _blocked(ip: object, host: str) -> ImageFailure:
    of_host = "" if str(ip) == host.strip("[]") else f" of {host}"
    return ImageFailure(
        "blocked_address",
        f"the address {ip}{of_host} is private, loopback or reserved; "
        "PixShift does not fetch from internal networks",
    )


def check_public_url(url: str, policy: FetchPolicy) -> None:
    """Validate `url` and every address its host resolves to now, raising ImageFailure.

    For callers that must refuse a URL before any request (webhook registration).
    fetch_image does not rely on it: an address can change after this check, so the
    filter runs again at connect time, with the same `is_blocked_address` rule.
    """
    parts = _validate_url(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError:
        raise ImageFailure("invalid_url", "the image URL has no valid host") from None
    except OSError:
        raise ImageFailure(
            "connection_failed", f"could not connect to {host}: the host name could not be resolved",
            retryable=True,
        ) from None
    if policy.allow_private:
        return
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if is_blocked_address(ip):
            raise _blocked(ip, host)


# --- fetching ---------------------------------------------------------------------------


class _Retry(Exception):
    """A failure worth another attempt, with the server's Retry-After if it gave one."""

    def __init__(self, failure: ImageFailure, retry_after: float | None = None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.retry_after = retry_after


def fetch_image(url: str, policy: FetchPolicy) -> Fetched:
    """Download `url` within `policy`, retrying transient failures; raises ImageFailure.

    `policy.total_timeout` bounds the whole call (connecting, status line, headers, body,
    redirects, retries and backoff), however slowly the server trickles its answer.
    Retried: connection errors, timeouts, 5xx and 429. When attempts or time run out the
    failure is raised with retryable=True, so the caller may requeue the image later.
    Not retried (retryable=False): other 4xx, blocked addresses, bad URLs, oversized or
    empty bodies, redirect loops.
    """
    started = time.monotonic()
    _validate_url(url)
    session = _session(policy)
    attempt = 0
    with deadlines.limit(started + policy.total_timeout) as limit:
        while True:
            attempt += 1
            try:
                final_url, status, content_type, data = _attempt(session, url, policy, limit)
            except _Retry as retry:
                if attempt > policy.retries:
                    raise retry.failure from None
                delay = _backoff_delay(attempt, policy, retry.retry_after)
                if delay >= limit.remaining():
                    raise retry.failure from None
                time.sleep(delay)
                continue
            return Fetched(data=data, url=final_url, status=status, content_type=content_type,
                           attempts=attempt, elapsed=time.monotonic() - started)


def _backoff_delay(attempt: int, policy: FetchPolicy, retry_after: float | None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    The server's Retry-After wins but never beyond backoff_cap; otherwise exponential
    backoff with jitter in [delay/2, delay], so workers that failed together do not
    retry in lockstep.
    """
    if retry_after is not None:
        return min(retry_after, policy.backoff_cap)
    delay = min(policy.backoff_cap, policy.backoff * 2 ** (attempt - 1))
    return random.uniform(delay / 2, delay)


def _attempt(session: requests.Session, url: str, policy: FetchPolicy,
             limit: deadlines.Limit) -> tuple[str, int, str | None, bytes]:
    """One try: follow redirects from `url` and read the body."""
    current = url
    for _hop in range(policy.max_redirects + 1):
        host = urlsplit(current).hostname or ""
        response = _request(session, current, host, policy, limit)
        try:
            if response.is_redirect:
                target = session.get_redirect_target(response) or ""
                current = urljoin(current, target)
                _validate_url(current)  # scheme and credentials; the address is checked on connect
                continue
            if not 200 <= response.status_code < 300:
                raise _http_failure(response)
            data = _read_body(response, host, policy, limit)
            return current, response.status_code, response.headers.get("Content-Type"), data
        finally:
            response.close()  # unread error and redirect bodies are dropped with the connection
    raise ImageFailure("too_many_redirects",
                       f"the image URL redirected more than {policy.max_redirects} times")


def _request(session: requests.Session, url: str, host: str, policy: FetchPolicy,
             limit: deadlines.Limit) -> requests.Response:
    remaining = limit.remaining()
    if remaining <= 0:
        raise _Retry(_deadline_failure(policy))
    try:
        response = session.get(
            url,
            headers={**_HEADERS, "User-Agent": policy.user_agent},
            stream=True,
            allow_redirects=False,
            timeout=(min(policy.connect_timeout, remaining), min(policy.read_timeout, remaining)),
        )
    except InvalidIPAddress as exc:
        raise _blocked(exc.args[0] if exc.args else "?", host) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema):
        raise ImageFailure("invalid_url", "the image URL is not a valid URL") from None
    except requests.RequestException as exc:
        if limit.expired:  # the deadline shut the socket under a trickling status line or headers
            raise _Retry(_deadline_failure(policy)) from None
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            raise _Retry(ImageFailure("timeout", f"connecting to {host} timed out", retryable=True)) from None
        if isinstance(exc, requests.exceptions.Timeout):
            raise _Retry(_read_timeout_failure(host, policy)) from None
        raise _connection_failure(exc, host) from None
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
        if _find(exc, (urllib3.exceptions.TimeoutError, TimeoutError)):
            raise _Retry(_read_timeout_failure(host, policy)) from None
        raise _connection_failure(exc, host) from None
    if limit.expired:  # a body without Content-Length just ends when the socket is shut
        raise _Retry(_deadline_failure(policy))
    if not received:
        raise ImageFailure("empty_response", f"the image server at {host} sent an empty response")
    return b"".join(chunks)


def _read1_chunks(raw: urllib3.HTTPResponse) -> Iterator[bytes]:
    while chunk := raw.read1(_CHUNK, decode_content=True):
        yield chunk


# --- posting (webhooks) -----------------------------------------------------------------


def post_json(url: str, body: bytes, headers: dict[str, str], policy: FetchPolicy, timeout: float) -> int:
    """POST ``body`` to a user-supplied URL under the same address rules; returns the status code.

    One attempt, no redirects followed (a receiver that moved must be re-registered); the
    caller owns retries. ``timeout`` bounds the whole attempt: connecting, sending and the
    receiver's status line and headers. Raises ImageFailure for blocked, unreachable or slow
    receivers.
    """
    parts = _validate_url(url)
    host = parts.hostname or ""
    slow = ImageFailure("timeout", f"{host} did not answer within {timeout:g} s", retryable=True)
    with deadlines.limit(time.monotonic() + timeout) as limit:
        try:
            response = _session(policy).post(
                url, data=body, allow_redirects=False, stream=True,
                headers={"Content-Type": "application/json", "User-Agent": policy.user_agent, **headers},
                timeout=(min(policy.connect_timeout, timeout), timeout))
        except InvalidIPAddress as exc:
            raise _blocked(exc.args[0] if exc.args else "?", host) from None
        except requests.RequestException as exc:
            if limit.expired or isinstance(exc, requests.exceptions.Timeout):
                raise slow from None
            failure = _connection_failure(exc, host)
            raise (failure.failure if isinstance(failure, _Retry) else failure) from None
        response.close()  # the receiver's body is not needed
        if limit.expired:  # headers cut short by the deadline end like complete ones
            raise slow
    return response.status_code


# --- failures ---------------------------------------------------------------------------


def _http_failure(response: requests.Response) -> Exception:
    status = response.status_code
    try:
        phrase = " " + HTTPStatus(status).phrase
    except ValueError:
        phrase = ""  # the server's own reason text is not shown to people
    failure = ImageFailure(f"http_{status}", f"the image server answered {status}{phrase}",
                           retryable=status == 429 or status >= 500)
    if not failure.retryable:
        return failure
    value = response.headers.get("Retry-After", "").strip()
    retry_after = float(value) if re.fullmatch(r"\d{1,9}", value) else None
    return _Retry(failure, retry_after)


def _too_large(policy: FetchPolicy) -> ImageFailure:
    mib, kib = 1024 * 1024, 1024
    n = policy.max_bytes
    limit = f"{n // mib} MB" if n % mib == 0 else f"{n // kib} KB" if n % kib == 0 else f"{n} bytes"
    return ImageFailure("too_large", f"image is larger than {limit}")


def _deadline_failure(policy: FetchPolicy) -> ImageFailure:
    return ImageFailure("timeout", f"downloading the image took longer than {policy.total_timeout:g} s",
                        retryable=True)


def _read_timeout_failure(host: str, policy: FetchPolicy) -> ImageFailure:
    return ImageFailure("timeout", f"the image server at {host} sent nothing for {policy.read_timeout:g} s",
                        retryable=True)


def _connection_failure(exc: BaseException, host: str) -> Exception:
    """connection_failed with the innermost cause ("Connection refused"), not urllib3's pool repr.

    A certificate that does not verify will not verify on the next try either.
    """
    if _find(exc, ssl.SSLCertVerificationError):
        return ImageFailure("connection_failed",
                            f"could not connect to {host}: its TLS certificate could not be verified")
    if _find(exc, socket.gaierror):
        reason = "the host name could not be resolved"
    elif _find(exc, ssl.SSLError):
        reason = "the TLS handshake failed"
    else:
        errors = [e for e in _causes(exc) if isinstance(e, OSError) and e.strerror]
        reason = errors[-1].strerror if errors else "the connection broke"
    return _Retry(ImageFailure("connection_failed", f"could not connect to {host}: {reason}",
                               retryable=True))


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything it wraps, outermost first (requests and urllib3 nest deeply)."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is f for f in found):
            continue
        found.append(e)
        reason = getattr(e, "reason", None)  # urllib3's MaxRetryError keeps the cause here
        todo += [reason if isinstance(reason, BaseException) else None, e.__cause__, e.__context__,
                 *(a for a in e.args if isinstance(a, BaseException))]
    return found


def _find(exc: BaseException, kind: type | tuple[type, ...]) -> BaseException | None:
    return next((e for e in _causes(exc) if isinstance(e, kind)), None)
