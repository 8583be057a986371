"""``pixshift serve`` and ``pixshift worker``: start the service's two kinds of process."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .client import EXIT_ERROR, EXIT_OK, CliError


def cmd_serve(args, out) -> int:
    # The server reads its configuration from the environment; these flags only set it for this run.
    for flag, name in ((args.host, "HOST"), (args.port, "PORT"), (args.workers, "PIXSHIFT_INPROCESS_WORKERS")):
        if flag is not None:
            os.environ[name] = str(flag)
    from pixshift.__main__ import main as serve

    serve()
    return EXIT_OK


def cmd_worker(args, out) -> int:
    candidates = [Path(sys.executable).parent / "huey_consumer", shutil.which("huey_consumer")]
    consumer = next((str(c) for c in candidates if c and Path(c).is_file()), None)
    if consumer is None:
        raise CliError("huey_consumer is not installed (pip install huey)")
    extra = list(args.consumer_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    argv = [consumer, "pixshift.worker.huey", "-k", "thread", "-w", str(args.workers), *extra]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(consumer, argv)  # the consumer becomes this process: signals reach it directly
    return EXIT_ERROR  # not reached
