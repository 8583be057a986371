"""The ``pixshift`` command, run for real (the console script pyproject.toml installs) against live
servers on loopback: upload --wait to completion following Socket.IO (or polling, with tokens),
status, download, exit codes, --json, the progress bar on a terminal, and serve + worker.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import requests
from catalog_server import CatalogHost
from services import unavailable
from webhook_receiver import Receiver

from harness.livestack import BIN, ROOT, WORKER_COMMAND, Stack, closed_port, listening_port, wait_until

SCRIPT = BIN / "pixshift"
HEADER = "Serial Number,Product Name,Input Image URLs\r\n"
TOKEN = "tok-cli-test"


def pixshift_argv() -> list[str]:
    """The installed console script; a checkout without ``pip install -e .`` runs the module."""
    return [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "pixshift.cli"]


def run(
    *args: str, server: Stack | None = None, env: dict | None = None, timeout: float = 120, **kwargs
) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PIXSHIFT_SERVER", "PIXSHIFT_TOKEN")}
    if server is not None:
        environment["PIXSHIFT_SERVER"] = server.base_url
    environment.update(env or {})
    return subprocess.run(
        [*pixshift_argv(), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=kwargs.pop("cwd", ROOT),
        **kwargs,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("cli"), {}, separate_consumer=False) as stack:
        yield stack


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    with Stack(
        tmp_path_factory.mktemp("cli-tokens"), {"PIXSHIFT_API_TOKENS": TOKEN}, separate_consumer=False, workers=4
    ) as stack:
        yield stack


def write_csv(tmp_path, rows: list[tuple[int, str, list[str]]], name: str = "products.csv"):
    path = tmp_path / name
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["Serial Number", "Product Name", "Input Image URLs"])
    for serial, product, urls in rows:
        writer.writerow([serial, product, ", ".join(urls)])
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def request_id_of(output: str) -> str:
    return re.search(r"request\s+([0-9a-f-]{36})", output).group(1)


def test_console_script_is_declared_and_installed():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"pixshift": "pixshift.cli:main"}
    if not SCRIPT.exists():
        unavailable(f"{SCRIPT} is missing: pip install -e . (requirements-dev.txt installs the package)")
    proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "upload" in proc.stdout and "exit codes" in proc.stdout


def test_upload_wait_live_then_status_and_download(server, image_server, tmp_path):
    urls = [image_server.url("photo1.jpg"), image_server.url("slow/photo2.jpg?delay=0.3")]
    path = write_csv(tmp_path, [(1, "Sneaker", urls), (2, "=Tote", [image_server.url("photo3.jpg")])])

    upload = run("upload", str(path), "--wait", server=server)
    assert upload.returncode == 0, upload.stdout + upload.stderr + server.logs()
    assert "live (Socket.IO)" in upload.stderr, upload.stderr  # followed the events, not polling
    assert "100.0%  3/3 images  done 3  failed 0" in upload.stderr, upload.stderr
    assert re.search(r"^state\s+completed$", upload.stdout, re.M), upload.stdout
    request_id = request_id_of(upload.stdout)

    status = run("status", request_id, "--json", server=server)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert (doc["request_id"], doc["state"], doc["counts"]["done"]) == (request_id, "completed", 3)

    assert "websocket-client" not in upload.stderr, upload.stderr
    # The savings total, from every status page: the same with one product per page.
    saved = re.search(r"^saved\s+(\d+(\.\d)? [KMG]?B) -> (\d+(\.\d)? [KMG]?B), saved \d+\.\d% .*$", upload.stdout, re.M)
    assert saved, upload.stdout
    human = run("status", request_id, server=server)
    assert human.returncode == 0 and "3 done, 0 failed" in human.stdout
    assert saved.group(0) in human.stdout.splitlines(), human.stdout
    paged = run("status", request_id, "--per-page", "1", server=server)
    assert paged.returncode == 0 and saved.group(0) in paged.stdout.splitlines(), paged.stdout
    assert f"pixshift download {request_id}" in human.stdout

    out = tmp_path / "out.csv"
    download = run("download", request_id, "-o", str(out), server=server)
    assert download.returncode == 0, download.stderr
    assert f"wrote {out} (2 products," in download.stdout
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows[0] == ["Serial Number", "Product Name", "Input Image URLs", "Output Image URLs"]
    assert [r[:2] for r in rows[1:]] == [["1", "Sneaker"], ["2", "'=Tote"]]
    outputs = [u.strip() for r in rows[1:] for u in r[3].split(",")]
    assert len(outputs) == 3
    for url in outputs:
        got = requests.get(url, timeout=10)
        assert got.status_code == 200 and got.headers["Content-Type"].startswith("image/")

    to_stdout = run("download", request_id, server=server)
    assert to_stdout.returncode == 0 and to_stdout.stdout.replace("\r\n", "\n") == out.read_text(
        encoding="utf-8"
    ).replace("\r\n", "\n")
    as_json = json.loads(run("--json", "download", request_id, "-o", str(tmp_path / "again.csv"), server=server).stdout)
    assert as_json["products"] == 2 and as_json["bytes"] == out.stat().st_size


def test_failed_images_exit_1_with_json_and_webhook(server, image_server, tmp_path):
    path = write_csv(tmp_path, [(7, "Lamp", [image_server.url("photo1.jpg"), image_server.url("missing/lamp.jpg")])])
    with Receiver(secret=os.environ["PIXSHIFT_WEBHOOK_SECRET"]) as receiver:
        proc = run("upload", str(path), "--wait", "--json", "--webhook", receiver.url, server=server)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)  # stdout is exactly one JSON document
        assert doc["state"] == "completed_with_errors"
        assert (doc["counts"]["done"], doc["counts"]["failed"]) == (1, 1)
        assert doc["webhook_url"] == receiver.url
        event = receiver.wait_for(1)[0]
        assert event["verified"]["data"]["request_id"] == doc["request_id"]

    status = run("status", doc["request_id"], server=server)
    assert status.returncode == 1
    assert "failed images:" in status.stdout and "missing/lamp.jpg" in status.stdout


def test_retry_wait_and_cancel(server, tmp_path):
    """``pixshift retry ID --wait`` runs the failed images again to the end (exit 0 once all are
    done); ``pixshift cancel ID`` stops a running request (exit 0: it did as asked; a status of
    the cancelled request exits 1, since not every image was done)."""
    with CatalogHost() as host:
        host.broken = {"lamp-back"}
        path = write_csv(tmp_path, [(7, "Lamp", [host.url("lamp-front"), host.url("lamp-back")])])
        first = run("upload", str(path), "--wait", "--json", server=server)
        assert first.returncode == 1 and json.loads(first.stdout)["counts"]["failed"] == 1
        request_id = json.loads(first.stdout)["request_id"]

        host.broken.clear()
        retried = run("retry", request_id, "--wait", server=server)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        assert "retrying 1 image" in retried.stderr and "state     completed" in retried.stdout
        assert host.hits["lamp-front"] == 1 and host.hits["lamp-back"] == 2
        again = run("retry", request_id, server=server)
        assert again.returncode == 2 and "no failed or cancelled image" in again.stderr

        held = write_csv(tmp_path, [(8, "Desk", [host.url("held-desk")])])
        request_id = run("upload", str(held), server=server).stdout.strip()
        host.wait_held(1)
        cancelled = run("cancel", request_id, "--json", server=server)
        assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["cancelled_at"]
        host.release()
        waited = run("status", request_id, "--wait", server=server)
        assert waited.returncode == 1 and "state     cancelled" in waited.stdout


def test_upload_without_wait_prints_the_id(server, image_server, tmp_path):
    path = write_csv(tmp_path, [(1, "Cup", [image_server.url("photo1.jpg")])])
    proc = run("upload", str(path), server=server)
    assert proc.returncode == 0, proc.stderr
    request_id = proc.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id)
    assert "pixshift status" in proc.stderr
    waited = run("status", request_id, "--wait", "--json", server=server)
    assert waited.returncode == 0 and json.loads(waited.stdout)["state"] == "completed"
    accepted = json.loads(run("upload", str(path), "--json", server=server).stdout)
    assert accepted["state"] == "queued" and accepted["images"] == 1


def test_errors_exit_2(server, image_server, tmp_path):
    missing = run("upload", str(tmp_path / "nope.csv"), server=server)
    assert missing.returncode == 2 and "no such file" in missing.stderr

    usage = run(server=server)
    assert usage.returncode == 2 and "usage:" in usage.stderr

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "1,,ftp://example.com/a.jpg\r\n")
    rejected = run("upload", str(bad), server=server)
    assert rejected.returncode == 2
    assert "400 invalid_csv" in rejected.stderr and "row 2" in rejected.stderr, rejected.stderr
    as_json = run("upload", str(bad), "--json", server=server)
    body = json.loads(as_json.stdout)
    assert as_json.returncode == 2 and body["error"] == "invalid_csv" and body["status"] == 400 and body["details"]

    unknown = run("status", "00000000-0000-4000-8000-000000000000", server=server)
    assert unknown.returncode == 2 and "404 request_not_found" in unknown.stderr

    slow = write_csv(tmp_path, [(1, "Slow", [image_server.url("slow/photo1.jpg?delay=3")])], "slow.csv")
    request_id = run("upload", str(slow), server=server).stdout.strip()
    early = run("download", request_id, "-o", str(tmp_path / "early.csv"), server=server)
    assert early.returncode == 2 and "409 not_finished" in early.stderr
    assert not (tmp_path / "early.csv").exists()
    timed_out = run("status", request_id, "--wait", "--wait-timeout", "0.5", server=server)
    assert timed_out.returncode == 2 and "timed out" in timed_out.stderr

    with closed_port() as port:
        nobody = run("--server", f"http://127.0.0.1:{port}", "status", request_id)
    assert nobody.returncode == 2 and "cannot reach PixShift" in nobody.stderr


def test_token_from_env_or_flag_and_polling_fallback(token_server, image_server, tmp_path):
    path = write_csv(tmp_path, [(1, "Mug", [image_server.url("photo2.jpg")])])

    refused = run("upload", str(path), "--json", server=token_server)
    assert refused.returncode == 2 and json.loads(refused.stdout)["error"] == "unauthorized"
    assert "401 unauthorized" in refused.stderr

    # Socket.IO is for logged-in browsers on a server with tokens: the CLI falls back to polling.
    proc = run("upload", str(path), "--wait", "--interval", "0.2", server=token_server, env={"PIXSHIFT_TOKEN": TOKEN})
    assert proc.returncode == 0, proc.stdout + proc.stderr + token_server.logs()
    assert "by polling every 0.2s" in proc.stderr, proc.stderr
    request_id = request_id_of(proc.stdout)

    assert run("status", request_id, "--token", TOKEN, server=token_server).returncode == 0
    assert run("--token", TOKEN, "status", request_id, server=token_server).returncode == 0
    other = run("status", request_id, "--token", "wrong", server=token_server)
    assert other.returncode == 2 and "401" in other.stderr


def test_progress_bar_redraws_in_place_on_a_terminal(server, image_server, tmp_path):
    urls = [image_server.url(f"slow/photo{n}.jpg?delay={0.2 * n}") for n in (1, 2, 3)]
    path = write_csv(tmp_path, [(n, f"P{n}", [u]) for n, u in enumerate(urls, 1)])
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("PIXSHIFT_SERVER", "PIXSHIFT_TOKEN")}
    proc = subprocess.Popen(
        [*pixshift_argv(), "--server", server.base_url, "upload", str(path), "--wait"],
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**env, "COLUMNS": "100"},
        cwd=ROOT,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    stdout = proc.communicate(timeout=30)[0].decode()
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text + stdout
    assert "\r[" in text and "100.0%  3/3 images" in text, repr(text)
    bar = re.findall(r"\r\[([#.]+)\]", text)[-1]
    assert set(bar) == {"#"}, bar  # full at the end
    assert "\n100.0%" not in text  # redrawn in place, not one line per update


def test_serve_and_worker_run_the_pieces(image_server, tmp_path):
    """``pixshift serve`` with no workers of its own and ``pixshift worker`` beside it finish a request."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIXSHIFT_SERVER", "PIXSHIFT_TOKEN")}
    env.update({"PIXSHIFT_INSTANCE_PATH": str(tmp_path / "instance"), "PYTHONUNBUFFERED": "1"})
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("serve", "worker")}
    processes = []
    try:
        processes.append(
            subprocess.Popen(
                [*pixshift_argv(), "serve", "--host", "127.0.0.1", "--port", "0", "--workers", "0"],
                env=env,
                cwd=ROOT,
                stdout=logs["serve"],
                stderr=subprocess.STDOUT,
            )
        )
        port = wait_until(lambda: listening_port(tmp_path / "serve.log"), 30, message="pixshift serve to bind")
        base = f"http://127.0.0.1:{port}"

        def healthy():
            assert processes[0].poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return requests.get(base + "/healthz", timeout=1).ok
            except requests.ConnectionError:
                return False

        wait_until(healthy, 30, message="pixshift serve")
        processes.append(
            subprocess.Popen(
                [*pixshift_argv(), "worker", "-w", "2", "--", "-d", "0.05", "-m", "0.5"],
                env=env,
                cwd=ROOT,
                stdout=logs["worker"],
                stderr=subprocess.STDOUT,
            )
        )
        path = write_csv(tmp_path, [(1, "Chair", [image_server.url("photo1.jpg")])])
        # Without Redis, progress events stay in the worker's process: follow by polling.
        proc = run("--server", base, "upload", str(path), "--wait", "--no-live", "--interval", "0.2", timeout=90)
        assert proc.returncode == 0, (
            proc.stdout
            + proc.stderr
            + "".join((tmp_path / f"{n}.log").read_text(errors="replace")[-3000:] for n in logs)
        )
        # `pixshift worker` became (exec, same PID) the deployment's worker command, with its options.
        worker = processes[1]
        argv = (Path("/proc") / str(worker.pid) / "cmdline").read_bytes().decode().split("\0")[:-1]
        expected = [str(BIN / WORKER_COMMAND[0]), *WORKER_COMMAND[1:]]
        expected[expected.index("-w") + 1] = "2"
        assert argv[1:] == [*expected, "-d", "0.05", "-m", "0.5"], argv  # argv[0]: the script's interpreter
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")
        assert f"Huey consumer started with 2 thread, PID {worker.pid} " in worker_log, worker_log[-2000:]
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
        for p in processes:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs.values():
            f.close()


def test_wait_without_websocket_client_says_nothing_about_it(server, image_server, tmp_path):
    """websocket-client is not a runtime dependency: without it the client follows the request over
    Socket.IO long-polling and prints no 'websocket-client package not installed' error."""
    hide = tmp_path / "no-websocket"
    hide.mkdir()
    (hide / "websocket.py").write_text("raise ImportError('websocket-client is not installed here')\n")
    path = write_csv(tmp_path, [(1, "Mug", [image_server.url("photo2.jpg")])])
    pythonpath = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH", "")) if p)
    proc = run("upload", str(path), "--wait", server=server, env={"PYTHONPATH": pythonpath})
    assert proc.returncode == 0, proc.stdout + proc.stderr + server.logs()
    assert "live (Socket.IO)" in proc.stderr, proc.stderr
    assert "websocket" not in proc.stderr.lower(), proc.stderr
    assert re.search(r"^saved\s+\S+ \S*B -> ", proc.stdout, re.M), proc.stdout
