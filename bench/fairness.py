"""Section 8: a small request uploaded while a huge one runs, with turns (PIXSHIFT_REQUEST_WINDOW,
the default) and with every image of a request queued at once (the window as large as the request:
how PixShift queued work before), in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from harness.imageserver import ImageServer
from harness.livestack import wait_until

HOSTS = ("127.0.0.1", "localhost")  # two names for the one server: 16 workers, 8 connections a host


def small_beside_huge(
    deploy: Callable[[str, dict], AbstractContextManager[Any]],
    server: ImageServer,
    product_csv: Callable[..., str],
    *,
    huge_images: int,
    small_images: int,
    wait_s: float,
    log: Callable[[str], None],
    under_way: int = 100,
) -> dict:
    """For each queueing: seconds from uploading the small request to its end (uploaded once
    ``under_way`` of the huge one's images are done), and how far the huge one got meanwhile; then
    the huge one is cancelled, and how long that took."""

    def urls(path: str, n: int, tag: str) -> list[str]:
        return [server.url(f"{path}?{tag}={i}").replace("127.0.0.1", HOSTS[i % 2], 1) for i in range(n)]

    out: dict = {"huge_images": huge_images, "small_images": small_images, "wait_s": wait_s}
    for label, env in (("turns", {}), ("one_queue", {"PIXSHIFT_REQUEST_WINDOW": str(huge_images)})):
        with deploy(label, env) as dep:
            started = time.perf_counter()
            huge, upload_s = dep.upload(product_csv(urls("tiny/tiny.jpg", huge_images, "h"), per_row=2), timeout=600)
            huge_id = huge["request_id"]
            wait_until(
                lambda dep=dep, huge_id=huge_id: dep.status(huge_id, per_page=1)["counts"]["done"] >= under_way,
                600,
                interval=0.2,
                message="the huge request under way",
            )
            under_way_s = time.perf_counter() - started
            small_at = time.perf_counter()
            small, _ = dep.upload(product_csv(urls("small/photo1.jpg", small_images, "s"), per_row=2))
            try:
                doc = dep.wait_finished(small["request_id"], timeout=wait_s)
                small_s: float | None = time.perf_counter() - small_at
                small_done = doc["counts"]["done"]
            except TimeoutError:
                small_s, small_done = None, dep.status(small["request_id"], per_page=1)["counts"]["done"]
            huge_done = dep.status(huge_id, per_page=1)["counts"]["done"]
            cancel_at = time.perf_counter()
            cancel = dep.http.post(f"{dep.base_url}/requests/{huge_id}/cancel", timeout=120)
            if cancel.status_code != 409:  # 409: the huge request finished first (smoke sizes)
                cancel.raise_for_status()
            cancelled = dep.wait_finished(huge_id, timeout=300)
            cancel_s = time.perf_counter() - cancel_at
            out[label] = {
                "huge_upload_s": upload_s,
                "huge_under_way_s": under_way_s,
                "small_s": small_s,
                "small_done": small_done,
                "huge_done_meanwhile": huge_done,
                "cancel_s": cancel_s,
                "huge_state": cancelled["state"],
                "huge_cancelled": cancelled["counts"]["cancelled"],
            }
            shown = f"{small_s:.2f} s" if small_s is not None else f"not within {wait_s:.0f} s ({small_done} done)"
            log(
                f"{dep.mode} {label}: small request {shown}; huge request {huge_done} done meanwhile; "
                f"cancelled {cancelled['counts']['cancelled']} images in {cancel_s:.1f} s"
            )
    return out
