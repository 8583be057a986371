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
import json
import os
import queue
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_SERVER = "http://127.0.0.1:5000"
FINISHED = frozenset({"completed", "completed_with_errors", "failed"})
SHOWN_FAILURES = 20
QUIET_POLL = 5.0  # seconds without a live event before asking GET /status anyway


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("pixshift")
    except Exception:  # running from a checkout that was not installed
        return "0+unknown"


class CliError(Exception):
    """Ends the command with a message and an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR, body: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.body = body or {"error": "cli_error", "message": message}


class ApiError(CliError):
    """The server answered with an error (a JSON ``{"error", "message"}`` body, or something else)."""

    def __init__(self, response: requests.Response) -> None:
        try:
            body = response.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            text = " ".join(response.text.split())[:200] or response.reason
            body = {"error": f"http_{response.status_code}", "message": text}
        body = {**body, "status": response.status_code}
        message = f"{response.status_code} {body.get('error')}: {body.get('message')}"
        for problem in body.get("details") or []:
            where = ", ".join(str(x) for x in (f"row {problem.get('row')}" if problem.get("row") else None,
                                               problem.get("column")) if x)
            message += f"\n  {where + ': ' if where else ''}{problem.get('message')}"
        if body.get("truncated"):
            message += "\n  … and more problems"
        super().__init__(message, EXIT_ERROR, body)
        self.status = response.status_code


# --- talking to the server ---------------------------------------------------------------------


class Client:
    def __init__(self, server: str, token: str | None, timeout: float) -> None:
        self.server = server.rstrip("/")
        parts = urlsplit(self.server)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(f"--server must be an http(s) URL, not {server!r}")
        self.token = token or None
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": f"pixshift-cli/{_version()}"})
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method: str, path: str, *, ok=(200,), **kwargs) -> requests.Response:
        try:
            response = self.session.request(method, self.server + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            reason = ("timed out" if isinstance(exc, requests.Timeout)
                      else "connection refused" if "refused" in str(exc).lower() else type(exc).__name__)
            raise CliError(f"cannot reach PixShift at {self.server} ({reason})",
                           body={"error": "unreachable", "message": f"{reason}: {exc}"}) from None
        if response.status_code not in ok:
            raise ApiError(response)
        return response

    def status(self, request_id: str, **params) -> dict:
        return self.request("GET", f"/status/{request_id}", params=params).json()


class LiveFeed:
    """Socket.IO progress of one request: ``join`` it, then ``snapshot`` and ``progress`` batches
    arrive in ``updates`` as (kind, data); ("closed", reason) when the connection ends."""

    def __init__(self, client: Client, request_id: str) -> None:
        self.client = client
        self.request_id = request_id
        self.updates: queue.Queue = queue.Queue()
        self.sio = None

    def start(self, timeout: float = 5.0) -> bool:
        try:
            import socketio
        except ImportError:
            return False
        sio = socketio.Client(reconnection=False, handle_sigint=False)
        sio.on("snapshot", lambda data: self.updates.put(("snapshot", data)))
        sio.on("progress", lambda data: self.updates.put(("progress", data)))
        sio.on("error", lambda data=None: self.updates.put(("closed", f"the server said {data}")))
        sio.on("disconnect", lambda *args: self.updates.put(("closed", "disconnected")))
        parts = urlsplit(self.client.server)
        headers = {"User-Agent": self.client.session.headers["User-Agent"]}
        if self.client.token:
            headers["Authorization"] = f"Bearer {self.client.token}"
        try:
            sio.connect(urlunsplit((parts.scheme, parts.netloc, "", "", "")), headers=headers,
                        auth={"token": self.client.token} if self.client.token else None,
                        socketio_path=parts.path.rstrip("/") + "/socket.io", wait_timeout=timeout)
            sio.emit("join", {"request_id": self.request_id})
        except Exception:  # refused, no WebSocket/long-polling, a proxy in the way: poll instead
            self._disconnect(sio)
            return False
        self.sio = sio
        return True

    def close(self) -> None:
        if self.sio is not None:
            self._disconnect(self.sio)
            self.sio = None

    @staticmethod
    def _disconnect(sio) -> None:
        try:
            sio.disconnect()
        except Exception:
            pass


# --- progress ----------------------------------------------------------------------------------


class Progress:
    """A bar redrawn in place on a terminal; one line per change otherwise; nothing when quiet."""

    def __init__(self, stream, *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.last = None
        self.drawn = False

    def note(self, message: str) -> None:
        if not self.enabled:
            return
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False
        self.stream.write(message + "\n")
        self.stream.flush()

    def update(self, counts: dict | None, state: str | None) -> None:
        if not self.enabled or not counts:
            return
        key = (counts.get("done"), counts.get("failed"), counts.get("total"), state)
        if key == self.last:
            return
        self.last = key
        done, failed, total = counts.get("done", 0), counts.get("failed", 0), counts.get("total", 0)
        percent = counts.get("percent", 100.0 if not total else 100 * (done + failed) / total)
        text = f"{percent:5.1f}%  {done + failed}/{total} images  done {done}  failed {failed}  {state or ''}".rstrip()
        if self.tty:
            columns = shutil.get_terminal_size((80, 24)).columns
            width = max(10, min(40, columns - len(text) - 4))
            filled = round(width * percent / 100)
            line = f"[{'#' * filled}{'.' * (width - filled)}] {text}"[:max(columns - 1, 20)]
            self.stream.write("\r" + line + "\x1b[K")
            self.drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def wait_finished(client: Client, request_id: str, progress: Progress, *, live: bool = True,
                  interval: float = 1.0, timeout: float | None = None) -> dict:
    """Follow the request until it finishes (Socket.IO events, else polling); its final status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    feed = LiveFeed(client, request_id) if live else None
    mode = "live" if feed is not None and feed.start() else "polling"
    progress.note(f"following {request_id} " + ("live (Socket.IO)" if mode == "live"
                                               else f"by polling every {interval:g}s"))
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(f"timed out after {timeout:g}s; request {request_id} goes on "
                               f"(pixshift status {request_id} --wait)",
                               body={"error": "timeout", "message": f"request {request_id} not finished yet",
                                     "request_id": request_id})
            if mode == "live":
                try:
                    kind, data = feed.updates.get(timeout=_left(deadline, QUIET_POLL))
                except queue.Empty:
                    kind, data = "quiet", None
                if kind in ("snapshot", "progress") and isinstance(data, dict):
                    progress.update(data.get("counts"), data.get("state"))
                    if data.get("state") in FINISHED:
                        break
                    continue
                if kind == "closed":
                    progress.note(f"live updates ended ({data}); polling every {interval:g}s")
                    feed.close()
                    mode = "polling"
                # quiet for a while: ask once, in case an event was lost
            doc = client.status(request_id, per_page=1)
            progress.update(doc["counts"], doc["state"])
            if doc["state"] in FINISHED:
                break
            if mode == "polling":
                time.sleep(min(interval, _left(deadline, interval)))
    finally:
        if feed is not None:
            feed.close()
        progress.finish()
    return client.status(request_id)


