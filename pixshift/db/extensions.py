"""Extension objects, bound to an app in ``create_app`` so any module can import them."""

import sqlite3

from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
socketio = SocketIO()
migrate = Migrate()


def rowcount(result: object) -> int:
    """Rows an UPDATE matched: how a conditional UPDATE says whether it won (``Session.execute`` is
    typed as returning a Result; for DML it is a CursorResult)."""
    assert isinstance(result, CursorResult)
    return result.rowcount


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """SQLite: enforce foreign keys (cascades) and use WAL, so readers never block the writer."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
