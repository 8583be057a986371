"""``pixshift``: the command-line client of a PixShift server, and a launcher for its processes.

    pixshift upload products.csv [--webhook URL] [--wait]
    pixshift status REQUEST_ID [--wait]
    pixshift download REQUEST_ID [-o out.csv] [--wait]
    pixshift serve [--host H] [--port P] [--workers N]      # = python -m pixshift
    pixshift worker [-w N] [-- huey_consumer options]       # = huey_consumer pixshift.worker.huey -k thread -w N

The server is ``--server`` or ``PIXSHIFT_SERVER`` (default http://127.0.0.1:5000) and the token
``--token`` or ``PIXSHIFT_TOKEN``, sent as ``Authorization: Bearer``. ``--wait`` follows the
request live over Socket.IO and falls back to polling ``GET /status`` when that is not possible
(a server with API tokens accepts Socket.IO only from logged-in browsers). Progress goes to
stderr: a bar redrawn in place on a terminal, one line per change otherwise. ``--json`` prints
one JSON document on stdout (errors too).

Exit codes: 0 every image done; 1 some images (or the whole request) failed; 2 a usage error, an
error answer from the server, or no server to talk to; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

from .client import DEFAULT_SERVER, EXIT_INTERRUPTED, CliError, version
from .commands import cmd_cancel, cmd_download, cmd_retry, cmd_status, cmd_upload, err, print_json
from .launchers import cmd_serve, cmd_worker


def _common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Client options, accepted before or after the command (``pixshift --json status ID``)."""
    d = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser.add_argument(
        "--server",
        default=d(os.environ.get("PIXSHIFT_SERVER") or DEFAULT_SERVER),
        help="PixShift base URL (env PIXSHIFT_SERVER; default %(default)s)" if defaults else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--token",
        default=d(os.environ.get("PIXSHIFT_TOKEN")),
        help="API token, sent as Authorization: Bearer (env PIXSHIFT_TOKEN)" if defaults else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=d(False),
        help="print one JSON document on stdout" if defaults else argparse.SUPPRESS,
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=d(False),
        help="no progress output" if defaults else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=d(30.0),
        metavar="SECONDS",
        help="per HTTP request (default %(default)s)" if defaults else argparse.SUPPRESS,
    )


def _wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"{what}, showing progress")
    parser.add_argument(
        "--no-live", dest="live", action="store_false", help="poll GET /status instead of following Socket.IO events"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="polling interval (default %(default)s)"
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up waiting after this long (exit 2; the request goes on)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixshift",
        description="PixShift from the command line: upload a product CSV, follow it, "
        "download the output CSV; or run the server and workers.",
        epilog="exit codes: 0 all images done; 1 some images or the request failed; "
        "2 usage, server or connection error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pixshift {version()}")
    _common_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    upload = commands.add_parser("upload", help="upload a product CSV")
    upload.add_argument("file", metavar="FILE.csv")
    upload.add_argument("--webhook", metavar="URL", help="URL that gets the completion event")
    _wait_options(upload, "wait until every image is done or failed")
    upload.set_defaults(func=cmd_upload)

    status = commands.add_parser("status", help="show a request's state, counts and failures")
    status.add_argument("request_id", metavar="ID")
    status.add_argument("--page", type=int, help="page of products (failures listed are this page's)")
    status.add_argument("--per-page", type=int, help="products a page")
    _wait_options(status, "wait until the request finishes")
    status.set_defaults(func=cmd_status)

    download = commands.add_parser("download", help="download the output CSV of a finished request")
    download.add_argument("request_id", metavar="ID")
    download.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: stdout)")
    _wait_options(download, "wait until the request finishes first")
    download.set_defaults(func=cmd_download)

    retry = commands.add_parser("retry", help="queue a finished request's failed and cancelled images again")
    retry.add_argument("request_id", metavar="ID")
    _wait_options(retry, "wait until the retried images are done or failed")
    retry.set_defaults(func=cmd_retry)

    cancel = commands.add_parser("cancel", help="stop a running request (images in flight finish first)")
    cancel.add_argument("request_id", metavar="ID")
    _wait_options(cancel, "wait until the images in flight have ended")
    cancel.set_defaults(func=cmd_cancel)

    for sub in (upload, status, download, retry, cancel):
        _common_options(sub, defaults=False)

    serve = commands.add_parser("serve", help="run the web app with in-process workers (python -m pixshift)")
    serve.add_argument("--host", help="listen address (sets HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (sets PORT; default 5000)")
    serve.add_argument("--workers", type=int, help="in-process worker threads (sets PIXSHIFT_INPROCESS_WORKERS)")
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser(
        "worker", help="run a worker process (huey_consumer pixshift.worker.huey -k thread -w N)"
    )
    worker.add_argument("-w", "--workers", type=int, default=16, help="worker threads (default %(default)s)")
    worker.add_argument(
        "consumer_args", nargs=argparse.REMAINDER, metavar="-- OPTIONS", help="more huey_consumer options, after --"
    )
    worker.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("wait", False), ("live", True), ("interval", 1.0), ("wait_timeout", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    out = sys.stdout
    try:
        return args.func(args, out)
    except CliError as exc:
        if getattr(args, "json", False):
            print_json(out, exc.body)
        err(f"pixshift: error: {exc.message}")
        return exc.code
    except KeyboardInterrupt:
        request_id = getattr(args, "request_id", None)
        err("\ninterrupted" + (f"; the request goes on: pixshift status {request_id} --wait" if request_id else ""))
        return EXIT_INTERRUPTED
