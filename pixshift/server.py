"""The embedded default's web server: gunicorn, started from ``python -m pixshift``.

The process ``python -m pixshift`` starts becomes gunicorn's arbiter: it binds HOST:PORT and
forks **one** worker process of the gthread class. That worker is the embedded default proper: it
builds the app, brings the schema up to date, runs the Huey consumer's worker threads beside its
request threads and relays progress to Socket.IO clients, all in one process, because without
Redis progress events travel in-process. Threads rather than eventlet: worker threads block
(SQLite, hashing, waiting on compression children) and are niced one by one, which green threads
on one OS thread would undo; gthread hands the socket to simple-websocket, so Socket.IO keeps its
WebSocket transport. Idle keep-alive connections wait in gthread's poller, not in a thread.

Shutdown: SIGTERM lets requests in flight finish (GRACEFUL_SECONDS), SIGINT stops at once; either
way Socket.IO clients are disconnected and the consumer stopped before the worker exits. If the
arbiter dies without cleanup (SIGKILL), the worker sees its parent change within a second and exits
too; its compression children follow it (``codec_processes``). If the worker dies, the arbiter
starts another (images it held are given back by the lease sweep).
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from pixshift import create_app, logs
from pixshift.db.extensions import socketio
from pixshift.pipeline import tasks

from .config import Config

if TYPE_CHECKING:
    from flask import Flask
    from huey import Huey
    from huey.consumer import Consumer

GRACEFUL_SECONDS = 10  # a SIGTERM lets requests in flight finish this long
HEARTBEAT_SECONDS = 60  # the arbiter replaces a worker whose main loop is silent this long


def start_inprocess_consumer(huey: Huey, workers: int) -> Consumer:
    """Start Huey's thread workers and scheduler here, leaving signal handling to the web server."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer = huey.create_consumer(
        workers=workers,
        worker_type="thread",
        periodic=True,
        initial_delay=0.05,
        max_delay=0.5,
        check_worker_health=False,
    )
    consumer.start()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    return consumer


class EmbeddedServer(BaseApplication):
    """gunicorn configured from PixShift's settings; ``load`` runs in the worker process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.consumer: Consumer | None = None
        super().__init__()

    def load_config(self) -> None:
        c = self.config
        host = f"[{c.HOST}]" if ":" in c.HOST else c.HOST
        settings = {
            "bind": [f"{host}:{c.PORT}"],
            "workers": 1,
            "worker_class": EmbeddedWorker,
            "threads": c.WEB_THREADS,
            "timeout": HEARTBEAT_SECONDS,
            "graceful_timeout": GRACEFUL_SECONDS,
            "accesslog": None,
            "logger_class": logs.GunicornLogger,
            "loglevel": c.LOG_LEVEL.lower(),
            # gunicorn 25's control socket lives in one per-user path: a second PixShift (or a
            # scale-out gunicorn) on the machine would take it over. Nothing here uses it.
            "control_socket_disable": True,
            "worker_exit": _worker_exit,
        }
        for name, value in settings.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        """Build the app in the worker: schema, tasks bound to it, consumer threads, progress relay."""
        from pixshift.db.schema import upgrade_schema
        from pixshift.web.realtime import start_relay

        app = create_app()
        with app.app_context():
            upgrade_schema()  # the embedded default is one service: it may own its schema
        tasks.bind_app(app)
        if app.config["INPROCESS_WORKERS"] > 0:
            self.consumer = start_inprocess_consumer(tasks.huey, app.config["INPROCESS_WORKERS"])
        start_relay(app)
        app.logger.info("PixShift listening on http://%s:%s/", app.config["HOST"], app.config["PORT"])
        return app

    def close_live_connections(self) -> None:
        """Disconnect Socket.IO clients: each holds a request thread until it goes."""
        if self.callable is not None:
            # Not eio.disconnect(): it waits until each polling client has fetched its close packet.
            for client in list(socketio.server.eio.sockets.values()):
                client.close(wait=False)

    def stop_background(self) -> None:
        self.close_live_connections()
        if self.consumer is not None:
            self.consumer.stop(graceful=False)
            self.consumer = None


class EmbeddedWorker(ThreadWorker):
    """gthread, plus: when told to stop (SIGTERM, SIGINT) or orphaned, first let go of the
    connections that only wait (idle keep-alive ones, Socket.IO clients), so the graceful wait is for
    requests in flight. gthread (25.3) would otherwise wait out GRACEFUL_SECONDS for any idle
    keep-alive connection, and a Socket.IO client never leaves by itself."""

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self.method_queue.defer(self._let_waiting_connections_go)  # on the main loop, not in the handler

    def handle_quit(self, sig, frame) -> None:
        """SIGINT, SIGQUIT: stop at once, from the main loop. gthread shuts its thread pool down in
        the signal handler itself, which deadlocks when the signal lands while the main loop holds
        the pool's lock (handing it a request): about one stop in ten under load."""
        self.alive = False
        self.method_queue.defer(self._quit)  # a SimpleQueue: safe to call from a signal handler

    def _quit(self) -> None:
        self._let_waiting_connections_go()
        self.tpool.shutdown(wait=False)
        sys.exit(0)

    def is_parent_alive(self) -> bool:
        if super().is_parent_alive():
            return True
        self._let_waiting_connections_go()
        return False

    def _let_waiting_connections_go(self) -> None:
        self.app.close_live_connections()
        for conn in (*self.keepalived_conns, *self.pending_conns):
            conn.timeout = 0  # expired: the next two calls close them
        self.murder_keepalived()
        self.murder_pending()


def _worker_exit(_arbiter, worker: EmbeddedWorker) -> None:
    worker.app.stop_background()


def serve(config: Config) -> None:
    """Run until SIGINT or SIGTERM (gunicorn's arbiter in this process, the app in its worker)."""
    EmbeddedServer(config).run()
