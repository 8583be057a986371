"""The client commands: upload, status, download, retry, cancel, and how their results are printed."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from .client import DEFAULT_SERVER, EXIT_FAILED, EXIT_OK, Client, CliError
from .progress import Progress, wait_finished

SHOWN_FAILURES = 20


def cmd_upload(args, out) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{args.file}: no such file")
    client = _client(args)
    data = {"webhook_url": args.webhook} if args.webhook else {}
    with path.open("rb") as fh:
        accepted = client.request(
            "POST", "/upload", ok=(202,), data=data, files={"file": (path.name, fh, "text/csv")}
        ).json()
    request_id = args.request_id = accepted["request_id"]
    if not args.wait:
        if args.json:
            print_json(out, accepted)
        else:
            out.write(f"{request_id}\n")
            err(
                f"accepted: {_n(accepted['products'], 'product')}, {_n(accepted['images'], 'image')}; "
                f"follow with: pixshift status {request_id} --wait"
            )
        return EXIT_OK
    if not args.json:
        err(f"accepted {request_id}: {_n(accepted['products'], 'product')}, {_n(accepted['images'], 'image')}")
    doc = wait_finished(
        client, request_id, _progress(args), live=args.live, interval=args.interval, timeout=args.wait_timeout
    )
    return _report(doc, args, out, client)


def cmd_status(args, out) -> int:
    client = _client(args)
    if args.wait:
        wait_finished(
            client, args.request_id, _progress(args), live=args.live, interval=args.interval, timeout=args.wait_timeout
        )
    params = {k: v for k, v in (("page", args.page), ("per_page", args.per_page)) if v is not None}
    return _report(client.status(args.request_id, **params), args, out, client)


def cmd_retry(args, out) -> int:
    return _act(args, out, "retry")


def cmd_cancel(args, out) -> int:
    return _act(args, out, "cancel")


def _act(args, out, action: str) -> int:
    """POST /requests/<id>/<action>, then report the request (after waiting, with --wait). Retry
    exits like status; cancel exits 0 once the request is cancelling or cancelled."""
    client = _client(args)
    doc = client.request("POST", f"/requests/{args.request_id}/{action}", ok=(202,)).json()
    if action == "retry" and not args.json:
        err(f"retrying {_n(doc['retried'], 'image')} of {args.request_id} (run {doc['run']})")
    if args.wait:
        wait_finished(
            client, args.request_id, _progress(args), live=args.live, interval=args.interval, timeout=args.wait_timeout
        )
        doc = client.status(args.request_id)
    code = _report(doc, args, out)
    return EXIT_OK if action == "cancel" else code  # cancel did what it was asked


def cmd_download(args, out) -> int:
    client = _client(args)
    if args.wait:
        wait_finished(
            client, args.request_id, _progress(args), live=args.live, interval=args.interval, timeout=args.wait_timeout
        )
    response = client.request(
        "GET", f"/requests/{args.request_id}/output.csv", stream=True, headers={"Accept": "text/csv, application/json"}
    )
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
        print_json(out, {"request_id": args.request_id, "path": str(destination), "bytes": size, "products": rows})
    else:
        out.write(f"wrote {destination} ({_n(rows, 'product')}, {size} bytes)\n")
    return EXIT_OK


def _report(doc: dict, args, out, client: Client | None = None) -> int:
    """Print a status document; the exit code says whether anything failed."""
    counts = doc["counts"]
    failed = doc["state"] in ("failed", "cancelled") or counts["failed"] > 0
    if args.json:
        print_json(out, doc)
    else:
        out.write(
            f"request   {doc['request_id']}\n"
            f"state     {doc['state']}\n"
            f"images    {counts['total']} total: {counts['done']} done, {counts['failed']} failed, "
            + (f"{counts['cancelled']} cancelled, " if counts.get("cancelled") else "")
            + f"{counts['queued']} queued, {counts['processing']} processing ({counts['percent']}%)\n"
            f"products  {doc['products']}\n"
        )
        for label, key in (("created", "created_at"), ("started", "started_at"), ("finished", "finished_at")):
            if doc.get(key):
                out.write(f"{label:<9} {doc[key]}\n")
        savings = _savings(doc, client)
        if savings:
            out.write(f"saved     {savings}\n")
        if doc["links"].get("output_csv"):
            out.write(
                f"output    {doc['links']['output_csv']}\n"
                f"          pixshift download {doc['request_id']} -o output.csv\n"
            )
        for delivery in doc.get("webhooks") or []:
            out.write(f"webhook   {delivery['url']}: {delivery['state']}\n")
        failures = [(p, im) for p in doc.get("items", []) for im in p["images"] if im["state"] == "failed"]
        if failures:
            out.write("failed images" + (" (this page)" if doc["pagination"]["pages"] > 1 else "") + ":\n")
            for product, image in failures[:SHOWN_FAILURES]:
                error = image.get("error") or {}
                out.write(
                    f"  {product['serial_number']} #{image['position']} {image['input_url']}\n"
                    f"      {error.get('code')}: {error.get('message')}\n"
                )
            if len(failures) > SHOWN_FAILURES:
                out.write(f"  … and {len(failures) - SHOWN_FAILURES} more (--json shows them all)\n")
    return EXIT_FAILED if failed else EXIT_OK


def _savings(doc: dict, client: Client | None) -> str | None:
    """Bytes in -> bytes out of every finished image, summed over all the status pages, and the saving:
    "12.4 MB -> 5.1 MB, saved 58.9%"; None when no image is done yet."""
    pages = [doc]
    pagination = doc.get("pagination") or {}
    if client is not None and pagination.get("pages", 1) > 1:
        per_page = pagination.get("per_page")
        for number in range(1, pagination["pages"] + 1):
            if number != pagination.get("page"):
                params = {"page": number, **({"per_page": per_page} if per_page else {})}
                pages.append(client.status(doc["request_id"], **params))
    bytes_in = bytes_out = 0
    for page in pages:
        for product in page.get("items", []):
            for image in product["images"]:
                if image["state"] == "done" and image.get("input_bytes") and image.get("output_bytes") is not None:
                    bytes_in += image["input_bytes"]
                    bytes_out += image["output_bytes"]
    if not bytes_in:
        return None
    saved = 100 * (1 - bytes_out / bytes_in)
    return f"{_bytes(bytes_in)} -> {_bytes(bytes_out)}, saved {saved:.1f}% ({_bytes(bytes_in - bytes_out)})"


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def print_json(out, value) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _client(args) -> Client:
    return Client(args.server or DEFAULT_SERVER, args.token, args.timeout)


def _progress(args) -> Progress:
    return Progress(sys.stderr, enabled=not args.quiet)
