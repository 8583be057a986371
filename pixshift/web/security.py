"""Access control and browser hardening, applied to every response in one place.

With ``PIXSHIFT_API_TOKENS`` set, every API call needs ``Authorization: Bearer <token>`` (pages:
a login with the token) and a request is visible only to the token that created it (others get
404, not 403, so ids do not leak). Without tokens the service is open and request ids (random UUIDs)
are the only secret.
Media files stay public by their unguessable URL in either case: output CSVs are consumed by
systems that hold no PixShift token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import quote, urlsplit, urlunsplit

from flask import Flask, current_app, g, redirect, request, session, url_for

from pixshift.failures import NotAuthenticated

OPEN_ENDPOINTS = {
    "api.healthz",
    "api.readyz",
    "api.openapi_json",
    "api.api_docs",
    "downloads.media",
    "static",
    "web.login",
    "web.sample_csv",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; style-src 'self'; "
    "script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def owner_of(token: str) -> str:
    """What is stored for a token: its hash, so a database leak does not leak tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def current_owner() -> str | None:
    """The owner of this request's token, or None when tokens are not in use."""
    return g.get("owner")


def can_see(owner: str | None) -> bool:
    return not current_app.config["API_TOKENS"] or hmac.compare_digest(owner or "", current_owner() or "")


def _authenticate():
    tokens = current_app.config["API_TOKENS"]
    if not tokens or request.endpoint in OPEN_ENDPOINTS or request.endpoint is None:
        return None
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    if scheme.lower() == "bearer" and presented:
        for token in tokens:
            if hmac.compare_digest(token.encode(), presented.encode()):
                g.owner = owner_of(token)
                return None
    # A browser that logged in with a token: pages (their forms carry CSRF tokens) and reads of
    # the API. Writes to the API need the bearer header, so a cookie alone cannot be abused.
    owner = session_owner()
    if owner and (request.blueprint == "web" or request.method in ("GET", "HEAD")):
        g.owner = owner
        return None
    if request.blueprint == "web":
        return redirect(url_for("web.login", next=request.full_path))
    raise NotAuthenticated("unauthorized", "send an API token: Authorization: Bearer <token>")


def session_owner() -> str | None:
    """The owner a browser logged in as, if its token is still configured."""
    owner = session.get("owner")
    valid = {owner_of(t) for t in current_app.config["API_TOKENS"]}
    return owner if owner in valid else None


def login(token: str) -> bool:
    for candidate in current_app.config["API_TOKENS"]:
        if hmac.compare_digest(candidate.encode(), token.strip().encode()):
            session["owner"] = owner_of(candidate)
            return True
    return False


# What a browser does to a URL before parsing it (WHATWG URL standard): it strips leading and
# trailing C0 controls and spaces, and removes every ASCII tab and newline.
_C0_OR_SPACE = "".join(map(chr, range(0x21)))
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def safe_next(target: str) -> str:
    """Where a login may send the browser next: a path on this site, else ``/``.

    ``next`` comes from the query string, so anyone can put it in a link. Checking the raw text is
    not enough: a browser turns ``/<tab>/evil.example`` and ``/\\evil.example`` into
    ``//evil.example`` (another host), and a newline makes the Location header unsendable (a 500).
    So the target is normalised the way a browser would, and only a path starting with a single
    ``/`` followed by neither ``/`` nor ``\\`` (or exactly ``/``) is accepted, with no control
    characters or lone surrogates left in it. It comes back percent-encoded, so the header is plain
    ASCII and means the same to every client.
    """
    url = target.strip(_C0_OR_SPACE).translate(_TAB_OR_NEWLINE)
    if not url.startswith("/") or url[1:2] in ("/", "\\") or _CONTROL_OR_SURROGATE.search(url):
        return "/"
    parts = urlsplit(url)
    path = quote(parts.path.replace("\\", "/"), safe="/%!$&'()*+,:;=@~")
    return urlunsplit(
        ("", "", path, quote(parts.query, safe="/%!$&'()*+,:;=?@~"), quote(parts.fragment, safe="/%!#$&'()*+,:;=?@~"))
    )


def _harden(response):
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response


def init_app(app: Flask) -> None:
    app.before_request(_authenticate)
    app.after_request(_harden)
