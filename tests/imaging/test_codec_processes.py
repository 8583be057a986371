"""Compression runs in child processes: a crashing codec or an image over its CPU budget ends one
child and fails only its own image, not the service or the images beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_compress import photo, save, scan_bomb

from harness.livestack import Stack, wait_until
from pixshift.failures import ImageFailure
from pixshift.imaging import codec_processes
from pixshift.imaging.compress import compress_to_ratio

NO_SCAN_LIMIT = 10**9  # lets scan_bomb() reach the decoder, so that only the CPU budget stops it


def test_work_runs_in_a_child_and_its_failures_come_back_whole():
    assert codec_processes.run(os.getpid, processes=1) != os.getpid()
    with pytest.raises(ImageFailure) as caught:
        codec_processes.run(compress_to_ratio, b"not an image", processes=1)
    assert (caught.value.code, caught.value.retryable) == ("not_an_image", False)


def test_a_crashing_child_fails_its_image_as_retryable_and_the_next_call_gets_a_new_child():
    before = codec_processes.run(os.getpid, processes=1)
    with pytest.raises(ImageFailure) as caught:
        codec_processes.run(os.abort, processes=1)  # as a segfault in a codec would
    assert (caught.value.code, caught.value.retryable) == ("worker_crashed", True)
    data = save(photo((400, 300)), "JPEG", quality=90)
    result = codec_processes.run(compress_to_ratio, data, processes=1)
    assert len(result.data) <= len(data) // 2
    assert codec_processes.run(os.getpid, processes=1) not in (before, os.getpid())


def test_children_exit_with_a_service_killed_without_cleanup(tmp_path):
    """SIGKILL gives the pool no chance to stop its children; they must not live on."""
    script = tmp_path / "service.py"
    script.write_text(
        "import os, sys\n"
        "from pixshift.imaging import codec_processes\n"
        "if __name__ == '__main__':\n"
        "    print(codec_processes.run(os.getpid, processes=2), flush=True)\n"
        "    sys.stdin.read()\n"
    )
    service = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    with service:  # closes its pipes
        child = int(service.stdout.readline())
        assert Path(f"/proc/{child}").exists()
        service.kill()
        service.wait()

    def gone() -> bool:  # exited, or a zombie waiting for the fork server to reap it
        try:
            return Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    wait_until(gone, 10, message=f"compression child {child} to exit")


def test_a_child_whose_service_died_while_it_started_exits_at_once():
    """The service was SIGKILLed between starting a child and the child's first instruction."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pixshift.imaging.codec_processes import _start_child\n"
            f"_start_child({dead.pid})\nimport time; time.sleep(30)",
        ],
        cwd=Path(__file__).resolve().parents[2],
        timeout=20,
    )
    assert child.returncode == 0


def _pool_workers(service: int) -> list[int]:
    """The compression children of a service: the fork server's children."""

    def read(path: str) -> str:
        try:
            return Path(path).read_text(errors="replace")
        except OSError:  # the thread or process has just ended
            return ""

    def kids(pid: int) -> list[int]:
        tasks = Path(f"/proc/{pid}/task")
        return [int(c) for t in (tasks.iterdir() if tasks.exists() else []) for c in read(f"{t}/children").split()]

    servers = [c for c in kids(service) if "forkserver" in read(f"/proc/{c}/cmdline")]
    return [w for s in servers for w in kids(s)]


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def test_killing_compression_children_mid_image_costs_one_attempt_not_the_service(tmp_path, image_server):
    """python -m pixshift keeps serving; the image is retried on a fresh pool and ends done."""
    from test_pipeline_e2e import make_csv

    env = {"PIXSHIFT_RETRY_DELAY": "0.2", "PIXSHIFT_CPU_SLOTS": "1"}
    with Stack(tmp_path, env, separate_consumer=False, workers=2) as stack:
        big = "gen/6000x4000.jpg?q=95"  # 24 MP: about a second of decoding and encoding
        image_server.generated(6000, 4000, quality=95)  # made before the clock starts
        request_id = stack.upload(make_csv(image_server, [(1, "Big", [big])])).json()["request_id"]
        service = stack.serving_pid()  # the pool belongs to the process that runs the workers
        wait_until(
            lambda: any(_cpu_ticks(w) > 20 for w in _pool_workers(service)),
            60,
            message="a compression child to be busy",
        )  # 0.2 s of CPU: mid-image
        victims = _pool_workers(service)
        for pid in victims:
            os.kill(pid, 9)
        doc = stack.wait_finished(request_id, timeout=120)
        image = doc["items"][0]["images"][0]
        assert (doc["state"], image["state"], image["attempts"]) == ("completed", "done", 2), image
        assert stack.session.get(stack.base_url + "/healthz").ok
        assert not set(_pool_workers(service)) & set(victims)


