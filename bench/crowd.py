"""Pollers beside uploaders: clients polling GET /status while other clients upload CSVs, in one event loop.

The pollers are ``load.poll``'s open-loop clients (one GET every ``interval`` seconds each, latency
from when it was due, given up after ``timeout``), all started at once and spread round robin over
the status URLs. Each uploader POSTs its CSVs one after another (multipart, as ``curl -F
file=@…`` sends it; a new connection each); they start together with the first polls.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
from dataclasses import dataclass

from bench.load import START_DELAY, LoadResult, local_target, poll, read_response

UPLOAD_TIMEOUT = 120.0  # seconds an upload may take before it counts as failed


@dataclass(frozen=True)
class UploadResult:
    uploads: int
    accepted: int  # answered 202
    errors: int  # any other answer, a connection failure or a timeout
    p50_s: float
    max_s: float


@dataclass(frozen=True)
class CrowdResult:
    polls: LoadResult
    uploads: UploadResult


def multipart(csv_text: str) -> tuple[bytes, str]:
    """(body, content type) of a form whose ``file`` field is the CSV."""
    boundary = "pixshift-bench-" + secrets.token_hex(8)
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="products.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + csv_text.encode()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


async def _upload(url: str, csv_text: str) -> int:
    host, port, path = local_target(url)
    body, content_type = multipart(csv_text)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + body)
        status, _, _ = await read_response(reader)
        return status
    finally:
        writer.close()


async def _uploader(url: str, texts: list[str], seconds: list[float], statuses: list[int]) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(START_DELAY)
    for text in texts:
        began = loop.time()
        try:
            statuses.append(await asyncio.wait_for(_upload(url, text), UPLOAD_TIMEOUT))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            statuses.append(0)
        seconds.append(loop.time() - began)


async def _crowd(
    status_urls: list[str],
    upload_url: str,
    uploads: list[list[str]],
    pollers: int,
    max_seconds: float,
    interval: float,
    timeout: float,
) -> CrowdResult:
    seconds: list[float] = []
    statuses: list[int] = []
    polls, *_ = await asyncio.gather(
        poll(
            status_urls,
            clients=pollers,
            per_client=int(max_seconds / interval) + 1,
            interval=interval,
            max_seconds=max_seconds,
            timeout=timeout,
            together=True,
        ),
        *[_uploader(upload_url, texts, seconds, statuses) for texts in uploads],
    )
    accepted = statuses.count(202)
    return CrowdResult(
        polls,
        UploadResult(
            uploads=len(statuses),
            accepted=accepted,
            errors=len(statuses) - accepted,
            p50_s=statistics.median(seconds) if seconds else float("nan"),
            max_s=max(seconds, default=float("nan")),
        ),
    )


def crowd(
    status_urls: list[str],
    upload_url: str,
    uploads: list[list[str]],
    *,
    pollers: int,
    max_seconds: float,
    interval: float = 1.0,
    timeout: float = 10.0,
) -> CrowdResult:
    """``pollers`` clients GET the status URLs (round robin) every ``interval`` seconds for ``max_seconds``,
    all starting at once, while one uploader per entry of ``uploads`` POSTs its CSVs to ``upload_url``."""
    return asyncio.run(_crowd(status_urls, upload_url, uploads, pollers, max_seconds, interval, timeout))
