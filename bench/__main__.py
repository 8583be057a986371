"""PixShift's benchmark: one command, everything started and stopped here, one table at the end.

    .venv/bin/python -m bench                 # the full run (~5 minutes on 2 cores)
    .venv/bin/python -m bench --smoke         # seconds: tiny sizes, same sections (CI runs this)

Options: ``--modes embedded,scaleout`` (scale-out needs DATABASE_URL and REDIS_URL, default the local
PostgreSQL ``test`` database and Redis), ``--out FILE`` also writes the table as Markdown,
``--json FILE`` the raw figures, ``--profile DIR`` records py-spy profiles of the PixShift processes
during the end-to-end and status runs (py-spy on PATH or in $PY_SPY), ``--keep`` keeps the temporary
folder, ``--sections`` runs a subset (and prints JSON instead of the table).

Sections (every rate is a ratio taken in the same run, on the same machine):
1. codec limit: decode + one encode of the corpus with Pillow, one process per core (bench/codec.py);
2. end to end: the corpus served by a local HTTP server, uploaded as a CSV, processed by PixShift on
   the embedded default (``python -m pixshift``) and on Redis + PostgreSQL (gunicorn + 2
   ``huey_consumer`` processes, the README's commands); images/s and the ratio to (1);
2b. the same catalog again: every corpus image once behind a host that sends ETags, uploaded twice,
   then under URLs without validators: wall time, full downloads and 304s of each (bench/rerun.py);
3. slow hosts: 200 images from a server that waits 200 ms before each response, vs 200 x 200 ms;
4. big CSV: POST /upload latency for 10,000 rows x 3 URLs, and the web process's peak memory while
   taking 1k, 10k and 50k rows (a web-only process per size: nothing is fetched);
5. status under load: GET /status/<id> (default page) of a 5,000-image request, 100 clients each
   polling once a second (while the request is processed, then with the workers stopped), and 100
   clients back to back (capacity); the response size;
6. status beside uploads: 200 clients started at once, each polling GET /status once a second for a
   minute, while 20 clients upload a 1,000-row CSV each at the same moment (bench/crowd.py);
7. compression: encodes per image and quality reached, as PixShift reported them in (2);
8. small beside huge: a 10-image request uploaded while a 200,000-image one runs, with requests
   taking turns in the queue (the default) and with one first-in-first-out queue (bench/fairness.py);
9. look at half the bytes: SSIMULACRA2 and SSIM against the input, bytes and CPU, per source-quality
   band, for each JPEG encoder (the engine before 2026-12, the default, MozJPEG) (bench/look.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import codec, procs
from bench import corpus as corpus_mod
from bench.crowd import crowd
from bench.fairness import small_beside_huge
from bench.load import load
from bench.look import look
from bench.report import render
from bench.rerun import catalog_again
from harness.imageserver import ImageServer
from harness.livestack import Stack, scaleout_env, wait_until

ALL_SECTIONS = ("codec", "e2e", "rerun", "slow", "big", "status", "crowd", "fair", "look")
FINISHED = ("completed", "completed_with_errors", "failed", "cancelled")
HEADER = "Serial Number,Product Name,Input Image URLs\r\n"


@dataclass(frozen=True)
class Sizes:
    codec_seconds: float
    jpeg_repeats: int  # each corpus JPEG appears this many times in the end-to-end request
    png_repeats: int
    slow_images: int
    slow_delay: float
    big_rows: tuple[int, ...]  # memory of the web process for these row counts
    latency_rows: int  # POST /upload latency for this many rows x 3 URLs ...
    latency_runs: int  # ... taken this many times (median)
    status_images: int
    status_clients: int
    status_seconds: float  # each open-loop load phase
    closed_per_client: int
    fresh_web_per_size: bool
    crowd_pollers: int  # clients polling GET /status once a second, all started at once, ...
    crowd_uploaders: int  # ... while this many clients upload at once ...
    crowd_rows: int  # ... a CSV of this many rows (2 URLs each) ...
    crowd_seconds: float  # ... polling for this long
    fair_huge_images: int  # a request this big runs ...
    fair_small_images: int  # ... when one this small is uploaded ...
    fair_wait_s: float  # ... and given this long to finish
    fair_under_way: int  # ... the small one is uploaded once this many of the huge one's images are done
    processes: int  # processes of the codec limit, the direct compression and the look (0: one per core)


FULL = Sizes(
    codec_seconds=6,
    jpeg_repeats=10,
    png_repeats=3,
    slow_images=200,
    slow_delay=0.2,
    big_rows=(1_000, 10_000, 50_000),
    latency_rows=10_000,
    latency_runs=3,
    status_images=5_000,
    status_clients=100,
    status_seconds=10,
    closed_per_client=5,
    fresh_web_per_size=True,
    crowd_pollers=200,
    crowd_uploaders=20,
    crowd_rows=1_000,
    crowd_seconds=60,
    fair_huge_images=200_000,
    fair_small_images=10,
    fair_wait_s=60,
    fair_under_way=100,
    processes=0,
)
# The smoke run checks that every section runs and prints, not its figures: tiny sizes, one process
# where a pool would only repeat the code path, no warm-ups, and deployments shared between sections
# (SharedDeployments); CI runs it beside another test worker, so it is kept to ~10 s of CPU.
SMOKE = Sizes(
    codec_seconds=0.1,
    jpeg_repeats=1,
    png_repeats=1,
    slow_images=8,
    slow_delay=0.2,
    big_rows=(100, 300, 600),
    latency_rows=300,
    latency_runs=1,
    status_images=12,  # 6 products: the default page is all of them, per_page=1 is one
    status_clients=10,
    status_seconds=0.5,  # the clients whose first poll falls in the first half second poll once
    closed_per_client=3,
    fresh_web_per_size=False,
    crowd_pollers=10,
    crowd_uploaders=2,
    crowd_rows=5,
    crowd_seconds=1,  # one poll per client: the second would be due at the deadline
    fair_huge_images=24,
    fair_small_images=4,
    fair_wait_s=20,
    fair_under_way=6,
    processes=1,
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- PixShift processes ----------------------------------------------------------------------


class Deployment:
    """A running PixShift: the web process (whose memory we read) and every process that works."""

    def __init__(self, stack: Stack, mode: str) -> None:
        self.stack, self.mode = stack, mode
        self.http = requests.Session()

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    def web_pid(self) -> int:
        """The process that serves HTTP: gunicorn's (only) worker, on either deployment."""
        return self.stack.serving_pid()

    def pids(self) -> list[int]:
        out = []
        for proc in self.stack.processes.values():
            if proc.poll() is None:
                out += procs.tree(proc.pid)
        return out

    def upload(self, text: str, timeout: float = 300) -> tuple[dict, float]:
        start = time.perf_counter()
        response = self.http.post(
            self.base_url + "/upload", files={"file": ("products.csv", text.encode(), "text/csv")}, timeout=timeout
        )
        seconds = time.perf_counter() - start
        if response.status_code != 202:
            raise RuntimeError(f"upload refused: {response.status_code} {response.text[:500]}")
        return response.json(), seconds

    def drain(self, timeout: float = 300) -> float:
        """Seconds until the web process answers again after a load (it may still hold a backlog)."""
        start = time.perf_counter()
        self.http.get(self.base_url + "/healthz", timeout=timeout).raise_for_status()
        return time.perf_counter() - start

    def status(self, request_id: str, **params) -> dict:
        response = self.http.get(f"{self.base_url}/status/{request_id}", params=params, timeout=120)
        response.raise_for_status()
        return response.json()

    def wait_finished(self, request_id: str, timeout: float, interval: float = 0.1) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            doc = self.status(request_id, per_page=1)
            if doc["state"] in FINISHED:
                return doc
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"request {request_id} not finished after {timeout} s: {doc['counts']}\n{self.stack.logs()}"
                )
            time.sleep(interval)

    def images(self, request_id: str) -> list[dict]:
        out, page = [], 1
        while True:
            doc = self.status(request_id, page=page, per_page=500)
            out += [im for item in doc["items"] for im in item["images"]]
            if not doc["pagination"]["next"]:
                return out
            page += 1