def _state(pid: int) -> str:
    """A process's state letter (R running, S sleeping, Z zombie), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _warm(processes: int) -> set[int]:
    """The pids of the pool of that size, every child started (slots are handed out in turn)."""
    children = {codec_processes.run(os.getpid, processes=processes) for _ in range(processes)}
    assert len(children) == processes
    return children


def _fail(*args, **kwargs) -> ImageFailure:
    with pytest.raises(ImageFailure) as caught:
        codec_processes.run(*args, **kwargs)
    return caught.value


def test_a_crash_fails_only_its_own_image_not_the_one_beside_it():
    _warm(2)
    with ThreadPoolExecutor(1) as thread:
        beside = thread.submit(codec_processes.run, time.sleep, 1, processes=2)  # a job in the other child
        assert _fail(os.abort, processes=2).code == "worker_crashed"
        assert beside.result() is None


def test_an_image_over_its_cpu_budget_is_killed_alone_and_fails_too_costly():
    """The budget counts the child's CPU, not wall time: the sleeping job beside it outlives the
    budget and is left alone, while the costly image's child is killed once it has used 1 s."""
    bomb = scan_bomb()
    children = _warm(2)
    with ThreadPoolExecutor(1) as thread:
        beside = thread.submit(codec_processes.run, time.sleep, 3, processes=2, cpu_seconds=1)
        started = time.monotonic()
        error = _fail(compress_to_ratio, bomb, processes=2, cpu_seconds=1, max_scans=NO_SCAN_LIMIT)
        elapsed = time.monotonic() - started
        after_kill = {pid: _cpu_ticks(pid) for pid in _pool_workers(os.getpid())}
        assert beside.result() is None  # about 2 s after the kill: the window for the check below
    assert (error.code, error.retryable) == ("too_costly", False)
    assert "more than 1 s of CPU time" in error.message
    assert 1 <= elapsed < 2.5, elapsed
    [killed] = children - set(after_kill)  # its child, and only its child, is gone
    assert _state(killed) in ("", "Z")
    burnt = {pid: _cpu_ticks(pid) - ticks for pid, ticks in after_kill.items()}
    assert all(ticks <= 5 for ticks in burnt.values()), burnt  # no child spent CPU after the kill
    data = save(photo((400, 300)), "JPEG", quality=90)
    assert len(codec_processes.run(compress_to_ratio, data, processes=2, cpu_seconds=1).data) <= len(data) // 2


def test_costly_images_holding_every_slot_delay_a_healthy_image_without_failing_it():
    """The incident: two costly images held both slots and a healthy one waited until its lease
    expired. Now the costly ones end at their budget; the healthy one waits, renewing its lease
    through the heartbeat, then completes."""
    bomb = scan_bomb()
    children = _warm(2)
    ticks = {pid: _cpu_ticks(pid) for pid in children}
    healthy = save(photo((1600, 1000)), "JPEG", quality=90)
    beats: list[float] = []
    with ThreadPoolExecutor(2) as threads:
        bombs = [
            threads.submit(_fail, compress_to_ratio, bomb, processes=2, cpu_seconds=1.5, max_scans=NO_SCAN_LIMIT)
            for _ in range(2)
        ]
        wait_until(
            lambda: all(_cpu_ticks(pid) - ticks[pid] > 20 for pid in children),
            10,
            message="both children to be decoding a costly image",
        )
        result = codec_processes.run(
            compress_to_ratio,
            healthy,
            processes=2,
            cpu_seconds=30,
            heartbeat=lambda: beats.append(time.monotonic()),
            heartbeat_seconds=0.2,
        )
        assert [b.result().code for b in bombs] == ["too_costly", "too_costly"]
    assert len(result.data) <= len(healthy) // 2
    assert len(beats) >= 3  # it waited over a second for a slot, renewing all along
    assert all(_state(pid) in ("", "Z") for pid in children)  # the costly images' children are gone
    assert all(_state(pid) == "S" for pid in _pool_workers(os.getpid()))  # and no child is busy


def test_a_child_that_holds_an_image_without_using_cpu_is_stopped_as_stalled():
    """Ten budgets of wall time is the backstop for a child that is blocked or starved of CPU."""
    started = time.monotonic()
    error = _fail(time.sleep, 30, processes=1, cpu_seconds=0.1)
    assert (error.code, error.retryable) == ("worker_stalled", True)
    assert time.monotonic() - started < 5


def test_costly_images_cost_only_themselves_in_a_running_service(tmp_path, image_server):
    """python -m pixshift with two slots and PIXSHIFT_IMAGE_CPU_SECONDS=1: a scan bomb and two
    pictures that need more CPU than that fail too_costly at their first attempt, the healthy
    images beside them are done, and once the request has finished no compression child works."""
    from harness.imageserver import ImageServer

    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "bomb.jpg").write_bytes(scan_bomb())
    costly = [f"gen/3000x2000.webp?q=90&seed={seed}" for seed in (1, 2)]  # seconds of WebP encodes each
    for seed in (1, 2):
        image_server.generated(3000, 2000, seed=seed, fmt="WEBP", quality=90)
    env = {"PIXSHIFT_CPU_SLOTS": "2", "PIXSHIFT_IMAGE_CPU_SECONDS": "1"}
    with ImageServer(tmp_path / "served") as bombs, Stack(tmp_path, env, separate_consumer=False, workers=4) as stack:
        urls = [bombs.url("bomb.jpg"), *image_server.urls(costly), *image_server.urls(["photo1.jpg", "photo2.jpg"])]
        csv = 'Serial Number,Product Name,Input Image URLs\n1,Mixed,"' + ", ".join(urls) + '"\n'
        request_id = stack.upload(csv).json()["request_id"]
        doc = stack.wait_finished(request_id, timeout=60)
        images = doc["items"][0]["images"]
        codes = [(i["state"], (i.get("error") or {}).get("code"), i["attempts"]) for i in images]
        assert codes == [("failed", "too_costly", 1)] * 3 + [("done", None, 1)] * 2, images
        service = stack.processes["web"].pid
        wait_until(
            lambda: all(_state(pid) == "S" for pid in _pool_workers(service)),
            5,
            message="every compression child to be idle",
        )  # the incident's burnt on for minutes
