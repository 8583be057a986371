"""Registered webhook endpoints: the rule a new one must pass (the form and the API share it),
deleting one, and what the API shows of one."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from pixshift.db.extensions import db
from pixshift.db.models import WebhookEndpoint, iso, utcnow
from pixshift.failures import InvalidInput, UrlRefused
from pixshift.net import outbound
from pixshift.net.urls import url_problem
from pixshift.webhooks.signing import new_secret


def register_endpoint(url: object, description: object, *, owner: str | None, allow_private: bool) -> WebhookEndpoint:
    """Validate and store an endpoint (the form and the API share this rule); raises InvalidInput.

    Each refusal keeps the API's stable code and message and carries ``for_people``: the same
    refusal in words for the web page's form."""
    url = _clean_text(url, 2048)
    text = _clean_text(description, 255) if description is not None else None  # the same string, if valid
    if url is None or (description is not None and text is None):
        raise _refused(
            "invalid_body",
            'send JSON like {"url": "https://…", "description": "…"} '
            "(text without NUL, description at most 255 characters)",
            "Enter a web address of at most 2048 characters and a description of at most 255.",
        )
    url = url.strip()
    if problem := url_problem(url):
        raise _refused("invalid_webhook_url", f"url: {problem}", ENTER_A_FULL_URL)
    try:
        outbound.check_public_url(url, allow_private)
    except UrlRefused as refused:
        if refused.code == "connection_failed":
            words = "No server by that name could be found. Check the address for typing mistakes."
        elif refused.code == "blocked_address":
            words = "PixShift only sends webhooks to public internet addresses; that one is on a private network."
        else:
            words = ENTER_A_FULL_URL
        raise _refused("invalid_webhook_url", f"url: {refused.message}", words) from None
    taken = db.session.scalar(
        select(WebhookEndpoint.id).where(
            WebhookEndpoint.url == url,
            WebhookEndpoint.owner.is_(None) if owner is None else WebhookEndpoint.owner == owner,
            WebhookEndpoint.deleted_at.is_(None),
        )
    )
    if taken is not None:
        raise _refused("duplicate_webhook_url", DUPLICATE_URL, DUPLICATE_URL)
    endpoint = WebhookEndpoint(
        id=str(uuid.uuid4()), url=url, description=(text or "").strip()[:255] or None, secret=new_secret(), owner=owner
    )
    db.session.add(endpoint)
    db.session.commit()
    return endpoint


ENTER_A_FULL_URL = "Enter a full web address starting with https://, like https://example.com/hooks/pixshift."
DUPLICATE_URL = "That URL is already registered."


class EndpointRefused(InvalidInput):
    """A refused registration: the API's code and message, and ``for_people`` for the form."""

    def __init__(self, code: str, message: str, for_people: str) -> None:
        super().__init__(code, message)
        self.for_people = for_people


_refused = EndpointRefused


def _clean_text(value: object, limit: int) -> str | None:
    """A string fit to store: UTF-8 encodable, no NUL (PostgreSQL refuses it), at most ``limit``
    characters; None when ``value`` is not such a string."""
    if not isinstance(value, str) or "\x00" in value or len(value) > limit:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON escapes
        return None
    return value


def delete_endpoint(endpoint: WebhookEndpoint) -> None:
    """Stop sending to it; the row stays so past deliveries still say where they went."""
    now = utcnow()
    endpoint.deleted_at = now
    endpoint.disabled_at = endpoint.disabled_at or now
    endpoint.disabled_reason = endpoint.disabled_reason or "deleted"
    db.session.commit()


def endpoint_doc(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, object]:
    doc: dict[str, object] = {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "created_at": iso(endpoint.created_at),
        "enabled": endpoint.disabled_at is None,
        "disabled_reason": endpoint.disabled_reason,
    }
    if with_secret:
        doc["secret"] = endpoint.secret
    return doc
