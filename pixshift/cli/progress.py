"""Following a request to its end: live events when the server offers them, polling otherwise, and a progress line."""

from __future__ import annotations

import queue
import shutil
import time

from .client import Client, CliError, LiveFeed

FINISHED = frozenset({"completed", "completed_with_errors", "failed", "cancelled"})
QUIET_POLL = 5.0  # seconds without a live event before asking GET /status anyway


class Progress:
    """A bar redrawn in place on a terminal; one line per change otherwise; nothing when quiet."""

    def __init__(self, stream, *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.last: tuple[object, ...] | None = None
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
            line = f"[{'#' * filled}{'.' * (width - filled)}] {text}"[: max(columns - 1, 20)]
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


def wait_finished(
    client: Client,
    request_id: str,
    progress: Progress,
    *,
    live: bool = True,
    interval: float = 1.0,
    timeout: float | None = None,
) -> dict:
    """Follow the request until it finishes (Socket.IO events, else polling); its final status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    feed = LiveFeed(client, request_id) if live else None
    mode = "live" if feed is not None and feed.start() else "polling"
    progress.note(
        f"following {request_id} " + ("live (Socket.IO)" if mode == "live" else f"by polling every {interval:g}s")
    )
    try:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(
                    f"timed out after {timeout:g}s; request {request_id} goes on (pixshift status {request_id} --wait)",
                    body={
                        "error": "timeout",
                        "message": f"request {request_id} not finished yet",
                        "request_id": request_id,
                    },
                )
            if mode == "live" and feed is not None:  # live only with a started feed
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
