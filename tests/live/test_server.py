"""``python -m pixshift`` serves on gunicorn (pixshift/server.py): no development server, a prompt
clean stop with clients connected, nothing left behind when it is killed outright."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests
import socketio
from csv_files import csv_text
from processes import cpu_ticks, gone, pool_workers

from harness.livestack import Stack, wait_until
from pixshift.server import GRACEFUL_SECONDS


def test_python_m_pixshift_serves_on_gunicorn_without_a_development_server_warning(tmp_path):
    with Stack(tmp_path, {}, separate_consumer=False, workers=2) as stack:
        response = stack.session.get(stack.url("/healthz"), timeout=10)
        assert response.ok and response.headers["Server"] == "gunicorn"
        assert stack.serving_pid() != stack.processes["web"].pid
        wait_until(lambda: "PixShift listening on" in stack.logs(), 10, message="the listening line")
        log = stack.logs(tail=100_000)
    assert "development server" not in log.lower() and "production deployment" not in log.lower(), log
    assert "Werkzeug" not in log and "Traceback" not in log, log


def test_a_keep_alive_connection_survives_an_answer_given_before_the_body_was_read(tmp_path):
    """A 400 (a body that is not JSON) or a 405 is answered before the app reads the body; the same
    keep-alive connection must then carry the client's next request (it was lost at times)."""
    with Stack(tmp_path, {}, separate_consumer=False, workers=2) as stack, requests.Session() as s:
        for _ in range(40):
            assert s.post(stack.url("/api/webhooks"), data="nope", timeout=10).status_code == 400
            assert s.get(stack.url("/healthz"), timeout=10).ok
            assert s.post(stack.url("/healthz"), data="abc", timeout=10).status_code == 405
            assert s.get(stack.url("/healthz"), timeout=10).ok


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_service_promptly_with_clients_connected(tmp_path, sig):
    """Socket.IO clients (WebSocket and long-polling) and an idle keep-alive connection do not make
    the service wait out its grace period (GRACEFUL_SECONDS, 10 s)."""
    with Stack(tmp_path, {}, separate_consumer=False, workers=2) as stack:
        worker = stack.serving_pid()
        clients = []
        for transport in ("websocket", "polling"):
            client = socketio.Client(reconnection=False)
            client.connect(stack.base_url, transports=[transport], wait_timeout=10)
            clients.append(client)
        idle = requests.Session()
        assert idle.get(stack.url("/healthz"), timeout=10).ok
        began = time.monotonic()
        stack.processes["web"].send_signal(sig)
        stack.processes["web"].wait(20)
        wait_until(lambda: gone(worker), 5, message=f"worker {worker} to exit")
        took = time.monotonic() - began
        for client in clients:
            wait_until(lambda c=client: not c.connected, 10, message="the Socket.IO client to be disconnected")
        idle.close()
    assert stack.processes["web"].returncode == 0, stack.logs()
    # Waiting out the grace period takes all of it: anything shorter did not, however busy the machine.
    assert took < GRACEFUL_SECONDS, f"{took:.1f} s to stop\n{stack.logs()}"


def test_killing_the_service_outright_takes_its_worker_and_compression_children_with_it(tmp_path, image_server):
    """SIGKILL of ``python -m pixshift`` (gunicorn's arbiter) mid-image: its worker sees its parent
    gone and exits, and the compression children exit with the worker."""
    with Stack(tmp_path, {"PIXSHIFT_CPU_SLOTS": "1"}, separate_consumer=False, workers=2) as stack:
        image_server.generated(6000, 4000, quality=95)  # about a second of decoding and encoding
        stack.upload(csv_text([(1, "Big", ["gen/6000x4000.jpg?q=95"])], image_server)).raise_for_status()
        worker = stack.serving_pid()
        wait_until(
            lambda: any(cpu_ticks(c) > 20 for c in pool_workers(worker)), 60, message="a compression child to be busy"
        )
        left = [worker, *pool_workers(worker)]
        os.kill(stack.processes["web"].pid, signal.SIGKILL)
        stack.processes["web"].wait(10)
        wait_until(
            lambda: all(gone(pid) for pid in left),
            15,
            message=f"{[pid for pid in left if not gone(pid)]} of {left} to exit\n{stack.logs()}",
        )


def test_every_thread_of_the_embedded_default_can_have_a_sqlite_connection_at_once(app):
    """Request threads, worker threads, relay and scheduler never wait for the pool (they did with
    SQLAlchemy's 5 + 10 while uploads held connections waiting for SQLite's write lock)."""
    from pixshift.db.extensions import db

    with app.app_context():
        assert db.engine.url.get_backend_name() == "sqlite"
        assert db.engine.pool.size() >= app.config["WEB_THREADS"] + app.config["INPROCESS_WORKERS"] + 2