def _left(deadline: float | None, default: float) -> float:
    return default if deadline is None else max(0.05, min(default, deadline - time.monotonic()))


# --- commands ----------------------------------------------------------------------------------


def cmd_upload(args, out) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{args.file}: no such file")
    client = _client(args)
    data = {"webhook_url": args.webhook} if args.webhook else {}
    with path.open("rb") as fh:
        accepted = client.request("POST", "/upload", ok=(202,), data=data,
                                  files={"file": (path.name, fh, "text/csv")}).json()
    request_id = args.request_id = accepted["request_id"]
    if not args.wait:
        if args.json:
            _print_json(out, accepted)
        else:
            out.write(f"{request_id}\n")
            _err(f"accepted: {_n(accepted['products'], 'product')}, {_n(accepted['images'], 'image')}; "
                 f"follow with: pixshift status {request_id} --wait")
        return EXIT_OK
    if not args.json:
        _err(f"accepted {request_id}: {_n(accepted['products'], 'product')}, {_n(accepted['images'], 'image')}")
    doc = wait_finished(client, request_id, _progress(args), live=args.live, interval=args.interval,
                        timeout=args.wait_timeout)
    return _report(doc, args, out)


def cmd_status(args, out) -> int:
    client = _client(args)
    if args.wait:
        wait_finished(client, args.request_id, _progress(args), live=args.live, interval=args.interval,
                      timeout=args.wait_timeout)
    params = {k: v for k, v in (("page", args.page), ("per_page", args.per_page)) if v is not None}
    return _report(client.status(args.request_id, **params), args, out)


def cmd_download(args, out) -> int:
    client = _client(args)
    if args.wait:
        wait_finished(client, args.request_id, _progress(args), live=args.live, interval=args.interval,
                      timeout=args.wait_timeout)
    response = client.request("GET", f"/requests/{args.request_id}/output.csv", stream=True,
                              headers={"Accept": "text/csv, application/json"})
    if args.output in (None, "-"):
        if args.json:
            raise CliError("--json needs -o FILE (the CSV itself goes to stdout otherwise)")
        target = sys.stdout.buffer if out is sys.stdout else None
        for chunk in response.iter_content(64 * 1024):
            if target is not None:
                target.write(chunk)
            else:
                out.write(chunk.decode("utf-8"))
        (target or out).flush()
        return EXIT_OK
    destination = Path(args.output)
    fd, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", dir=destination.parent or ".")
    size = rows = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in response.iter_content(64 * 1024):
                fh.write(chunk)
                size += len(chunk)
        os.replace(temporary, destination)  # never a half-written file under the real name
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    import csv
    with destination.open(newline="", encoding="utf-8") as fh:
        rows = max(0, sum(1 for _ in csv.reader(fh)) - 1)
    if args.json:
        _print_json(out, {"request_id": args.request_id, "path": str(destination), "bytes": size, "products": rows})
    else:
        out.write(f"wrote {destination} ({_n(rows, 'product')}, {size} bytes)\n")
    return EXIT_OK


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


