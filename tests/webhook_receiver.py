"""A real webhook receiver on loopback that verifies signatures with the `standardwebhooks` package."""

from __future__ import annotations

import http.server
import json
import threading
import time

from standardwebhooks import Webhook


class Receiver:
    """Answers the scripted status codes in turn (then 200), optionally slowly; records what came.

    ``trickle``: the status line goes out a byte every 50 ms (each read well within any read
    timeout); ``while_answering`` is called in the handler's thread meanwhile, its result recorded."""

    def __init__(
        self,
        secret: str | None,
        statuses: list[int] | None = None,
        delay: float = 0.0,
        port: int = 0,
        trickle: bool = False,
        while_answering=None,
    ) -> None:
        self.secret = secret
        self.statuses = list(statuses or [])
        self.delay = delay
        self.trickle = trickle
        self.while_answering = while_answering
        self.observed: list = []
        self.received: list[dict] = []
        self._port = port
        self._server: http.server.ThreadingHTTPServer | None = None
        self._cond = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = None
                if receiver.secret:
                    verified = Webhook(receiver.secret).verify(body, headers)  # raises on a bad signature
                with receiver._cond:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.received.append(
                        {
                            "headers": headers,
                            "body": json.loads(body),
                            "verified": verified,
                            "status": status,
                            "at": time.monotonic(),
                        }
                    )
                    receiver._cond.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.trickle:
                    return self._dribble(f"HTTP/1.1 {status} OK\r\nContent-Length: 0\r\n\r\n".encode())
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _dribble(self, data: bytes) -> None:
                self.close_connection = True
                for i in range(len(data)):
                    if i == 3 and receiver.while_answering:
                        receiver.observed.append(receiver.while_answering())
                    time.sleep(0.05)
                    try:
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout: float = 30) -> list[dict]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"expected {count} webhook calls within {timeout}s, got {len(self.received)}")
            return list(self.received)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
