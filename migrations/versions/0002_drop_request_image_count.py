"""drop requests.image_count: written at upload, never read (counts come from the images' states)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 18:30:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("image_count")


def downgrade():
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image_count", sa.Integer(), nullable=False, server_default="0"))
