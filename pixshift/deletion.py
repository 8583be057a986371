"""Deleting a request: its rows, and the stored objects no other request still uses."""

from __future__ import annotations

from sqlalchemy import select

from .extensions import db
from .models import Image, Request
from .storage import MediaStore

_KEY_COLUMNS = (Image.input_key, Image.output_key, Image.input_thumb_key, Image.output_thumb_key)


def delete_request(req: Request, store: MediaStore) -> int:
    """Delete a finished request and return how many objects were removed from the store.

    Rows go first (cascading to products, images, webhook events and deliveries), then every
    object of the request that no remaining image references: content addressing means another
    request may share it. An upload storing the same bytes at the same moment could lose its
    object; that image then reads as missing (503), which is why only finished requests go.
    """
    keys = {k for row in db.session.execute(select(*_KEY_COLUMNS).where(Image.request_id == req.id)) for k in row if k}
    db.session.delete(req)
    db.session.commit()
    if not keys:
        return 0
    shared: set[str | None] = set()
    for column in _KEY_COLUMNS:
        shared.update(db.session.scalars(select(column).where(column.in_(keys))).all())
    db.session.commit()
    orphans = keys - shared
    for key in orphans:
        store.delete(key)
    return len(orphans)
