"""Compression runs in child processes: a crashing codec ends a child, not the service."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from livestack import wait_until

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
    wait_until(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2],
               10, message=f"compression child {child} to exit")
