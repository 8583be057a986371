"""Run PixShift as real processes for end-to-end tests, exactly as a deployment starts it."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for the duration of the block: bound, never listening,
    so no other process can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


_LISTENING = re.compile(rb"Listening at: http://[^:]+:(\d+)")


def listening_port(log: Path) -> int | None:
    """The port a gunicorn (``python -m pixshift``, ``pixshift serve``, the scale-out web process)
    says it bound in its log: they run with PORT=0, so the system picks a port no one holds."""
    found = _LISTENING.search(log.read_bytes()) if log.exists() else None
    return int(found[1]) if found else None


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@contextlib.contextmanager
def scaleout_env(database_url: str, redis_url: str):
    """A fresh PostgreSQL database and Redis key prefix for one test, dropped afterwards."""
    import psycopg
    import redis
    from sqlalchemy.engine import make_url

    name = "pixshift_test_" + secrets.token_hex(4)
    admin_url = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(admin_url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "DATABASE_URL": admin_url.set(database=name).render_as_string(hide_password=False),
            "REDIS_URL": redis_url,
            "PIXSHIFT_QUEUE_NAME": name,
        }
    finally:
        r = redis.Redis.from_url(redis_url)
        for key in r.scan_iter(f"*{name}*"):
            r.delete(key)
        # DROP DATABASE makes PostgreSQL take a checkpoint of the whole cluster and waits for it:
        # 0.1 s on a quiet server, 1-2 s while other tests write. Nothing waits for the database to be
        # gone, so the drop runs beside the next test; the process waits for it before it exits.
        threading.Thread(
            target=_drop_database, args=(admin_url.render_as_string(hide_password=False), name), name=f"drop {name}"
        ).start()


def _drop_database(admin_dsn: str, name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error as exc:  # a database left behind; raised here it would fail whichever test runs
        print(f"harness: could not drop database {name}: {exc}", file=sys.stderr)


# The commands docker-compose.yml runs; tests/test_deployment.py checks the file uses the same.
MIGRATE_COMMAND = ["flask", "--app", "pixshift", "db", "upgrade"]
WEB_COMMAND = ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
WORKER_COMMAND = ["huey_consumer", "pixshift.worker.huey", "-k", "thread", "-w", "16"]
# Stack.stop: how long a process gets to stop on SIGTERM before it is stopped at once (SIGINT), and
# then before SIGKILL. A graceful stop of an idle stack takes 1-3 s.
STOP_GRACE_SECONDS = 5.0


class Stack:
    """``python -m pixshift`` on a free port, plus ``huey_consumer`` processes when asked;
    or, with ``gunicorn=True``, the scale-out web process exactly as docker-compose.yml runs it."""

    def __init__(
        self, tmp_path: Path, env: dict, *, separate_consumer: bool, workers: int = 8, gunicorn: bool = False
    ) -> None:
        self.tmp_path = Path(tmp_path)
        self.port = 0  # the port gunicorn bound (PORT=0: the system picks a free one), once it says
        self.base_url = ""
        self.env = {
            **os.environ,
            "PIXSHIFT_INSTANCE_PATH": str(self.tmp_path / "instance"),
            "HOST": "127.0.0.1",
            "PORT": "0",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.separate_consumer = separate_consumer
        self.workers = workers
        if separate_consumer:
            self.env["PIXSHIFT_INPROCESS_WORKERS"] = "0"
        else:
            self.env["PIXSHIFT_INPROCESS_WORKERS"] = str(workers)
        self.processes: dict[str, subprocess.Popen] = {}
        self.log_files: list = []  # each process's log, open for it to write: closed by stop()
        self.session = requests.Session()
        self.gunicorn = gunicorn

    def __enter__(self) -> Stack:
        try:
            if self.gunicorn:
                subprocess.run(
                    [str(BIN / MIGRATE_COMMAND[0]), *MIGRATE_COMMAND[1:]],
                    env=self.env,
                    check=True,
                    cwd=ROOT,
                    capture_output=True,
                )
                self.start("web", [str(BIN / WEB_COMMAND[0]), *WEB_COMMAND[1:]])
            else:
                self.start("web", [sys.executable, "-m", "pixshift"])
            self.port = wait_until(self._bound_port, 30, message=f"PixShift to bind a port\n{self.logs()}")
            self.base_url = f"http://127.0.0.1:{self.port}"
            wait_until(self._healthy, 30, message=f"PixShift at {self.base_url}\n{self.logs()}")
            if self.separate_consumer:
                self.start_consumer("worker-1")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")
        self.log_files.append(log)
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.processes[name] = proc
        return proc

    def start_consumer(self, name: str) -> subprocess.Popen:
        """The command docker-compose.yml's worker service runs (polling faster, to keep tests short)."""
        argv = [str(BIN / WORKER_COMMAND[0]), *WORKER_COMMAND[1:]]
        argv[argv.index("-w") + 1] = str(self.workers)
        return self.start(name, [*argv, "-d", "0.05", "-m", "0.5"])

    def stop(self) -> None:
        """SIGTERM to every process (a graceful stop); whatever still runs STOP_GRACE_SECONDS later
        gets SIGINT (gunicorn's quick stop: the arbiter stops its worker at once and exits), and
        SIGKILL if even that does not end it."""
        # Our own keep-alive connection first: on SIGTERM the scale-out web process (gunicorn's
        # eventlet worker) waits for every open connection, an idle keep-alive one for its
        # keepalive timeout (2 s). Closed, it ends at once. (The embedded server drops idle ones.)
        self.session.close()
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, proc in self.processes.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
                continue
            except subprocess.TimeoutExpired:
                pass
            # Seen: the eventlet web process waits out its graceful_timeout (20 s) for a Socket.IO
            # WebSocket whose client has gone (engineio's writer closes the socket under the reader).
            print(
                f"harness: {name} (pid {proc.pid}) still running {STOP_GRACE_SECONDS:.0f} s after SIGTERM: SIGINT",
                file=sys.stderr,
            )
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.log_files:
            log.close()
        self.log_files.clear()

    def serving_pid(self, timeout: float = 10) -> int:
        """The process that runs the app: gunicorn's only worker, a child of ``processes["web"]``
        (``python -m pixshift`` and the scale-out web process both run gunicorn)."""
        web = self.processes["web"].pid

        def worker() -> int | None:
            tasks = Path(f"/proc/{web}/task")
            try:
                kids = [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]
            except OSError:  # a thread ended between listing and reading
                return None
            return kids[0] if len(kids) == 1 else None

        return wait_until(worker, timeout, message=f"gunicorn's worker under {web}\n{self.logs()}")

    def logs(self, tail: int = 4000) -> str:
        out = []
        for name in self.processes:
            path = self.tmp_path / f"{name}.log"
            if path.exists():
                out.append(f"--- {name} ---\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def _bound_port(self) -> int | None:
        if self.processes["web"].poll() is not None:
            raise RuntimeError(f"PixShift exited with {self.processes['web'].returncode}\n{self.logs()}")
        return listening_port(self.tmp_path / "web.log")

    def _healthy(self) -> bool:
        if self.processes["web"].poll() is not None:
            raise RuntimeError(f"PixShift exited with {self.processes['web'].returncode}\n{self.logs()}")
        try:
            return self.session.get(self.base_url + "/healthz", timeout=2).ok
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            return False

    def url(self, path: str) -> str:
        return self.base_url + path

    def upload(self, csv_text: str | bytes, webhook_url: str | None = None, filename: str = "products.csv"):
        data = {"webhook_url": webhook_url} if webhook_url else {}
        body = csv_text.encode() if isinstance(csv_text, str) else csv_text
        return self.session.post(
            self.url("/upload"), files={"file": (filename, body, "text/csv")}, data=data, timeout=30
        )

    def status(self, request_id: str, **params) -> dict:
        response = self.session.get(self.url(f"/status/{request_id}"), params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_finished(self, request_id: str, timeout: float = 90) -> dict:
        def finished():
            doc = self.status(request_id)
            return doc if doc["links"]["output_csv"] else None

        try:
            return wait_until(finished, timeout, interval=0.1, message=f"request {request_id} to finish")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\nlast status: {self.status(request_id)}\n{self.logs()}") from None
