"""Figure 2, the sequence of one request, written as a list of steps; prints sequence.dot.

Graphviz has no sequence-diagram layout, so this script places every box, arrow and label itself
(pinned positions, drawn by neato). Edit STEPS, then run docs/render.sh. Standard library only.

Code behind the steps: pixshift/web/api/routes.py and pixshift/uploads/intake.py (upload), pixshift/pipeline/tasks.py (tasks),
pixshift/pipeline/processing.py (claim, record, finish), pixshift/pipeline/windows.py (turns), pixshift/pipeline/reuse.py, pixshift/webhooks/, pixshift/web/realtime.py,
pixshift/web/downloads.py (output CSV).
"""

from __future__ import annotations

PARTICIPANTS = [  # (id, label): left to right
    ("client", "Client\n(browser or script)"),
    ("web", "Web\n(Flask + relay)"),
    ("bus", "Event bus\n(pub/sub)"),
    ("db", "Database"),
    ("queue", "Queue\n(Huey)"),
    ("worker", "Worker\n(Huey consumer)"),
    ("media", "Media store"),
    ("host", "Image host"),
    ("receiver", "Webhook\nreceiver"),
]

# (from, to, label): an arrow; from == to: an action on that lifeline;
# ("frame", label): a frame around the steps up to the matching ("end",).
STEPS = [
    ("client", "web", "POST /upload (multipart CSV, webhook_url)"),
    ("web", "web", "validate the whole CSV: all or nothing,\na 400 lists every problem"),
    ("web", "db", "INSERT request, products, images\n(one transaction)"),
    ("web", "queue", "enqueue start_request (priority 10);\nif that fails: delete the request, 503"),
    ("web", "client", "202 {request_id, status_url}"),
    ("client", "web", "Socket.IO join;\nsnapshot back"),
    ("queue", "worker", "start_request"),
    ("worker", "db", "link repeated URLs; first window\n(none once enqueued_at is set)"),
    ("worker", "queue", "process_image x the first\nREQUEST_WINDOW (64) images"),
    ("worker", "db", "enqueued_at = now"),
    (
        "frame",
        "for each queued image (each URL once), on any worker, in parallel (a task may run twice: every step is idempotent)",
    ),
    ("queue", "worker", "process_image"),
    ("worker", "db", "claim: queued -> processing,\nattempts + 1, lease"),
    ("worker", "bus", "publish: image processing"),
    ("worker", "host", "GET (SSRF-filtered, capped,\nretried; conditional if known)"),
    ("worker", "db", "renew the lease"),
    ("worker", "worker", "compress to <= RATIO x bytes\n(holding a CPU slot; skipped\non a 304 or known bytes)"),
    ("worker", "media", "input, output,\n2 thumbnails"),
    ("worker", "db", "record: done or failed (fenced\nby attempts), copied to repeats"),
    ("worker", "bus", "publish: image done / failed"),
    ("worker", "queue", "process_image: the\nrequest's next image (its turn)"),
    ("bus", "web", "events"),
    ("web", "client", "progress batch every 0.2 s\n(counts read once a batch)"),
    ("end",),
    ("frame", "only the worker that ends the last image, exactly once"),
    ("worker", "db", "UPDATE request ... WHERE finished_at IS NULL,\nINSERT event + deliveries (one transaction)"),
    ("worker", "bus", "publish: request finished"),
    ("worker", "queue", "deliver_webhook x\nevery delivery"),
    ("end",),
    ("queue", "worker", "deliver_webhook"),
    ("worker", "receiver", "POST event (webhook-id,\n-timestamp, -signature)"),
    ("receiver", "worker", "2xx (else: next slot\nof the retry schedule)"),
    ("worker", "db", "log the attempt; delivered"),
    ("client", "web", "GET .../output.csv"),
    ("web", "db", "products + images,\n500 products a batch"),
    ("web", "client", "CSV + Output Image URLs\n(409 until finished)"),
]

