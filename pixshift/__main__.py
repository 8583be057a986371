"""``python -m pixshift``: the web app and a worker pool in one service (the embedded default).

gunicorn serves it (``pixshift/server.py``): this process is its arbiter, and one worker process
runs the app with the Huey consumer's threads beside the request threads.
"""

from __future__ import annotations

import sys

from . import logs
from .config import ConfigError, settings


def main() -> None:
    try:
        config = settings()
    except ConfigError as exc:
        sys.exit(f"pixshift: cannot start: {exc}")  # exit status 1, before anything is served
    logs.configure(config.LOG_FORMAT, config.LOG_LEVEL)
    from .server import serve  # after the check: importing the server builds the task queue

    serve(config)


if __name__ == "__main__":
    main()
