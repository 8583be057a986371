"""Deleting a request: its rows, and the stored objects no other request still uses."""

from __future__ import annotations

from sqlalchemy import delete, or_, select

from pixshift.db.extensions import db
from pixshift.db.models import Image, Request, UrlResult
from pixshift.storage import MediaStore

_KEY_COLUMNS = (Image.input_key, Image.output_key, Image.input_thumb_key, Image.output_thumb_key)
_RESULT_KEY_COLUMNS = (UrlResult.input_key, UrlResult.output_key, UrlResult.input_thumb_key, UrlResult.output_thumb_key)


def delete_request(req: Request, store: MediaStore) -> int:
    """Delete a finished request and return how many objects were removed from the store.

    Rows go first (cascading to products, images, webhook events and deliveries), then every
    object of the request that no remaining image references: content addressing means another
    request may share it. An upload storing the same bytes at the same moment could lose its
    object; that image then reads as missing (503), which is why only finished requests go.

    Remembered results (``url_results``) of the owner that point at a removed object are deleted
    too, before the objects: a cache row does not count as a user of an object, so deleting a
    request really frees (and forgets) what only it used, and the cache never keeps a tenant's
    data alive by itself. The next request for such a URL is simply fetched and compressed in
    full. (Rows of other owners cannot point there unless they were written for an image since
    gone; reuse checks that a row's objects exist before trusting it, which covers those.)
    """
    owner = req.owner or ""
    keys = {k for row in db.session.execute(select(*_KEY_COLUMNS).where(Image.request_id == req.id)) for k in row if k}
    db.session.delete(req)
    db.session.commit()
    if not keys:
        return 0
    shared: set[str | None] = set()
    for column in _KEY_COLUMNS:
        shared.update(db.session.scalars(select(column).where(column.in_(keys))).all())
    orphans = keys - shared
    if orphans:
        db.session.execute(
            delete(UrlResult).where(
                UrlResult.owner == owner, or_(*(column.in_(orphans) for column in _RESULT_KEY_COLUMNS))
            )
        )
    db.session.commit()
    for key in orphans:
        store.delete(key)
    return len(orphans)
