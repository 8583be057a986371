"""Store an accepted CSV as a request with its products and images, in one transaction."""
from __future__ import annotations

import uuid

from sqlalchemy import insert

from .csv_input import ProductRow
from .extensions import db
from .models import Image, Product, Request

_BATCH = 1000  # products per INSERT


def create_request(rows: list[ProductRow], *, filename: str | None, webhook_url: str | None,
                   owner: str | None = None, base_url: str | None = None) -> str:
    """Insert the request in bulk and return its id (a random UUID: unguessable)."""
    request_id = str(uuid.uuid4())
    filename = "".join(c for c in (filename or "") if c.isprintable())[:255]  # no NUL or controls
    db.session.add(Request(id=request_id, filename=filename or None, webhook_url=webhook_url,
                           owner=owner, base_url=base_url, product_count=len(rows), image_count=sum(len(r.urls) for r in rows)))
    db.session.flush()
    # In batches, still one transaction: the parameter lists SQLAlchemy builds for one INSERT of a
    # whole 50,000-row file took twice the memory of everything else the upload holds.
    for start in range(0, len(rows), _BATCH):
        batch = rows[start:start + _BATCH]
        product_ids = db.session.scalars(
            insert(Product).returning(Product.id, sort_by_parameter_order=True),
            [{"request_id": request_id, "position": start + i, "row": r.row, "serial_number": r.serial_number,
              "name": r.name} for i, r in enumerate(batch)],
        ).all()
        db.session.execute(
            insert(Image),
            [{"request_id": request_id, "product_id": pid, "position": n, "input_url": url}
             for pid, r in zip(product_ids, batch) for n, url in enumerate(r.urls)],
        )
    db.session.commit()
    return request_id