# --- output ------------------------------------------------------------------------------------


def _report(doc: dict, args, out) -> int:
    """Print a status document; the exit code says whether anything failed."""
    counts = doc["counts"]
    failed = doc["state"] == "failed" or counts["failed"] > 0
    if args.json:
        _print_json(out, doc)
    else:
        out.write(f"request   {doc['request_id']}\n"
                  f"state     {doc['state']}\n"
                  f"images    {counts['total']} total: {counts['done']} done, {counts['failed']} failed, "
                  f"{counts['queued']} queued, {counts['processing']} processing ({counts['percent']}%)\n"
                  f"products  {doc['products']}\n")
        for label, key in (("created", "created_at"), ("started", "started_at"), ("finished", "finished_at")):
            if doc.get(key):
                out.write(f"{label:<9} {doc[key]}\n")
        if doc["links"].get("output_csv"):
            out.write(f"output    {doc['links']['output_csv']}\n"
                      f"          pixshift download {doc['request_id']} -o output.csv\n")
        for delivery in doc.get("webhooks") or []:
            out.write(f"webhook   {delivery['url']}: {delivery['state']}\n")
        failures = [(p, im) for p in doc.get("items", []) for im in p["images"] if im["state"] == "failed"]
        if failures:
            out.write("failed images" + (" (this page)" if doc["pagination"]["pages"] > 1 else "") + ":\n")
            for product, image in failures[:SHOWN_FAILURES]:
                error = image.get("error") or {}
                out.write(f"  {product['serial_number']} #{image['position']} {image['input_url']}\n"
                          f"      {error.get('code')}: {error.get('message')}\n")
            if len(failures) > SHOWN_FAILURES:
                out.write(f"  … and {len(failures) - SHOWN_FAILURES} more (--json shows them all)\n")
    return EXIT_FAILED if failed else EXIT_OK


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _print_json(out, value) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _client(args) -> Client:
    return Client(args.server or DEFAULT_SERVER, args.token, args.timeout)


def _progress(args) -> Progress:
    return Progress(sys.stderr, enabled=not args.quiet)


# --- arguments ---------------------------------------------------------------------------------


def _common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Client options, accepted before or after the command (``pixshift --json status ID``)."""
    d = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--server", default=d(os.environ.get("PIXSHIFT_SERVER") or DEFAULT_SERVER),
                        help="PixShift base URL (env PIXSHIFT_SERVER; default %(default)s)"
                        if defaults else argparse.SUPPRESS)
    parser.add_argument("--token", default=d(os.environ.get("PIXSHIFT_TOKEN")),
                        help="API token, sent as Authorization: Bearer (env PIXSHIFT_TOKEN)"
                        if defaults else argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", default=d(False),
                        help="print one JSON document on stdout" if defaults else argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", default=d(False),
                        help="no progress output" if defaults else argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=d(30.0), metavar="SECONDS",
                        help="per HTTP request (default %(default)s)" if defaults else argparse.SUPPRESS)


def _wait_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"{what}, showing progress")
    parser.add_argument("--no-live", dest="live", action="store_false",
                        help="poll GET /status instead of following Socket.IO events")
    parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                        help="polling interval (default %(default)s)")
    parser.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS",
                        help="give up waiting after this long (exit 2; the request goes on)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pixshift", description="PixShift from the command line: upload a product CSV, follow it, "
                                     "download the output CSV; or run the server and workers.",
        epilog="exit codes: 0 all images done; 1 some images or the request failed; "
               "2 usage, server or connection error", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pixshift {_version()}")
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

    for sub in (upload, status, download):
        _common_options(sub, defaults=False)

    serve = commands.add_parser("serve", help="run the web app with in-process workers (python -m pixshift)")
    serve.add_argument("--host", help="listen address (sets HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (sets PORT; default 5000)")
    serve.add_argument("--workers", type=int, help="in-process worker threads (sets PIXSHIFT_INPROCESS_WORKERS)")
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="run a worker process (huey_consumer pixshift.worker.huey -k thread -w N)")
    worker.add_argument("-w", "--workers", type=int, default=16, help="worker threads (default %(default)s)")
    worker.add_argument("consumer_args", nargs=argparse.REMAINDER, metavar="-- OPTIONS",
                        help="more huey_consumer options, after --")
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
            _print_json(out, exc.body)
        _err(f"pixshift: error: {exc.message}")
        return exc.code
    except KeyboardInterrupt:
        request_id = getattr(args, "request_id", None)
        _err("\ninterrupted" + (f"; the request goes on: pixshift status {request_id} --wait" if request_id else ""))
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
