"""The database schema is owned by Alembic migrations (``migrations/``), never by ``create_all``.

``flask --app pixshift db upgrade`` creates or upgrades it; ``python -m pixshift`` runs that
itself, being the only process of the embedded default. Scale-out runs it once per deploy.
"""

from __future__ import annotations

from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from flask_migrate import upgrade as _upgrade

from pixshift.db.extensions import db


def upgrade_schema() -> None:
    """Bring the database to the newest migration (idempotent)."""
    _upgrade()


def check_schema() -> None:
    """Raise unless the database is at the newest migration (readiness, fail fast)."""
    config = current_app.extensions["migrate"].migrate.get_config()
    heads = set(ScriptDirectory.from_config(config).get_heads())
    with db.engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current != heads:
        raise RuntimeError(
            f"database schema is at {sorted(current) or 'nothing'}, the code needs {sorted(heads)}: "
            "run `flask --app pixshift db upgrade`"
        )
