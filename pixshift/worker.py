"""The worker entry point: ``huey_consumer pixshift.worker.huey -k thread -w 16``.

Importing it builds the app once for this process (database, media store, runtime) and binds
the tasks to it; Huey's consumer then runs them on its threads.
"""

from __future__ import annotations

from pixshift import create_app, logs
from pixshift.pipeline import tasks

app = create_app()
logs.configure(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])
tasks.bind_app(app)
huey = tasks.huey

__all__ = ["app", "huey"]