@contextlib.contextmanager
def deployment(mode: str, tmp: Path, *, workers: bool = True, urls: dict | None = None, env: dict | None = None):
    """PixShift on the embedded default, or on PostgreSQL + Redis with gunicorn and 2 consumers.

    ``workers=False``: the web process alone (nothing is fetched), for the upload and memory figures.
    With --smoke, one of the deployments the sections share (SharedDeployments)."""
    if _shared is not None:
        yield _shared.get(mode, tmp, workers=workers, urls=urls, env=env)
        return
    with start_deployment(mode, tmp, workers=workers, urls=urls, env=env) as dep:
        yield dep


@contextlib.contextmanager
def start_deployment(mode: str, tmp: Path, *, workers: bool, urls: dict | None, env: dict | None):
    tmp.mkdir(parents=True, exist_ok=True)
    # Reuse off: the figures measure downloading and compressing every image, and their repeats are
    # the same bytes under other URLs, which revalidation across requests would not compress again.
    env = {"PIXSHIFT_ALLOW_PRIVATE_URLS": "1", "PIXSHIFT_REUSE_RESULTS": "0", **(env or {})}
    if mode == "embedded":  # PIXSHIFT_INPROCESS_WORKERS: 16 is the default; 0 is web only
        with Stack(tmp, env, separate_consumer=False, workers=16 if workers else 0) as stack:
            dep = Deployment(stack, mode)
            with contextlib.closing(dep.http):  # its keep-alive connection closed before the stop
                yield dep
        return
    with scaleout_env(urls["database"], urls["redis"]) as scale_env:
        with Stack(tmp, {**env, **scale_env}, separate_consumer=False, gunicorn=True, workers=16) as stack:
            if workers:  # README: huey_consumer pixshift.worker.huey -k thread -w 16, on each of 2 "machines"
                for name in ("worker-1", "worker-2"):
                    stack.start_consumer(name)
                for name in ("worker-1", "worker-2"):
                    wait_until(
                        lambda n=name: "consumer started" in (tmp / f"{n}.log").read_text(errors="replace"),
                        30,
                        message=f"{name} to start\n{stack.logs()}",
                    )
            dep = Deployment(stack, mode)
            # Closed before the stop: gunicorn's eventlet worker waits out an idle keep-alive connection.
            with contextlib.closing(dep.http):
                yield dep


