"""``python -m pixshift``: the web app and a worker pool in one process (the embedded default)."""
from __future__ import annotations

import signal

from . import create_app, logs, tasks
from .extensions import socketio
from .realtime import start_relay
from .schema import upgrade_schema


def start_inprocess_consumer(huey, workers: int):
    """Start Huey's thread workers and scheduler here, leaving signal handling to the web server."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=True,
                                    initial_delay=0.05, max_delay=0.5, check_worker_health=False)
    consumer.start()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    return consumer


def main() -> None:
    app = create_app()
    logs.configure(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])
    with app.app_context():
        upgrade_schema()  # the embedded default is one process: it may own its schema
    tasks.bind_app(app)
    consumer = None
    if app.config["INPROCESS_WORKERS"] > 0:
        consumer = start_inprocess_consumer(tasks.huey, app.config["INPROCESS_WORKERS"])
    start_relay(app)
    host, port = app.config["HOST"], app.config["PORT"]
    app.logger.info("PixShift listening on http://%s:%s/", host, port)
    try:
        socketio.run(app, host=host, port=port, allow_unsafe_werkzeug=True, use_reloader=False, log_output=False)
    finally:
        if consumer is not None:
            consumer.stop(graceful=False)


if __name__ == "__main__":
    main()
