"""``python -m pixshift``: the web app and a worker pool in one service (the embedded default).

gunicorn serves it (``pixshift/server.py``): this process is its arbiter, and one worker process
runs the app with the Huey consumer's threads beside the request threads.
"""

from __future__ import annotations

from . import logs
from .config import Config
from .server import serve


def main() -> None:
    config = Config()
    logs.configure(config.LOG_FORMAT, config.LOG_LEVEL)
    serve(config)


if __name__ == "__main__":
    main()
