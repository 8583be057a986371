"""catalog scale: shared URLs, reuse, windows per request, cancel, and one event per run

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 17:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# SQLite's copy of webhook_events has an unnamed UNIQUE(request_id); batch mode names it to drop it.
_SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade():
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("queued_through", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_id", BigId, nullable=True))
        batch_op.add_column(sa.Column("reused", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(batch_op.f("ix_images_source_id"), ["source_id"], unique=False)
        batch_op.drop_index("ix_images_request_state")
        batch_op.create_index("ix_images_request_state", ["request_id", "state", "id"], unique=False)
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table(
        "webhook_events", schema=None, naming_convention=_SQLITE_NAMES if sqlite else None
    ) as batch_op:
        batch_op.add_column(sa.Column("run", sa.Integer(), server_default="1", nullable=False))
        batch_op.drop_constraint(
            "uq_webhook_events_request_id" if sqlite else "webhook_events_request_id_key", type_="unique"
        )
        batch_op.create_unique_constraint("uq_webhook_events_request_run", ["request_id", "run"])


def downgrade():
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_constraint("uq_webhook_events_request_run", type_="unique")
        batch_op.create_unique_constraint("webhook_events_request_id_key", ["request_id"])
        batch_op.drop_column("run")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_request_state")
        batch_op.create_index("ix_images_request_state", ["request_id", "state"], unique=False)
        batch_op.drop_index(batch_op.f("ix_images_source_id"))
        batch_op.drop_column("reused")
        batch_op.drop_column("source_id")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("queued_through")
        batch_op.drop_column("cancelled_at")
        batch_op.drop_column("run")
