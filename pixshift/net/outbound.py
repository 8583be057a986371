"""Connections to URLs that strangers hand PixShift: image hosts and webhook receivers.

Every connection goes through requests-hardened's IP filter: it resolves the host once, checks
that address and pins the connection to it, so DNS rebinding cannot swap it, and it does so for
every request, hence for every redirect hop a caller follows itself. `is_blocked_address` layers
the ranges requests-hardened lets through on top of its check, and `check_public_url` applies the
same rule ahead of time. Every connection obeys the calling thread's `deadlines.limit`. The filter
is off only with `allow_private` (PIXSHIFT_ALLOW_PRIVATE_URLS). Refusals and broken connections are
`UrlRefused`, worded for people; callers turn them into their own failures.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import EXTRA_BLOCKED_NET_RANGES, InvalidIPAddress
from requests_hardened.ip_filter_adapter import IPFilterAdapter

from pixshift.failures import UrlRefused
from pixshift.net import deadlines
from pixshift.net.urls import url_problem

__all__ = [
    "InvalidIPAddress",
    "blocked",
    "check_public_url",
    "connection_failure",
    "find",
    "is_blocked_address",
    "session",
    "validate_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_SCHEMES = ("http", "https")


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

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: str | tuple[str, str] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:  # HTTPAdapter's signature: urllib3 pool key attributes
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        ip = ipaddress.ip_address(host_params["host"].strip("[]"))
        if is_blocked_address(ip) and not (self._allow_loopback and ip.is_loopback):
            raise InvalidIPAddress(ip)
        return host_params, pool_kwargs


# --- sessions ---------------------------------------------------------------------------

_local = threading.local()


def new_session(allow_private: bool, *, allow_loopback: bool = False) -> requests.Session:
    """A hardened Session; `allow_loopback` exists for tests that serve from 127.0.0.1."""
    session = HTTPSession(
        Config(
            ip_filter_enable=not allow_private,
            ip_filter_allow_loopback_ips=allow_loopback,
            never_redirect=True,  # we follow redirects ourselves, hop by hop
            default_timeout=(5.0, 15.0),  # unused: every call passes its own timeouts
        )
    )
    for prefix, https in (("http://", False), ("https://", True)):
        session.mount(
            prefix,
            deadlines.WatchedPoolsAdapter()
            if allow_private
            else _AddressFilterAdapter(is_https_proto=https, allow_loopback=allow_loopback),
        )
    # No proxies or ~/.netrc credentials from the environment (a proxy would resolve the
    # host itself, past the filter), and no cookies carried from one stranger's URL to another.
    session.trust_env = False
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


def session(allow_private: bool) -> requests.Session:
    """This thread's Session: Sessions are not thread-safe, but reusing one keeps connections alive."""
    sessions: dict[bool, requests.Session] | None = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    found = sessions.get(allow_private)
    if found is None:
        found = sessions[allow_private] = new_session(allow_private)
    return found


# --- URL checks -------------------------------------------------------------------------


def validate_url(url: str, what: str = "URL") -> SplitResult:
    """``urls.url_problem``'s rule, plus what only matters on the wire: no DEL, and no backslash in
    the host part (URL parsers read it differently). Raises invalid_url; addresses are checked at
    connect time."""
    problem = url_problem(url) if isinstance(url, str) else "is not text"
    if problem is None:
        parts = urlsplit(url)
        if "\x7f" in url or "\\" in parts.netloc:
            problem = f"{url[:80]!r} is not a valid URL"
    if problem is not None:
        raise UrlRefused("invalid_url", f"invalid {what}: {problem}")
    return parts


def blocked(ip: object, host: str) -> UrlRefused:
    of_host = "" if str(ip) == host.strip("[]") else f" of {host}"
    return UrlRefused(
        "blocked_address",
        f"the address {ip}{of_host} is private, loopback or reserved; PixShift does not fetch from internal networks",
    )


def check_public_url(url: str, allow_private: bool) -> None:
    """Validate `url` and every address its host resolves to now, raising UrlRefused.

    For callers that must refuse a URL before any request (webhook registration).
    Connections do not rely on it: an address can change after this check, so the
    filter runs again at connect time, with the same `is_blocked_address` rule.
    """
    parts = validate_url(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError:
        raise UrlRefused("invalid_url", "the URL has no valid host") from None
    except OSError:
        raise UrlRefused(
            "connection_failed",
            f"could not connect to {host}: the host name could not be resolved",
            retryable=True,
        ) from None
    if allow_private:
        return
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if is_blocked_address(ip):
            raise blocked(ip, host)


# --- failures ---------------------------------------------------------------------------


def connection_failure(exc: BaseException, host: str) -> UrlRefused:
    """connection_failed with the innermost cause ("Connection refused"), not urllib3's pool repr.

    A certificate that does not verify will not verify on the next try either.
    """
    if find(exc, ssl.SSLCertVerificationError):
        return UrlRefused(
            "connection_failed", f"could not connect to {host}: its TLS certificate could not be verified"
        )
    if find(exc, socket.gaierror):
        reason = "the host name could not be resolved"
    elif find(exc, ssl.SSLError):
        reason = "the TLS handshake failed"
    else:
        strerrors = [e.strerror for e in causes(exc) if isinstance(e, OSError) and e.strerror]
        reason = strerrors[-1] if strerrors else "the connection broke"
    return UrlRefused("connection_failed", f"could not connect to {host}: {reason}", retryable=True)


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything it wraps, outermost first (requests and urllib3 nest deeply)."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is f for f in found):
            continue
        found.append(e)
        reason = getattr(e, "reason", None)  # urllib3's MaxRetryError keeps the cause here
        todo += [
            reason if isinstance(reason, BaseException) else None,
            e.__cause__,
            e.__context__,
            *(a for a in e.args if isinstance(a, BaseException)),
        ]
    return found


def find(exc: BaseException, kind: type | tuple[type, ...]) -> BaseException | None:
    return next((e for e in causes(exc) if isinstance(e, kind)), None)