COLUMN = 128  # points between lifelines
LINE = 11  # points per label line
FONT = "Arial"  # drawn with Liberation Sans (same metrics) where Arial is missing


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _left(text: str) -> str:
    """A label whose lines are left-aligned (Graphviz's \\l line ends)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\l") + '\\l"'


def render() -> str:
    x = {pid: i * COLUMN for i, (pid, _) in enumerate(PARTICIPANTS)}
    left, right = -COLUMN / 2 - 8, x[PARTICIPANTS[-1][0]] + COLUMN / 2 + 8
    frames: list[str] = []
    marks: list[str] = []
    boxes: list[str] = []
    open_frames: list[tuple[str, float]] = []
    y = -44.0  # graphviz y grows upwards; the header sits at 0
    n = 0
    for step in STEPS:
        if step[0] == "frame":
            open_frames.append((step[1], y))
            y -= 18
            continue
        if step[0] == "end":
            label, top = open_frames.pop()
            bottom = y + 4
            k = len(frames)
            frames.append(
                f'  frame{k} [pos="{(left + right) / 2:g},{(top + bottom) / 2:g}!", shape=box, style="rounded,dashed", '
                f'color="#888888", fixedsize=true, width={(right - left) / 72:.4f}, height={(top - bottom) / 72:.4f}, '
                f'label=""];'
            )
            boxes.append(
                f'  frame{k}_title [pos="{(left + right) / 2:g},{top - 10:g}!", shape=box, style=filled, fillcolor="#ffffff", '
                f'color="#ffffff", fixedsize=true, width={(right - left - 8) / 72:.4f}, height={12 / 72:.4f}, '
                f'fontsize=9, fontcolor="#555555", label={_left(label)}];'
            )
            y -= 10
            continue
        a, b, label = step
        n += 1
        lines = label.count("\n") + 1
        text = f"{n}. {label}"
        if a == b:
            height = LINE * lines + 8
            center = y - height / 2
            boxes.append(
                f'  s{n} [pos="{x[a]:g},{center:g}!", shape=box, style=filled, fillcolor="#ffffff", color="#4a6a9a", '
                f'fontsize=9, margin="0.05,0.02", label={_q(text)}];'
            )
            y -= height + 10
            continue
        y -= LINE * lines + 2  # the label sits above its arrow
        mid = (x[a] + x[b]) / 2
        marks.append(
            f'  s{n}_label [pos="{mid:g},{y + 2 + LINE * lines / 2:g}!", shape=box, style=filled, color="#ffffff", '
            f'fillcolor="#ffffff", fontsize=9, width=0, height=0, margin="0.02,0", label={_q(text)}];'
        )
        marks.append(f'  s{n}_from [pos="{x[a]:g},{y:g}!"]; s{n}_to [pos="{x[b]:g},{y:g}!"]; s{n}_from -> s{n}_to;')
        y -= 12
    bottom = y - 16
    out = [
        "// Figure 2: one request, from upload to output CSV. GENERATED by docs/diagrams/sequence.py:",
        "// edit the steps there and run docs/render.sh; tests/test_design_doc.py checks this file is current.",
        "digraph sequence {",
        f'  graph [layout=neato, inputscale=72, splines=false, overlap=true, outputorder=edgesfirst, fontname="{FONT}", fontsize=13,',
        '         labelloc=t, label="Figure 2. One request, from upload to output CSV"];',
        f'  node  [fontname="{FONT}", shape=point, width=0.01, height=0.01, style=invis];',
        f'  edge  [fontname="{FONT}", color="#333333", arrowsize=0.7];',
        "",
        "  // frames",
        *frames,
        "",
        "  // participants and lifelines",
    ]
    for pid, label in PARTICIPANTS:
        for end, ypos in (("top", 0), ("bottom", bottom - 14)):
            out.append(
                f'  {pid}_{end} [pos="{x[pid]:g},{ypos:g}!", shape=box, style="rounded,filled", fillcolor="#eef3fb", '
                f'color="#4a6a9a", fontsize=10, width=1.45, height=0.42, fixedsize=true, label={_q(label)}];'
            )
        out.append(f'  {pid}_top -> {pid}_bottom [style=dashed, color="#aaaaaa", arrowhead=none];')
    out += ["", "  // messages", *marks, "", "  // actions and frame titles (drawn over the lifelines)", *boxes, "}"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
