"""Talking to a PixShift server: its HTTP API and its Socket.IO progress feed; errors for the command line."""

from __future__ import annotations

import queue
from urllib.parse import urlsplit, urlunsplit

import requests

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_SERVER = "http://127.0.0.1:5000"


def version() -> str:
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
            where = ", ".join(
                str(x)
                for x in (f"row {problem.get('row')}" if problem.get("row") else None, problem.get("column"))
                if x
            )
            message += f"\n  {where + ': ' if where else ''}{problem.get('message')}"
        if body.get("truncated"):
            message += "\n  … and more problems"
        super().__init__(message, EXIT_ERROR, body)
        self.status = response.status_code


class Client:
    def __init__(self, server: str, token: str | None, timeout: float) -> None:
        self.server = server.rstrip("/")
        parts = urlsplit(self.server)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(f"--server must be an http(s) URL, not {server!r}")
        self.token = token or None
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": f"pixshift-cli/{version()}"})
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method: str, path: str, *, ok=(200,), **kwargs) -> requests.Response:
        try:
            response = self.session.request(method, self.server + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            reason = (
                "timed out"
                if isinstance(exc, requests.Timeout)
                else "connection refused"
                if "refused" in str(exc).lower()
                else type(exc).__name__
            )
            raise CliError(
                f"cannot reach PixShift at {self.server} ({reason})",
                body={"error": "unreachable", "message": f"{reason}: {exc}"},
            ) from None
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
        try:  # a runtime dependency, but an install without it (--no-deps) long-polls, with no error log
            import websocket  # noqa: F401

            transports = None
        except ImportError:
            transports = ["polling"]
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
            sio.connect(
                urlunsplit((parts.scheme, parts.netloc, "", "", "")),
                headers=headers,
                auth={"token": self.client.token} if self.client.token else None,
                socketio_path=parts.path.rstrip("/") + "/socket.io",
                transports=transports,
                wait_timeout=timeout,
            )
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
