"""Compression runs in child processes: a crashing codec or an image over its CPU budget ends one
child and fails only its own image, not the service or the images beside it."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from csv_files import csv_text
from images import save, scan_bomb
from processes import cpu_ticks, forkservers, gone, pool_workers, state

from harness.livestack import Stack, wait_until
from harness.photos import photo
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
    # Exited, or a zombie waiting for the fork server to reap it.
    wait_until(lambda: gone(child), 10, message=f"compression child {child} to exit")


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


def test_killing_compression_children_mid_image_costs_one_attempt_not_the_service(tmp_path, image_server):
    """python -m pixshift keeps serving; the image is retried on a fresh pool and ends done."""
    env = {"PIXSHIFT_RETRY_DELAY": "0.2", "PIXSHIFT_CPU_SLOTS": "1"}
    with Stack(tmp_path, env, separate_consumer=False, workers=2) as stack:
        big = "gen/6000x4000.jpg?q=95"  # 24 MP: about a second of decoding and encoding
        image_server.generated(6000, 4000, quality=95)  # made before the clock starts
        request_id = stack.upload(csv_text([(1, "Big", [big])], image_server)).json()["request_id"]
        service = stack.serving_pid()  # the pool belongs to the process that runs the workers
        wait_until(
            lambda: any(cpu_ticks(w) > 20 for w in pool_workers(service)),
            60,
            message="a compression child to be busy",
        )  # 0.2 s of CPU: mid-image
        victims = pool_workers(service)
        for pid in victims:
            os.kill(pid, 9)
        doc = stack.wait_finished(request_id, timeout=120)
        image = doc["items"][0]["images"][0]
        assert (doc["state"], image["state"], image["attempts"]) == ("completed", "done", 2), image
        assert stack.session.get(stack.base_url + "/healthz").ok
        assert not set(pool_workers(service)) & set(victims)


def _warm(processes: int) -> set[int]:
    """The pids of the pool of that size, every child started (slots are handed out in turn)."""
    children = {codec_processes.run(os.getpid, processes=processes) for _ in range(processes)}
    assert len(children) == processes
    return children


@pytest.fixture()
def no_stall_backstop(monkeypatch):
    """The budget alone ends a costly image. A child that has held its image for ten budgets of wall
    time without using one of CPU is stopped as stalled: on a busy machine that gives it less than a
    tenth of a core, that backstop came first. It has a test of its own (..._stopped_as_stalled)."""
    monkeypatch.setattr(codec_processes, "_STALL_BUDGETS", 10_000)


def _fail(*args, **kwargs) -> ImageFailure:
    with pytest.raises(ImageFailure) as caught:
        codec_processes.run(*args, **kwargs)
    return caught.value


class Gate:
    """A job for a compression child that holds its slot without using CPU until the test lets it
    go: it reads a FIFO to its end. The test knows the job is running, not merely submitted, once
    it can open the FIFO for writing (Linux refuses that, ENXIO, while nobody reads it)."""

    DATA = b"let through"

    def __init__(self, directory: Path) -> None:
        self.path = directory / "gate"
        os.mkfifo(self.path)
        self.job = self.path.read_bytes  # a bound method of a Path: it pickles
        self._writer: int | None = None

    def _reader_arrived(self) -> bool:
        try:
            self._writer = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return False
            raise
        return True

    def wait_running(self, timeout: float = 10) -> None:
        wait_until(self._reader_arrived, timeout, interval=0.01, message="the gated job to run in its child")

    def release(self) -> None:
        """The job returns DATA (harmless when it never started)."""
        if self._writer is not None:
            os.write(self._writer, self.DATA)
            os.close(self._writer)
            self._writer = None


class CpuPeaks:
    """The most CPU (clock ticks) each of ``pids`` was seen to have used, sampled every 10 ms until
    the block ends: a lower bound of what a child had used when it was killed."""

    def __init__(self, pids: set[int]) -> None:
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], cpu_ticks(pid))
            self._stop.wait(0.01)

    def __enter__(self) -> CpuPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_crash_fails_only_its_own_image_not_the_one_beside_it(tmp_path):
    _warm(2)
    gate = Gate(tmp_path)
    with ThreadPoolExecutor(1) as thread:
        # A job in the other child, running through the crash (its ten budgets of wall time, 10 s,
        # end it should the test fail before it lets it go).
        beside = thread.submit(codec_processes.run, gate.job, processes=2, cpu_seconds=1)
        try:
            gate.wait_running()
            assert _fail(os.abort, processes=2).code == "worker_crashed"
            assert not beside.done()  # the crash did not end the job beside it
        finally:
            gate.release()
        assert beside.result() == Gate.DATA


def test_an_image_over_its_cpu_budget_is_killed_alone_and_fails_too_costly(tmp_path, no_stall_backstop):
    """The budget counts the child's CPU, not wall time: the job beside it, which uses no CPU,
    outlives the budget and is left alone, while the costly image's child is killed once it has
    used 1 s."""
    bomb = scan_bomb()
    children = _warm(2)
    gate = Gate(tmp_path)
    with ThreadPoolExecutor(1) as thread:
        beside = thread.submit(codec_processes.run, gate.job, processes=2, cpu_seconds=1)
        try:
            gate.wait_running()
            started = time.monotonic()
            with CpuPeaks(children) as cpu:
                error = _fail(compress_to_ratio, bomb, processes=2, cpu_seconds=1, max_scans=NO_SCAN_LIMIT)
            elapsed = time.monotonic() - started
            after_kill = {pid: cpu_ticks(pid) for pid in pool_workers(os.getpid())}
            # An observation window, not a wait for anything: CPU a child spent after the kill would show.
            time.sleep(1)
            burnt = {pid: cpu_ticks(pid) - ticks for pid, ticks in after_kill.items()}
            assert not beside.done()  # more than its 1 s budget of wall time, and still running
        finally:
            gate.release()
        assert beside.result() == Gate.DATA
    assert (error.code, error.retryable) == ("too_costly", False)
    assert "more than 1 s of CPU time" in error.message
    assert elapsed >= 1, elapsed  # 1 s of CPU takes at least 1 s: the decoder is one thread
    [killed] = children - set(after_kill)  # its child, and only its child, is gone
    assert state(killed) in ("", "Z")
    # Killed at its budget (checked every 0.1 s), not long after: at most twice the budget was seen.
    assert cpu.peak[killed] <= 2 * 100, cpu.peak
    assert all(ticks <= 5 for ticks in burnt.values()), burnt  # no child spent CPU after the kill
    data = save(photo((400, 300)), "JPEG", quality=90)
    assert len(codec_processes.run(compress_to_ratio, data, processes=2, cpu_seconds=1).data) <= len(data) // 2


def test_costly_images_holding_every_slot_delay_a_healthy_image_without_failing_it(no_stall_backstop):
    """The incident: two costly images held both slots and a healthy one waited until its lease
    expired. Now the costly ones end at their budget; the healthy one waits, renewing its lease
    through the heartbeat, then completes."""
    bomb = scan_bomb()
    children = _warm(2)
    ticks = {pid: cpu_ticks(pid) for pid in children}
    healthy = save(photo((1600, 1000)), "JPEG", quality=90)
    beats: list[float] = []
    with ThreadPoolExecutor(3) as threads:
        bombs = [
            threads.submit(_fail, compress_to_ratio, bomb, processes=2, cpu_seconds=1.5, max_scans=NO_SCAN_LIMIT)
            for _ in range(2)
        ]
        wait_until(
            lambda: all(cpu_ticks(pid) - ticks[pid] > 20 for pid in children),
            10,
            message="both children to be decoding a costly image",
        )
        # Stopped, the costly images hold both slots without using CPU (their budget is CPU time):
        # the healthy image waits for as long as the test needs to see it renew its lease.
        for pid in children:
            os.kill(pid, signal.SIGSTOP)
        try:
            waiting = threads.submit(
                codec_processes.run,
                compress_to_ratio,
                healthy,
                processes=2,
                cpu_seconds=30,
                heartbeat=lambda: beats.append(time.monotonic()),
                heartbeat_seconds=0.2,
            )
            wait_until(lambda: len(beats) >= 3, 10, message="the waiting image to renew its lease three times")
            assert not waiting.done() and not any(b.done() for b in bombs)  # it renewed while it waited
        finally:
            for pid in children:
                os.kill(pid, signal.SIGCONT)
        result = waiting.result()
        assert [b.result().code for b in bombs] == ["too_costly", "too_costly"]
    assert len(result.data) <= len(healthy) // 2
    assert all(state(pid) in ("", "Z") for pid in children)  # the costly images' children are gone
    # The child that answered finishes its reply (and frees the image) a moment after: no child
    # keeps working.
    wait_until(
        lambda: all(state(pid) == "S" for pid in pool_workers(os.getpid())),
        10,
        message="every compression child to be idle",
    )


def test_a_child_that_holds_an_image_without_using_cpu_is_stopped_as_stalled():
    """Ten budgets of wall time is the backstop for a child that is blocked or starved of CPU."""
    started = time.monotonic()
    error = _fail(time.sleep, 30, processes=1, cpu_seconds=0.1)
    took = time.monotonic() - started
    assert (error.code, error.retryable) == ("worker_stalled", True)
    # Not before its ten budgets (1 s), and long before the sleep would have ended (30 s).
    assert 1 <= took < 15, took


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
    # Children at the machine's priority: niced (the default, 10) beside un-niced work on a busy
    # machine, a child gets a tenth of a core or less, so ten budgets of wall time pass before one
    # budget of CPU and the backstop stops it as worker_stalled (retried) before it is too_costly.
    # What is under test is the budget, not the priority.
    env = {"PIXSHIFT_CPU_SLOTS": "2", "PIXSHIFT_IMAGE_CPU_SECONDS": "1", "PIXSHIFT_WORKER_NICE": "0"}
    with ImageServer(tmp_path / "served") as bombs, Stack(tmp_path, env, separate_consumer=False, workers=4) as stack:
        urls = [bombs.url("bomb.jpg"), *image_server.urls(costly), *image_server.urls(["photo1.jpg", "photo2.jpg"])]
        request_id = stack.upload(csv_text([(1, "Mixed", urls)])).json()["request_id"]
        doc = stack.wait_finished(request_id, timeout=60)
        images = doc["items"][0]["images"]
        codes = [(i["state"], (i.get("error") or {}).get("code"), i["attempts"]) for i in images]
        assert codes == [("failed", "too_costly", 1)] * 3 + [("done", None, 1)] * 2, images
        service = stack.serving_pid()  # the pool belongs to the process that runs the workers
        wait_until(
            lambda: forkservers(service) and all(state(pid) == "S" for pid in pool_workers(service)),
            10,
            message="every compression child to be idle",
        )  # the incident's burnt on for minutes