class SharedDeployments:
    """--smoke: the sections share deployments instead of each starting its own (a start and a stop
    cost ~2 s of CPU; the smoke run checks code paths, not figures). Per mode: one web-only, and one
    with workers and every setting any section asks for (``env``: reuse on for 2b, and section 8's
    one-queue window, which at smoke size queues the huge request as turns do). close() stops them."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.live: dict[tuple[str, str], Deployment] = {}
        self.running = contextlib.ExitStack()

    def get(
        self, mode: str, tmp: Path, *, workers: bool, urls: dict | None, env: dict | None, fresh: bool = False
    ) -> Deployment:
        if not workers:
            kind, env = "web", {}
        elif (env or {}).items() <= self.env.items():
            kind, env = "workers", self.env
        else:
            raise ValueError(f"--smoke shares one deployment with {self.env}, not {env}")
        dep = self.live.get((mode, kind))
        if fresh and dep is not None:
            dep.stack.stop()
        if fresh or dep is None or dep.stack.processes["web"].poll() is not None:
            dep = self.running.enter_context(start_deployment(mode, tmp, workers=workers, urls=urls, env=env))
            self.live[(mode, kind)] = dep
        return dep

    def forget(self, dep: Deployment) -> None:
        """``dep`` is not what it was (its workers were stopped): later sections get a new one."""
        self.live = {key: d for key, d in self.live.items() if d is not dep}

    def close(self) -> None:
        self.running.close()


_shared: SharedDeployments | None = None  # set by main() for --smoke


def product_csv(urls: list[str], per_row: int, *, start_serial: int = 1) -> str:
    lines = [HEADER]
    for i in range(0, len(urls), per_row):
        serial = start_serial + i // per_row
        lines.append(f'{serial},Product {serial},"{", ".join(urls[i : i + per_row])}"\r\n')
    return "".join(lines)


@contextlib.contextmanager
def profiled(dep: Deployment, profile_dir: Path | None, name: str):
    """py-spy record of every PixShift process while the block runs (when asked for)."""
    if profile_dir is None:
        yield
        return
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not spy:
        raise SystemExit("--profile needs py-spy on PATH or in $PY_SPY")
    profile_dir.mkdir(parents=True, exist_ok=True)
    recorders = []
    for key, proc in dep.stack.processes.items():
        if proc.poll() is None:
            out = profile_dir / f"{dep.mode}-{name}-{key}.txt"
            recorders.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(proc.pid),
                        "--subprocesses",
                        "--rate",
                        "200",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        for r in recorders:
            r.send_signal(signal.SIGINT)
        for r in recorders:
            try:
                r.wait(30)
            except subprocess.TimeoutExpired:
                r.kill()


# --- the sections ----------------------------------------------------------------------------


def direct_compression(corpus: corpus_mod.Corpus, processes: int = 0) -> dict:
    """compress_to_ratio once per image, in ``processes`` processes (0: one per core): the qualities
    the codec limit encodes at, and a check that each result is the best quality (quality + 1 does
    not fit)."""
    items = corpus.of("jpeg") + corpus.of("png")
    workers = processes or os.cpu_count() or 1
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        found = list(pool.map(codec.search_one, [str(corpus.path(i)) for i in items]))
    return {item.name: r for item, r in zip(items, found)}


def codec_section(corpus: corpus_mod.Corpus, direct: dict, sizes: Sizes) -> dict:
    out = {}
    for kind in ("jpeg", "png"):
        jobs = [
            codec.Job(
                str(corpus.path(i)), direct[i.name]["format"], direct[i.name]["quality"], direct[i.name]["lossless"]
            )
            for i in corpus.of(kind)
        ]
        # One process (--smoke) starts its clock when it is ready; several wait for each other.
        rate = codec.codec_limit(
            jobs, sizes.codec_seconds, sizes.processes or None, start_delay=0.0 if sizes.processes == 1 else 1.5
        )
        log(
            f"codec limit {kind}: {rate.images_per_s:.1f} images/s ({rate.cpu_ms_per_image:.1f} ms CPU per image, "
            f"{rate.ms_per_image_per_core:.1f} ms wall per image per core)"
        )
        out[kind] = asdict(rate)
    return out


def end_to_end(
    dep: Deployment, server: ImageServer, corpus: corpus_mod.Corpus, kind: str, repeats: int, profile_dir: Path | None
) -> dict:
    items = corpus.of(kind)
    urls = [server.url(f"{item.name}?r={r}") for r in range(repeats) for item in items]
    text = product_csv(urls, per_row=2)
    pids = dep.pids()
    services = procs.named(("postgres", "redis-server")) if dep.mode == "scaleout" else []
    cpu0, busy0 = procs.cpu_seconds(pids), procs.machine_busy()
    services0, server_cpu0 = procs.cpu_seconds(services), time.process_time()
    with profiled(dep, profile_dir, f"e2e-{kind}"):
        start = time.perf_counter()
        accepted, upload_s = dep.upload(text)
        dep.wait_finished(accepted["request_id"], timeout=600)
        seconds = time.perf_counter() - start
    # Read the tree again: compression children (pixshift/imaging/codec_processes.py) start on first use.
    cpu = procs.cpu_seconds(sorted(set(pids) | set(dep.pids()))) - cpu0
    busy = procs.utilisation(busy0, procs.machine_busy())
    bench_cpu = time.process_time() - server_cpu0
    services_cpu = procs.cpu_seconds(services) - services0
    cores = os.cpu_count() or 1
    others = max(0.0, busy * cores - (cpu + bench_cpu + services_cpu) / seconds)
    images = dep.images(accepted["request_id"])
    done = [im for im in images if im["state"] == "done"]
    result = {
        "images": len(urls),
        "done": len(done),
        "seconds": seconds,
        "images_per_s": len(urls) / seconds,
        "upload_s": upload_s,
        "cpu_s": cpu,
        "cpu_ms_per_image": 1000 * cpu / len(urls),
        "machine_busy": busy,
        "bench_process_cpu_s": bench_cpu,
        "services_cpu_s": services_cpu,
        "other_cores": others,
        "encodes": [im["output"]["encodes"] for im in done],
        "qualities": [im["quality"] for im in done],
        "ratios": [im["output_bytes"] / im["input_bytes"] for im in done],
        "formats": sorted({im["output"]["format"] for im in done}),
        "failed": [im["error"] for im in images if im["state"] != "done"][:5],
    }
    log(
        f"{dep.mode} e2e {kind}: {len(urls)} images in {seconds:.1f} s = {result['images_per_s']:.1f}/s, "
        f"PixShift CPU {result['cpu_ms_per_image']:.0f} ms/image, machine {100 * busy:.0f}% busy, "
        f"{others:.2f} cores used by other processes"
    )
    return result


def slow_hosts(dep: Deployment, server: ImageServer, corpus: corpus_mod.Corpus, sizes: Sizes) -> dict:
    small = corpus.of("small")
    # Two host names for the one server: PixShift opens at most PIXSHIFT_HOST_CONCURRENCY (8)
    # connections to a host per worker process, and 16 workers should all be busy.
    hosts = ("127.0.0.1", "localhost")
    urls = [
        server.url(f"slow/{small[n % len(small)].name}?delay={sizes.slow_delay}&n={n}").replace(
            "127.0.0.1", hosts[n % len(hosts)], 1
        )
        for n in range(sizes.slow_images)
    ]
    server.reset()
    start = time.perf_counter()
    accepted, _ = dep.upload(product_csv(urls, per_row=2))
    doc = dep.wait_finished(accepted["request_id"], timeout=300)
    seconds = time.perf_counter() - start
    serial = sizes.slow_images * sizes.slow_delay
    result = {
        "images": sizes.slow_images,
        "delay_s": sizes.slow_delay,
        "seconds": seconds,
        "serial_s": serial,
        "fraction_of_serial": seconds / serial,
        "max_in_flight": server.max_in_flight,
        "done": doc["counts"]["done"],
    }
    log(
        f"{dep.mode} slow hosts: {seconds:.1f} s vs {serial:.0f} s serial ({seconds / serial:.3f}), "
        f"{server.max_in_flight} downloads at once"
    )
    return result


def big_csv_text(rows: int, base: str) -> str:
    # URLs on this machine that would 404: the web-only process never fetches them anyway.
    lines = [HEADER]
    for serial in range(1, rows + 1):
        urls = ", ".join(f"{base}/missing/catalog/{serial:07d}/image-{n}.jpg" for n in (1, 2, 3))
        lines.append(f'{serial},Product {serial} with a name of some length,"{urls}"\r\n')
    return "".join(lines)


def big_csv(mode: str, tmp: Path, server: ImageServer, sizes: Sizes, urls: dict) -> dict:
    """Peak web memory per CSV size, and POST /upload latency for the 10k-row file."""
    out: dict = {"memory": [], "latency_s": []}
    texts = {rows: big_csv_text(rows, server.base_url) for rows in sorted({*sizes.big_rows, sizes.latency_rows})}

    def measure(dep: Deployment, rows: int) -> None:
        pid = dep.web_pid()
        dep.upload(big_csv_text(5, server.base_url))  # warm: first upload imports and connects
        before = procs.memory_kib(pid)["VmRSS"]
        procs.reset_peak(pid)
        _, seconds = dep.upload(texts[rows])
        mem = procs.memory_kib(pid)
        entry = {
            "rows": rows,
            "images": 3 * rows,
            "csv_bytes": len(texts[rows].encode()),
            "rss_before_kib": before,
            "peak_kib": mem["VmHWM"],
            "growth_kib": mem["VmHWM"] - before,
            "upload_s": seconds,
        }
        out["memory"].append(entry)
        log(
            f"{mode} upload {rows} rows ({entry['csv_bytes'] / 1e6:.1f} MB): {seconds:.2f} s, web peak "
            f"+{entry['growth_kib'] / 1024:.0f} MiB over {before / 1024:.0f} MiB"
        )
        if rows == sizes.latency_rows:
            out["latency_s"].append(seconds)
            for _ in range(sizes.latency_runs - 1):
                _, seconds = dep.upload(texts[rows])
                out["latency_s"].append(seconds)

    if sizes.fresh_web_per_size:
        for n, rows in enumerate(sizes.big_rows):
            with deployment(mode, tmp / f"web-{n}", workers=False, urls=urls) as dep:
                measure(dep, rows)
    else:
        with deployment(mode, tmp / "web", workers=False, urls=urls) as dep:
            for rows in sizes.big_rows:
                measure(dep, rows)
    if not out["latency_s"]:
        with deployment(mode, tmp / "web-latency", workers=False, urls=urls) as dep:
            for _ in range(sizes.latency_runs):
                out["latency_s"].append(dep.upload(texts[sizes.latency_rows])[1])
    out["latency_median_s"] = statistics.median(out["latency_s"])
    return out


def status_under_load(
    mode: str,
    tmp: Path,
    server: ImageServer,
    corpus: corpus_mod.Corpus,
    sizes: Sizes,
    urls: dict,
    profile_dir: Path | None,
) -> dict:
    """GET /status of a request of ``status_images`` small images (2 a product), default page.

    The first page is processed first (tasks run in image order); once it is all done its document
    has its full size, and the load starts while the rest is still being processed. Then the
    workers are stopped (embedded: the process is restarted with no workers, on the same database)
    and the same load runs against the web process alone, then back to back for its capacity."""
    tiny = corpus.of("tiny")[0]
    image_urls = [server.url(f"{tiny.name}?n={n}") for n in range(sizes.status_images)]
    clients, per_client = sizes.status_clients, int(sizes.status_seconds) + 1
    out: dict = {"images": sizes.status_images, "clients": clients}
    with deployment(mode, tmp, urls=urls) as dep:
        start = time.perf_counter()
        accepted, out["upload_s"] = dep.upload(product_csv(image_urls, per_row=2))
        request_id = accepted["request_id"]
        url = f"{dep.base_url}/status/{request_id}"

        def first_page_done() -> bool:
            doc = dep.status(request_id)
            return all(im["state"] == "done" for item in doc["items"] for im in item["images"])

        wait_until(first_page_done, 300, interval=0.2, message="the first page of the status test")
        with profiled(dep, profile_dir, "status-during"):
            during = load(url, clients=clients, per_client=per_client, interval=1.0, max_seconds=sizes.status_seconds)
        out["drain_during_s"] = dep.drain()
        counts = dep.status(request_id, per_page=1)["counts"]
        out["processed_per_s"] = (counts["done"] + counts["failed"]) / (time.perf_counter() - start)
        log(
            f"{mode} status while processing, {clients} clients at 1/s: {during.row()}; "
            f"{out['processed_per_s']:.0f} small images/s processed meanwhile; backlog drained "
            f"{out['drain_during_s']:.1f} s after the clients stopped"
        )
        with web_only(dep, tmp, urls) as web:
            url = f"{web.base_url}/status/{request_id}"
            web.status(request_id)  # warm
            with profiled(web, profile_dir, "status-idle"):
                idle = load(url, clients=clients, per_client=per_client, interval=1.0, max_seconds=sizes.status_seconds)
            out["drain_idle_s"] = web.drain()
            log(f"{mode} status, web alone, {clients} clients at 1/s: {idle.row()}")
            closed = load(
                url,
                clients=clients,
                per_client=sizes.closed_per_client,
                interval=None,
                max_seconds=max(5.0, 2 * sizes.status_seconds),
            )
            web.drain()
            log(f"{mode} status, web alone, {clients} clients back to back: {closed.row()}")
            out["response_bytes"] = len(web.http.get(url, timeout=30).content)
            out["per_page_1_bytes"] = len(web.http.get(url, params={"per_page": 1}, timeout=30).content)
    out.update(during=asdict(during), idle=asdict(idle), closed=asdict(closed))
    return out


def polls_beside_uploads(
    mode: str,
    tmp: Path,
    server: ImageServer,
    corpus: corpus_mod.Corpus,
    sizes: Sizes,
    urls: dict,
    profile_dir: Path | None,
) -> dict:
    """GET /status from ``crowd_pollers`` clients, all started at once and each polling once a second,
    while ``crowd_uploaders`` clients each upload a ``crowd_rows``-row CSV at the same moment and the
    workers process: a busy service's worst second, then a minute of it.

    One request per uploader is uploaded first (same size, small images); the pollers watch those
    (round robin, default page) while they are processed. A poll counts as timed out after 10 s."""
    tiny = corpus.of("tiny")[0]

    def csv(tag: str) -> str:
        return product_csv([server.url(f"{tiny.name}?u={tag}-{n}") for n in range(2 * sizes.crowd_rows)], per_row=2)

    out: dict = {
        "pollers": sizes.crowd_pollers,
        "uploaders": sizes.crowd_uploaders,
        "rows": sizes.crowd_rows,
        "seconds": sizes.crowd_seconds,
        "timeout_s": 10.0,
    }
    with deployment(mode, tmp, urls=urls) as dep:
        watched = [dep.upload(csv(f"w{k}"))[0]["request_id"] for k in range(sizes.crowd_uploaders)]
        texts = [[csv(f"u{k}")] for k in range(sizes.crowd_uploaders)]
        with profiled(dep, profile_dir, "crowd"):
            result = crowd(
                [f"{dep.base_url}/status/{rid}" for rid in watched],
                dep.base_url + "/upload",
                texts,
                pollers=sizes.crowd_pollers,
                max_seconds=sizes.crowd_seconds,
                timeout=out["timeout_s"],
            )
        out["drain_s"] = dep.drain()
    polls, uploads = result.polls, result.uploads
    log(
        f"{mode} status beside uploads, {sizes.crowd_pollers} clients at 1/s, {sizes.crowd_uploaders} uploading "
        f"{sizes.crowd_rows} rows: {polls.row()}, {polls.timeouts} timed out, {polls.errors} failed; uploads "
        f"{uploads.accepted}/{uploads.uploads} accepted, p50 {uploads.p50_s:.2f} s, max {uploads.max_s:.2f} s"
    )
    out.update(polls=asdict(polls), uploads=asdict(uploads))
    return out


@contextlib.contextmanager
def web_only(dep: Deployment, tmp: Path, urls: dict):
    """The same deployment with its workers stopped."""
    if _shared is not None:
        _shared.forget(dep)
    if dep.mode == "scaleout":
        for name in ("worker-1", "worker-2"):
            dep.stack.processes[name].terminate()
        for name in ("worker-1", "worker-2"):
            dep.stack.processes[name].wait(30)
        yield dep
        return
    if _shared is not None:  # --smoke: the web-only deployment the big-CSV section shares next
        for proc in dep.stack.processes.values():
            proc.terminate()  # its graceful stop overlaps the web-only one's start
        web = _shared.get(dep.mode, dep.stack.tmp_path, workers=False, urls=urls, env=None, fresh=True)
        dep.stack.stop()
        yield web
        return
    dep.stack.stop()
    with Stack(tmp, {"PIXSHIFT_ALLOW_PRIVATE_URLS": "1"}, separate_consumer=False, workers=0) as stack:
        yield Deployment(stack, dep.mode)


# --- the run ---------------------------------------------------------------------------------

# The steps of each mode's run: a section each, but e2e and slow hosts, which share a deployment.
FULL_ORDER = ("e2e", "rerun", "status", "crowd", "big", "fair")
# --smoke shares deployments (SharedDeployments): 2b after e2e and slow, which wait for their every
# image (2b counts the image server's answers: no other downloads may be under way) and before the
# sections that leave some; status stops the workers; big runs on the web-only deployment it left.
SMOKE_ORDER = ("e2e", "rerun", "crowd", "fair", "status", "big")


@dataclass(frozen=True)
class Run:
    tmp: Path
    server: ImageServer
    corpus: corpus_mod.Corpus
    sizes: Sizes
    urls: dict
    profile: Path | None
    sections: set[str]
    smoke: bool


def run_step(step: str, mode: str, r: dict, run: Run) -> None:
    """One step of ``mode``'s run, its figures into ``r``."""
    tmp, server, corpus, sizes, urls, sections = run.tmp, run.server, run.corpus, run.sizes, run.urls, run.sections
    if step == "e2e" and sections & {"e2e", "slow"}:
        with deployment(mode, tmp / mode, urls=urls) as dep:
            log(f"{mode}: PixShift up at {dep.base_url}")
            if not run.smoke:
                end_to_end(dep, server, corpus, "small", 1, None)  # warm up (imports, connections)
            if "e2e" in sections:
                r["e2e_jpeg"] = end_to_end(dep, server, corpus, "jpeg", sizes.jpeg_repeats, run.profile)
                r["e2e_png"] = end_to_end(dep, server, corpus, "png", sizes.png_repeats, run.profile)
            if "slow" in sections:
                r["slow"] = slow_hosts(dep, server, corpus, sizes)
    elif step == "rerun" and "rerun" in sections:
        with deployment(mode, tmp / f"{mode}-rerun", urls=urls, env={"PIXSHIFT_REUSE_RESULTS": "1"}) as dep:
            if not run.smoke:
                end_to_end(dep, server, corpus, "small", 1, None)  # warm up (imports, connections)
            names = [i.name for i in corpus.of("jpeg") + corpus.of("png")]
            r["rerun"] = catalog_again(dep, server, names, product_csv, log)
    elif step == "status" and "status" in sections:
        r["status"] = status_under_load(mode, tmp / f"{mode}-status", server, corpus, sizes, urls, run.profile)
    elif step == "crowd" and "crowd" in sections:
        r["crowd"] = polls_beside_uploads(mode, tmp / f"{mode}-crowd", server, corpus, sizes, urls, run.profile)
    elif step == "big" and "big" in sections:
        r["big_csv"] = big_csv(mode, tmp / f"{mode}-web", server, sizes, urls)
    elif step == "fair" and "fair" in sections:
        r["fair"] = small_beside_huge(
            lambda label, env: deployment(mode, tmp / f"{mode}-fair-{label}", urls=urls, env=env),
            server,
            product_csv,
            huge_images=sizes.fair_huge_images,
            small_images=sizes.fair_small_images,
            wait_s=sizes.fair_wait_s,
            log=log,
            under_way=sizes.fair_under_way,
        )


