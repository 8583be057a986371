"""url results: what earlier requests made of a URL, for revalidation across requests

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 17:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "url_results",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("url_sha256", sa.String(length=64), nullable=False),
        sa.Column("settings_key", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("last_modified", sa.Text(), nullable=True),
        sa.Column("input_key", sa.String(length=64), nullable=False),
        sa.Column("input_bytes", sa.BigInteger(), nullable=False),
        sa.Column("input_format", sa.String(length=16), nullable=False),
        sa.Column("input_width", sa.Integer(), nullable=False),
        sa.Column("input_height", sa.Integer(), nullable=False),
        sa.Column("input_thumb_key", sa.String(length=64), nullable=False),
        sa.Column("output_key", sa.String(length=64), nullable=False),
        sa.Column("output_bytes", sa.BigInteger(), nullable=False),
        sa.Column("output_format", sa.String(length=16), nullable=False),
        sa.Column("output_width", sa.Integer(), nullable=False),
        sa.Column("output_height", sa.Integer(), nullable=False),
        sa.Column("output_thumb_key", sa.String(length=64), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=False),
        sa.Column("scale", sa.Float(), nullable=False),
        sa.Column("encodes", sa.Integer(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "url_sha256", "settings_key", name="uq_url_results_owner_url_settings"),
    )
    with op.batch_alter_table("url_results", schema=None) as batch_op:
        batch_op.create_index(
            "ix_url_results_owner_input_settings", ["owner", "input_key", "settings_key"], unique=False
        )


def downgrade():
    with op.batch_alter_table("url_results", schema=None) as batch_op:
        batch_op.drop_index("ix_url_results_owner_input_settings")
    op.drop_table("url_results")
