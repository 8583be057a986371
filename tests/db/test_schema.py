"""The schema is owned by the migrations (pixshift/schema.py): a model changed without its migration
would run in tests on SQLite files built by the same migrations and then fail, or silently differ,
in a deployment. `flask db check` (Alembic's autogenerate comparison) finds such drift."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest
from services import scaleout_services

from harness.livestack import BIN, MIGRATE_COMMAND, ROOT

CHECK_COMMAND = ["flask", "--app", "pixshift", "db", "check"]


def flask(command: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def upgraded(env: dict) -> dict:
    """``env`` after the deploy's migration step has built its (fresh) database to the newest revision."""
    migrated = flask(MIGRATE_COMMAND, env)
    assert migrated.returncode == 0, migrated.stderr
    return env


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.scaleout)])
def fresh_database(request, tmp_path):
    """The environment of a PixShift process on a database nothing has touched yet."""
    env = {"PIXSHIFT_INSTANCE_PATH": str(tmp_path / "instance")}
    if request.param == "sqlite":
        yield env  # the embedded default: instance/pixshift.db
        return
    with scaleout_services() as scaleout:
        yield {**env, "DATABASE_URL": scaleout["DATABASE_URL"]}


def test_the_migrations_build_exactly_the_models(fresh_database):
    checked = flask(CHECK_COMMAND, upgraded(fresh_database))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr


def test_the_check_sees_a_database_that_differs_from_the_models(tmp_path):
    """The comparison really reads the models (a check wired to no metadata would pass anything):
    an index the models declare, missing from the database, is reported."""
    env = upgraded({"PIXSHIFT_INSTANCE_PATH": str(tmp_path / "instance")})
    with sqlite3.connect(tmp_path / "instance" / "pixshift.db") as connection:
        connection.execute("DROP INDEX ix_images_state_lease")
    checked = flask(CHECK_COMMAND, env)
    assert checked.returncode != 0
    assert "ix_images_state_lease" in checked.stdout + checked.stderr
