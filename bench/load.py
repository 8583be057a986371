"""A small HTTP/1.1 load generator for GET requests to 127.0.0.1: asyncio, keep-alive, bounded.

Each client keeps one connection (reopened if the server closes it) and has at most one request
outstanding, as a polling client does. Two ways to drive it:

- ``interval``: each client sends a request every ``interval`` seconds (open loop: latency is taken
  from when the request was due, so a slow server cannot hide its queue by delaying the next
  request; clients start at evenly spread phases, or all at once with ``together``);
- ``interval=None``: each client sends its next request as soon as the last answer arrived (closed
  loop: the server's capacity; latency is then ~clients / throughput by Little's law).

Every run is bounded both in requests per client and in time (no request is sent after
``max_seconds``, and none is waited for longer than ``timeout``, TIMEOUT unless told).
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass
from urllib.parse import urlsplit

TIMEOUT = 30.0  # seconds a request may take before it counts as failed
START_DELAY = 0.2  # seconds from calling ``poll`` to the first request (every client is connected by then)


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int  # answers other than 200, connection failures and timeouts
    timeouts: int  # requests given up after ``timeout`` seconds (counted in errors too)
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    bytes_per_response: int
    rate: float  # answered requests per second

    def row(self) -> str:
        return f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.0f} ms, {self.rate:.0f} req/s"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """(status, body bytes, server keeps the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    keep = headers.get("connection", "").lower() != "close" and lines[0].startswith("HTTP/1.1")
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
        return status, len(body), keep
    if headers.get("transfer-encoding", "").lower() == "chunked":
        size = 0
        while True:
            n = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if n == 0:
                await reader.readuntil(b"\r\n")
                return status, size, keep
            size += len(await reader.readexactly(n + 2)) - 2
    body = await reader.read()  # until close
    return status, len(body), False


async def _client(
    host: str,
    port: int,
    path: str,
    count: int,
    interval: float | None,
    phase: float,
    start: float,
    deadline: float,
    timeout: float,
    latencies: list[float],
    sizes: list[int],
    errors: list[int],
    span: list[float],
) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode()
    reader = writer = None
    loop = asyncio.get_running_loop()

    async def exchange() -> tuple[int, int, bool]:
        nonlocal reader, writer
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        return await read_response(reader)

    for i in range(count):
        due = start + phase + i * interval if interval else loop.time()
        if due >= deadline:
            break
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        try:
            # One request outstanding per client, given up after ``timeout`` (connecting included):
            # abandoning requests earlier would only pile them up in the server's backlog.
            status, size, keep = await asyncio.wait_for(exchange(), timeout)
            latencies.append(loop.time() - due)
            span[0] = min(span[0], due)
            span[1] = max(span[1], loop.time())
            sizes.append(size)
            if status != 200:
                errors.append(status)
        except TimeoutError:
            errors.append(-1)
            keep = False
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors.append(0)
            keep = False
        if not keep and writer is not None:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


def local_target(url: str) -> tuple[str, int, str]:
    """(host, port, path with query) of a URL on this machine; anything else is refused."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("the load generator only targets this machine")
    return parts.hostname, parts.port or 80, parts.path + (f"?{parts.query}" if parts.query else "")


async def poll(
    url: str | list[str],
    *,
    clients: int,
    per_client: int,
    interval: float | None,
    max_seconds: float,
    timeout: float = TIMEOUT,
    together: bool = False,
) -> LoadResult:
    """The load of ``load`` as a coroutine, to run beside other traffic in the same event loop.

    Several URLs: client n GETs ``url[n % len(url)]``. ``together``: every client sends its first
    request at the same moment (clients started by one script or one event), so with ``interval``
    their requests keep arriving together; otherwise their phases are spread over the interval."""
    targets = [local_target(u) for u in ([url] if isinstance(url, str) else url)]
    loop = asyncio.get_running_loop()
    start = loop.time() + START_DELAY
    deadline = start + max_seconds
    latencies: list[float] = []
    sizes: list[int] = []
    errors: list[int] = []
    span = [float("inf"), float("-inf")]  # first request due, last answer in
    await asyncio.gather(
        *[
            _client(
                *targets[n % len(targets)],
                per_client,
                interval,
                0.0 if together else (interval or 0) * n / clients,
                start,
                deadline,
                timeout,
                latencies,
                sizes,
                errors,
                span,
            )
            for n in range(clients)
        ]
    )
    seconds = span[1] - span[0] if latencies else 0.0
    ms = [x * 1000 for x in latencies]
    return LoadResult(
        requests=len(ms),
        errors=len(errors),
        timeouts=errors.count(-1),
        seconds=seconds,
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms) if ms else float("nan"),
        mean_ms=statistics.fmean(ms) if ms else float("nan"),
        bytes_per_response=round(statistics.fmean(sizes)) if sizes else 0,
        rate=len(ms) / seconds if seconds > 0 else 0,
    )


def load(
    url: str, *, clients: int, per_client: int, interval: float | None, max_seconds: float, timeout: float = TIMEOUT
) -> LoadResult:
    """GET ``url`` from ``clients`` concurrent clients, at most ``per_client`` times each and for at most
    ``max_seconds``."""
    return asyncio.run(
        poll(url, clients=clients, per_client=per_client, interval=interval, max_seconds=max_seconds, timeout=timeout)
    )