def main(argv: list[str] | None = None) -> int:
    global _shared
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the bench runs, in seconds")
    parser.add_argument("--modes", default="embedded,scaleout", help="embedded, scaleout, or both (default)")
    parser.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON here")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles of the end-to-end and status runs here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, corpus)")
    parser.add_argument(
        "--sections",
        default=",".join(ALL_SECTIONS),
        help="a subset of " + ",".join(ALL_SECTIONS) + " (prints JSON instead of the table)",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    if unknown := sections - set(ALL_SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    urls = {
        "database": os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test",
        "redis": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "PUBLIC_BASE_URL", "PIXSHIFT_QUEUE_NAME"):
        os.environ.pop(name, None)  # each deployment below decides its own

    tmp = Path(tempfile.mkdtemp(prefix="pixshift-bench-"))
    began = time.perf_counter()
    results: dict = {"smoke": args.smoke, "modes": modes, "cores": os.cpu_count(), "sizes": asdict(sizes)}
    try:
        if args.smoke:  # no wait: the machine's busy time while the corpus is built, less the bench's own
            busy0, cpu0, start = procs.machine_busy(), time.process_time(), time.perf_counter()
            log(f"building the corpus in {tmp}")
            corpus = corpus_mod.build(tmp / "corpus", smoke=True)
            results["background_cores"] = procs.background_while(
                busy0, time.process_time() - cpu0, time.perf_counter() - start
            )
            log(f"background load before starting: {results['background_cores']:.2f} cores busy (a note, not a check)")
        else:
            results["background_cores"] = procs.background_load()
            log(f"background load before starting: {results['background_cores']:.2f} cores busy")
            log(f"building the corpus in {tmp}")
            corpus = corpus_mod.build(tmp / "corpus", smoke=False)
        results["corpus"] = corpus_summary(corpus)
        results["corpus_items"] = [asdict(i) for i in corpus.items]
        direct = direct_compression(corpus, sizes.processes)
        results["direct"] = direct
        if "codec" in sections:
            results["codec"] = codec_section(corpus, direct, sizes)
        looking = None
        if "look" in sections:
            pngs = [corpus.path(i) for i in corpus.of("png")]
            if args.smoke:  # in the background, filling the deployments' waits (starts, stops, polls)
                background = ThreadPoolExecutor(1)
                looking = background.submit(look, pngs, True, log, processes=sizes.processes or None)
                background.shutdown(wait=False)  # its thread ends with the job
            else:
                results["look"] = look(pngs, False, log)
        with ImageServer(root=corpus.root) as server:
            run = Run(tmp, server, corpus, sizes, urls, args.profile, sections, args.smoke)
            for mode in modes:
                results[mode] = {}
                if args.smoke:
                    _shared = SharedDeployments(
                        {"PIXSHIFT_REUSE_RESULTS": "1", "PIXSHIFT_REQUEST_WINDOW": str(sizes.fair_huge_images)}
                    )
                try:
                    for step in SMOKE_ORDER if args.smoke else FULL_ORDER:
                        run_step(step, mode, results[mode], run)
                finally:
                    if _shared is not None:
                        _shared.close()
                    _shared = None
        if looking is not None:
            results["look"] = looking.result()
        results["seconds"] = time.perf_counter() - began
        table = (
            render(results)
            if sections == set(ALL_SECTIONS)
            else json.dumps({m: results.get(m) for m in (*modes, "look")}, indent=1, default=str)
        )
        print(table)
        if args.out:
            args.out.write_text(table)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
        log(f"done in {results['seconds']:.0f} s")
        return 0
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def corpus_summary(corpus: corpus_mod.Corpus) -> dict:
    out = {}
    for kind in ("jpeg", "png", "small", "tiny"):
        items = corpus.of(kind)
        mp = [i.width * i.height / 1e6 for i in items]
        out[kind] = {
            "files": len(items),
            "mp_min": min(mp),
            "mp_max": max(mp),
            "mp_mean": statistics.fmean(mp),
            "bytes_mean": statistics.fmean(i.nbytes for i in items),
            "bpp_mean": statistics.fmean(8 * i.nbytes / (i.width * i.height) for i in items),
            "qualities": sorted({i.source_quality for i in items if i.source_quality}),
            "alpha": sum(i.alpha for i in items),
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
