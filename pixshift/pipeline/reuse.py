"""Revalidation across requests: an unchanged image costs a conditional GET, not a download and a compression.

For every URL an owner's requests fetched, ``url_results`` keeps the host's validators (ETag,
Last-Modified) and the stored result PixShift made from those bytes, under a key that also holds
the compression settings (``settings_key``). One image then goes:

1. ``plan``: find the row for (owner, URL, settings); its objects must still be in the store,
   else it is ignored and the image is fetched in full. With validators, the GET is conditional.
2. ``reused_fields``: on a 304, the row's result is the image's result, nothing decoded or
   encoded or stored again. On a 200 the bytes are hashed; if this owner already compressed
   bytes with that SHA-256 under these settings (any URL), that result is reused. Otherwise
   None: the caller compresses as usual.
3. ``remember``: upsert the row with the answer's validators and the result (ON CONFLICT, so two
   workers finishing the same URL at once cannot fail on the unique key).

Scoping by owner (the request's token hash, '' single-tenant) keeps reuse inside one tenant: a
tenant never gets another's result, nor learns from timing or ``reused`` what another fetched.
Each step is a short transaction committed before any network I/O or compression. Off with
``PIXSHIFT_REUSE_RESULTS=0``: no row is read or written.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol, cast

import PIL
from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite

from pixshift.db.extensions import db
from pixshift.db.models import Image, ImageState, Request, UrlResult, utcnow
from pixshift.imaging.compress import ENGINE_VERSION
from pixshift.net.fetch import Fetched, Validators
from pixshift.storage import MediaStore


class Settings(Protocol):
    """What reuse reads of the pipeline's Runtime (a Protocol: pipeline imports this module)."""

    @property
    def store(self) -> MediaStore: ...
    @property
    def reuse_results(self) -> bool: ...
    @property
    def ratio(self) -> float: ...
    @property
    def min_quality(self) -> int: ...
    @property
    def max_quality(self) -> int: ...
    @property
    def max_pixels(self) -> int: ...
    @property
    def thumbnail_size(self) -> int: ...
    @property
    def jpeg_encoder(self) -> str: ...


logger = logging.getLogger(__name__)

_results = cast(Table, UrlResult.__table__)
# What a row holds of an image's result: copied to the image when it is reused.
RESULT_FIELDS = (
    "input_key",
    "input_bytes",
    "input_format",
    "input_width",
    "input_height",
    "input_thumb_key",
    "output_key",
    "output_bytes",
    "output_format",
    "output_width",
    "output_height",
    "output_thumb_key",
    "quality",
    "scale",
    "encodes",
    "notes",
)
_KEYS = ("input_key", "input_thumb_key", "output_key", "output_thumb_key")
_COLUMNS = [_results.c[name] for name in (*RESULT_FIELDS, "etag", "last_modified")]


