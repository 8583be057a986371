"""Database model: a Request holds Products (CSV rows), a Product holds Images (its URLs, in order).

State names live here, and only ``pixshift.pipeline.processing`` moves an image or a request between them.
Counts are derived from image states with one grouped query rather than kept in counters,
so they cannot drift when a worker dies between two writes.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypedDict

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false

from pixshift.db.extensions import db

if TYPE_CHECKING:
    # db.Model is a subclass of Base that Flask-SQLAlchemy builds at runtime, which mypy cannot follow.
    from pixshift.db.extensions import Base as Model
else:
    Model = db.Model

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands datetimes back without their zone, so it is put back."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


class RequestState(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ImageState(enum.StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class ImageCounts(TypedDict):
    """A request's images by state (derived, never stored), and the percentage finished."""

    total: int
    queued: int
    processing: int
    done: int
    failed: int
    cancelled: int
    percent: float


FINISHED_REQUEST_STATES = (
    RequestState.COMPLETED,
    RequestState.COMPLETED_WITH_ERRORS,
    RequestState.FAILED,
    RequestState.CANCELLED,
)
FINISHED_IMAGE_STATES = (ImageState.DONE, ImageState.FAILED, ImageState.CANCELLED)


class Request(Model):
    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    state: Mapped[str] = mapped_column(String(24), default=RequestState.QUEUED.value, index=True)
    filename: Mapped[str | None] = mapped_column(String(255))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    base_url: Mapped[str | None] = mapped_column(Text)  # how the uploader reached us, for links in events
    owner: Mapped[str | None] = mapped_column(String(64), index=True)  # hash of the API token that made it
    product_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # fan-out done
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # 1, and one more each time its failed images are retried: each run finishes, once, with its own event.
    run: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # cancel asked for
    # The request's window of image tasks in the queue: the highest image id handed to it so far.
    queued_through: Mapped[int | None] = mapped_column(BigInteger)

    products = relationship(
        "Product",
        back_populates="request",
        order_by="Product.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class Product(Model):
    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("request_id", "serial_number"),
        Index("ix_products_request_position", "request_id", "position"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # 0-based order in the CSV
    row: Mapped[int] = mapped_column(Integer)  # the CSV row, header = 1, as a spreadsheet numbers it
    serial_number: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(Text)

    request = relationship("Request", back_populates="products")
    images = relationship(
        "Image", back_populates="product", order_by="Image.position", cascade="all, delete-orphan", passive_deletes=True
    )


class Image(Model):
    __tablename__ = "images"
    __table_args__ = (
        # With id last: a request's next queued image is one index seek (pixshift.pipeline.windows).
        Index("ix_images_request_state", "request_id", "state", "id"),
        Index("ix_images_state_lease", "state", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 0-based order within the product's URL list
    input_url: Mapped[str] = mapped_column(Text)
    # The first image of the request with the same URL: it alone is fetched and compressed, and
    # its result is copied here when it ends.
    source_id: Mapped[int | None] = mapped_column(BigId, index=True)
    # Nothing was downloaded in full or compressed for this image: the same URL earlier in the
    # request, or a result of an earlier request that the host confirmed unchanged.
    reused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    state: Mapped[str] = mapped_column(String(16), default=ImageState.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # processing: the worker's lease; queued for a retry: by when its task must have run.
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    input_key: Mapped[str | None] = mapped_column(String(64))
    input_bytes: Mapped[int | None] = mapped_column(BigInteger)
    input_format: Mapped[str | None] = mapped_column(String(16))
    input_width: Mapped[int | None] = mapped_column(Integer)
    input_height: Mapped[int | None] = mapped_column(Integer)
    input_thumb_key: Mapped[str | None] = mapped_column(String(64))

    output_key: Mapped[str | None] = mapped_column(String(64))
    output_bytes: Mapped[int | None] = mapped_column(BigInteger)
    output_format: Mapped[str | None] = mapped_column(String(16))
    output_width: Mapped[int | None] = mapped_column(Integer)
    output_height: Mapped[int | None] = mapped_column(Integer)
    output_thumb_key: Mapped[str | None] = mapped_column(String(64))
    quality: Mapped[int | None] = mapped_column(Integer)
    scale: Mapped[float | None] = mapped_column(Float)
    encodes: Mapped[int | None] = mapped_column(Integer)
    notes: Mapped[str | None] = mapped_column(Text)  # comma-separated, e.g. "exif_rotated,downscaled"

    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    product = relationship("Product", back_populates="images")


class UrlResult(Model):
    """What an earlier request made of one URL, for one owner and one set of compression settings:
    the host's validators (for a conditional GET) and the stored result (to reuse on a 304, or when
    new bytes hash to an input already compressed). Written and read by ``pixshift.pipeline.reuse`` only.

    ``owner`` is the request's token hash, '' on a single-tenant install (a NULL would defeat the
    unique key), so a tenant never reuses, or learns of, another's fetches. URLs are keyed by their
    SHA-256: PostgreSQL cannot b-tree index text of any length.
    """

    __tablename__ = "url_results"
    __table_args__ = (
        UniqueConstraint("owner", "url_sha256", "settings_key", name="uq_url_results_owner_url_settings"),
        Index("ix_url_results_owner_input_settings", "owner", "input_key", "settings_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64))
    url_sha256: Mapped[str] = mapped_column(String(64))
    settings_key: Mapped[str] = mapped_column(String(64))  # pixshift.pipeline.reuse.settings_key
    url: Mapped[str] = mapped_column(Text)  # for people reading the table; lookups use url_sha256
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)

    input_key: Mapped[str] = mapped_column(String(64))  # = SHA-256 of the input bytes
    input_bytes: Mapped[int] = mapped_column(BigInteger)
    input_format: Mapped[str] = mapped_column(String(16))
    input_width: Mapped[int] = mapped_column(Integer)
    input_height: Mapped[int] = mapped_column(Integer)
    input_thumb_key: Mapped[str] = mapped_column(String(64))
    output_key: Mapped[str] = mapped_column(String(64))
    output_bytes: Mapped[int] = mapped_column(BigInteger)
    output_format: Mapped[str] = mapped_column(String(16))
    output_width: Mapped[int] = mapped_column(Integer)
    output_height: Mapped[int] = mapped_column(Integer)
    output_thumb_key: Mapped[str] = mapped_column(String(64))
    quality: Mapped[int] = mapped_column(Integer)
    scale: Mapped[float] = mapped_column(Float)
    encodes: Mapped[int] = mapped_column(Integer)
    notes: Mapped[str | None] = mapped_column(Text)

    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookEndpoint(Model):
    """A receiver registered through the API or the form; gets every event of its owner's requests."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(255))
    secret: Mapped[str] = mapped_column(String(80))  # whsec_..., shown once at creation
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # Deleting keeps the row (disabled) so its deliveries' history still names it.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookEvent(Model):
    """What happened, once per run of a request (the unique (request_id, run) makes the database
    enforce it; a retry of failed images is a new run)."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("request_id", "run", name="uq_webhook_events_request_run"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_...: the webhook-id header
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    run: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body sent, so every retry is byte-identical
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    request = relationship("Request")
    deliveries = relationship("WebhookDelivery", back_populates="event", order_by="WebhookDelivery.id")


class WebhookDelivery(Model):
    """One event to one receiver, retried on a schedule until it is delivered or given up."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True)
    endpoint_id: Mapped[str | None] = mapped_column(ForeignKey("webhook_endpoints.id"))  # None: the upload's URL
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)

    event = relationship("WebhookEvent", back_populates="deliveries")
    endpoint = relationship("WebhookEndpoint")
    attempt_log = relationship(
        "DeliveryAttempt", order_by="DeliveryAttempt.id", cascade="all, delete-orphan", passive_deletes=True
    )


class DeliveryAttempt(Model):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
