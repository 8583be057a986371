"""docker-compose.yml and the Dockerfile describe the deployment the integration test runs.

No Docker engine runs here, so these files are checked by parsing, against the commands
harness/livestack.py starts (and tests/test_scaleout.py exercises)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from harness.livestack import MIGRATE_COMMAND, WEB_COMMAND, WORKER_COMMAND

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


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _landing(workdir: Path, source: str, dest: str) -> Path:
    """Where ``COPY source dest`` puts source: a directory's contents go into dest; a file goes into
    dest when dest is a directory (``.`` or ending in ``/``), else becomes dest."""
    target = workdir / dest
    if source.endswith("/") or not (dest.endswith("/") or dest in (".", "..")):
        return target
    return target / Path(source).name


def test_dockerfile_ships_what_the_commands_need():
    """Each file the three commands load is copied to where they look for it (the WORKDIR), the
    pinned requirements are installed, and the image starts the web command by default."""
    instructions = dockerfile_instructions()
    [workdir] = [Path(args) for name, args in instructions if name == "WORKDIR"]
    shipped: dict[str, Path] = {}  # source in the repository -> where it lands in the image
    for name, args in instructions:
        if name == "COPY":
            *sources, dest = args.split()
            assert not any(s.startswith("--") for s in sources), args  # no --from stages to follow here
            for source in sources:
                shipped[source] = _landing(workdir, source, dest)
    for path in ("pixshift/", "migrations/", "wsgi.py", "gunicorn.conf.py", "requirements.txt"):
        assert path in shipped, f"{path} is not copied into the image"
        assert (ROOT / path).exists(), path
        assert shipped[path] == workdir / path.rstrip("/"), (path, shipped[path])
    copied_requirements = [
        i for i, (name, args) in enumerate(instructions) if name == "COPY" and "requirements.txt" in args.split()[:-1]
    ]
    installs = [
        i for i, (name, args) in enumerate(instructions) if name == "RUN" and "pip install -r requirements.txt" in args
    ]
    assert copied_requirements and installs and copied_requirements[0] < installs[0]
    [(_, cmd)] = [(name, args) for name, args in instructions if name == "CMD"]
    assert json.loads(cmd) == WEB_COMMAND
