"""Section 2b: an unchanged catalog uploaded again, beside the end-to-end section. The first run
downloads and compresses every image; the re-run asks each host whether the image changed (a
conditional GET), gets 304s and reuses the stored results (pixshift/pipeline/reuse.py). A host that sends no
validators is downloaded again in full, but bytes PixShift already compressed are not compressed
again. Same deployment, same images, one run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from harness.imageserver import ImageServer


def catalog_again(
    dep: Any, server: ImageServer, names: list[str], product_csv: Callable[..., str], log: Callable[[str], None]
) -> dict:
    """Wall time, full downloads (200s), 304s and reused images of: the first run (URLs whose host
    sends an ETag), the same catalog again, and the same images under URLs without validators."""
    out: dict = {"images": len(names)}
    for label, urls in (
        ("first", [server.url(f"etag/{name}") for name in names]),
        ("again", [server.url(f"etag/{name}") for name in names]),
        ("no_validators", [server.url(f"{name}?plain=1") for name in names]),
    ):
        server.reset()
        start = time.perf_counter()
        accepted, _ = dep.upload(product_csv(urls, per_row=2))
        dep.wait_finished(accepted["request_id"], timeout=600)
        seconds = time.perf_counter() - start
        images = dep.images(accepted["request_id"])
        answered = sum(server.hits.values())
        not_modified = sum(server.not_modified.values())
        out[label] = {
            "seconds": seconds,
            "requests": answered,
            "full_downloads": answered - not_modified,
            "not_modified": not_modified,
            "reused": sum(1 for im in images if im["reused"]),
            "done": sum(1 for im in images if im["state"] == "done"),
            "encodes": sum((im["output"] or {}).get("encodes") or 0 for im in images if not im["reused"]),
        }
        log(
            f"{dep.mode} catalog {label}: {seconds:.2f} s, {answered - not_modified} full downloads, "
            f"{not_modified} 304s, {out[label]['reused']}/{len(names)} reused"
        )
    out["speedup"] = out["first"]["seconds"] / out["again"]["seconds"]
    return out
