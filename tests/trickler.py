"""A hostile HTTP peer on loopback: it answers every request a byte at a time, each byte well
within any read timeout, so only a deadline over the whole call ends it. It counts the
connections it holds, so a test can see that nothing is left talking to it."""

from __future__ import annotations

import select
import socket
import threading
import time

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n" + b"\xff" * 100_000


class Trickler:
    def __init__(self, host: str = "127.0.0.2", interval: float = 0.3) -> None:
        self.interval = interval
        self._sock = socket.create_server((host, 0))
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.accepted = 0
        self.open = 0
        self.most_open = 0

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def __enter__(self) -> Trickler:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            threading.Thread(target=self._dribble, args=(conn,), daemon=True).start()

    def _dribble(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)  # the request, or its first part
            for i in range(len(ANSWER)):
                # Wait out the whole interval whatever the client sends meanwhile (a POST's body can
                # arrive after its headers: pacing by it once answered a webhook in 47 ms), but
                # notice at once when the client hangs up.
                due = time.monotonic() + self.interval
                while (left := due - time.monotonic()) > 0:
                    if select.select([conn], [], [], left)[0] and not conn.recv(65536):
                        return
                if self._stop.is_set():
                    return
                conn.sendall(ANSWER[i : i + 1])
        except OSError:  # the client hung up: what a deadline does
            pass
        finally:
            conn.close()
            with self._lock:
                self.open -= 1
