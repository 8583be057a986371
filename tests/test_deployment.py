"""docker-compose.yml and the Dockerfile describe the deployment the integration test runs.

No Docker engine runs here, so these files are checked by parsing, against the commands
tests/livestack.py starts (and tests/test_scaleout.py exercises)."""
from __future__ import annotations

from pathlib import Path

import yaml

from livestack import MIGRATE_COMMAND, WEB_COMMAND, WORKER_COMMAND

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_the_commands_the_integration_test_runs():
    services = compose()["services"]
    assert services["migrate"]["command"] == MIGRATE_COMMAND
    assert services["web"]["command"] == WEB_COMMAND
    assert services["worker"]["command"] == WORKER_COMMAND


def test_compose_has_every_service_healthchecked_and_ordered():
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "seaweedfs", "migrate", "web", "worker"}
    for name in ("postgres", "redis", "seaweedfs", "web", "worker"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["seaweedfs"]["condition"] == "service_healthy"
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and env["REDIS_URL"].startswith("redis://")
    assert "ports" not in services["worker"], "workers must scale with --scale worker=N, so no fixed ports"


def test_media_is_on_object_storage_and_databases_on_volumes():
    doc = compose()
    assert {"seaweed", "pgdata", "redisdata"} <= set(doc["volumes"])
    for name in ("web", "worker"):
        env = doc["services"][name]["environment"]
        assert env["PIXSHIFT_MEDIA_URL"].startswith("s3://")
        assert env["PIXSHIFT_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
        assert "volumes" not in doc["services"][name], "no shared directory: media is in S3"
    assert doc["services"]["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]


def test_dockerfile_ships_what_the_commands_need():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for path in ("pixshift/", "migrations/", "wsgi.py", "gunicorn.conf.py", "requirements.txt"):
        assert f"COPY {path}" in dockerfile or f" {path}" in dockerfile, path
    assert '"gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"' in dockerfile