@functools.cache
def _settings_key(
    ratio: float, min_quality: int, max_quality: int, max_pixels: int, thumbnail_size: int, jpeg_encoder: str
) -> str:
    settings = {
        "jpeg_encoder": jpeg_encoder,
        "engine": ENGINE_VERSION,
        "pillow": PIL.__version__,  # a new Pillow (and its codecs) may encode other bytes
        "ratio": ratio,
        "min_quality": min_quality,
        "max_quality": max_quality,
        "max_pixels": max_pixels,
        "thumbnail_size": thumbnail_size,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def settings_key(rt: Settings) -> str:
    """SHA-256 of everything that decides the output bytes: a result is reused only under the same key."""
    return _settings_key(rt.ratio, rt.min_quality, rt.max_quality, rt.max_pixels, rt.thumbnail_size, rt.jpeg_encoder)


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    """What is known of one image's URL before it is fetched."""

    owner: str
    url: str
    url_sha256: str
    settings_key: str
    cached: dict[str, Any] | None  # the row's result and validators, its objects verified stored

    @property
    def validators(self) -> Validators | None:
        """Validators to send, when there is a result they would let us reuse."""
        if self.cached is None:
            return None
        return Validators(self.cached["etag"], self.cached["last_modified"]) or None


def plan(image_id: int, url: str, rt: Settings) -> Plan | None:
    """Look up what an earlier request of this image's owner made of ``url``; None when reuse is off."""
    if not rt.reuse_results:
        return None
    owner = db.session.scalar(
        select(Request.owner).join(Image, Image.request_id == Request.id).where(Image.id == image_id)
    )
    p = Plan(owner or "", url, url_key(url), settings_key(rt), None)
    row = db.session.execute(
        select(*_COLUMNS).where(
            _results.c.owner == p.owner,
            _results.c.url_sha256 == p.url_sha256,
            _results.c.settings_key == p.settings_key,
        )
    ).first()
    db.session.commit()
    if row is None:
        return p
    cached = dict(row._mapping)
    if not _stored(cached, rt.store):
        logger.info("the remembered result of this URL is no longer stored; fetching it in full")
        return p
    return Plan(p.owner, p.url, p.url_sha256, p.settings_key, cached)


def reused_fields(p: Plan | None, fetched: Fetched, rt: Settings, sha256: str) -> dict[str, object] | None:
    """The image's fields when an earlier result can stand for this answer, else None (compress it).

    A 304 reuses the planned row; a 200 whose bytes hash to an input this owner already compressed
    under these settings reuses that result (its objects are in the store, so nothing is put again).
    ``sha256``: of ``fetched.data``, which the caller hashes once for this and for the store.
    """
    if p is None:
        return None
    if fetched.not_modified:
        assert p.cached is not None  # the GET was conditional only because there was a result
        logger.info("not modified (304): reusing the result of an earlier request")
        return _image_fields(p.cached)
    if p.cached is not None and p.cached["input_key"] == sha256:
        logger.info("same bytes as before: reusing the result of an earlier request")
        return _image_fields(p.cached)
    row = db.session.execute(
        select(*_COLUMNS)
        .where(_results.c.owner == p.owner, _results.c.input_key == sha256, _results.c.settings_key == p.settings_key)
        .limit(1)
    ).first()
    db.session.commit()
    if row is None:
        return None
    found = dict(row._mapping)
    if not _stored(found, rt.store):
        return None
    logger.info("bytes already compressed for another URL: reusing that result")
    return _image_fields(found)


def remember(p: Plan | None, fetched: Fetched, fields: dict[str, object]) -> None:
    """Record the answer's validators and the image's result for the next request of this URL."""
    if p is None or fields.get("state") != ImageState.DONE.value:
        return
    validators = fetched.validators
    if fetched.not_modified and p.cached is not None:  # a 304 need not repeat the validators
        validators = Validators(
            validators.etag or p.cached["etag"], validators.last_modified or p.cached["last_modified"]
        )
    values: dict[str, object] = {
        "owner": p.owner,
        "url_sha256": p.url_sha256,
        "settings_key": p.settings_key,
        "url": p.url,
        "etag": validators.etag,
        "last_modified": validators.last_modified,
        "updated_at": utcnow(),
        **{name: fields[name] for name in RESULT_FIELDS},
    }
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_results).values(values)
    unique = ("owner", "url_sha256", "settings_key")
    try:
        db.session.execute(
            statement.on_conflict_do_update(
                index_elements=list(unique),
                set_={name: statement.excluded[name] for name in values if name not in unique},
            )
        )
        db.session.commit()
    except Exception:  # the image is done either way; only the next request's shortcut is lost
        db.session.rollback()
        logger.warning("could not remember the result of this URL", exc_info=True)


def _image_fields(cached: dict[str, Any]) -> dict[str, object]:
    return {
        "state": ImageState.DONE.value,
        **{name: cached[name] for name in RESULT_FIELDS},
        "reused": True,
        "error_code": None,
        "error_message": None,
    }


def _stored(cached: dict[str, Any], store: MediaStore) -> bool:
    """Whether every object of a result is still in the store (a deleted request may have taken them)."""
    try:
        for name in _KEYS:
            store.size(cached[name])
    except FileNotFoundError:
        return False
    except Exception:  # an unreachable store: compress as usual, and let storing report it
        logger.warning("could not check the media store for a remembered result", exc_info=True)
        return False
    return True
