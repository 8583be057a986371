"""Compression runs in child processes: a crashing codec ends a child, not the service."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from livestack import Stack, wait_until

from pixshift import codec_processes
from pixshift.compress import compress_to_ratio
from pixshift.errors import ImageFailure
from test_compress import photo, save


def test_work_runs_in_a_child_and_its_failures_come_back_whole():
    assert codec_processes.run(os.getpid, processes=1) != os.getpid()
    with pytest.raises(ImageFailure) as caught:
        codec_processes.run(compress_to_ratio, b"not an image", processes=1)
    assert (caught.value.code, caught.value.retryable) == ("not_an_image", False)


def test_a_crashing_child_fails_its_image_as_retryable_and_the_next_call_gets_a_new_pool():
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
        "from pixshift import codec_processes\n"
        "if __name__ == '__main__':\n"
        "    print(codec_processes.run(os.getpid, processes=2), flush=True)\n"
        "    sys.stdin.read()\n"
    )
    service = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[1])
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
    child = subprocess.run([sys.executable, "-c", "from pixshift.codec_processes import _start_child\n"
                            f"_start_child({dead.pid})\nimport time; time.sleep(30)"],
                           cwd=Path(__file__).resolve().parents[1], timeout=20)
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
        wait_until(lambda: any(_cpu_ticks(w) > 20 for w in _pool_workers(service)), 60,
                   message="a compression child to be busy")  # 0.2 s of CPU: mid-image
        victims = _pool_workers(service)
        for pid in victims:
            os.kill(pid, 9)
        doc = stack.wait_finished(request_id, timeout=120)
        image = doc["items"][0]["images"][0]
        assert (doc["state"], image["state"], image["attempts"]) == ("completed", "done", 2), image
        assert stack.session.get(stack.base_url + "/healthz").ok
        assert not set(_pool_workers(service)) & set(victims)
