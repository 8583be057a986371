"""Worker threads run niced (PIXSHIFT_WORKER_NICE) so request handling on the same machine, or in
the same process on the embedded default, gets the CPU first; the web server's threads do not."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from harness.livestack import Stack, wait_until


def thread_nices(pid: int) -> dict[int, int]:
    """tid -> nice of every thread of a process, from /proc (field 19 of stat)."""
    nices = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile (e.g. a request's thread)
            continue
        nices[int(task.name)] = int(stat.rsplit(")", 1)[1].split()[16])
    return nices


def test_embedded_worker_threads_are_niced_and_the_web_is_not(tmp_path):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with Stack(tmp_path, {}, separate_consumer=False, workers=4) as stack:
        pid = stack.serving_pid()  # gunicorn's worker: request threads and Huey's worker threads
        wait_until(
            lambda: Counter(thread_nices(pid).values())[base + 10] >= 4,
            10,
            message=f"4 worker threads at nice {base + 10}: {thread_nices(pid)}",
        )
        nices = thread_nices(pid)
        assert nices[pid] == base  # the main thread accepts connections for the request threads
        assert Counter(nices.values())[base + 10] == 4, nices


def test_consumer_workers_are_niced_and_a_web_only_process_is_untouched(tmp_path):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with Stack(tmp_path, {"PIXSHIFT_WORKER_NICE": "5"}, separate_consumer=True, workers=3) as stack:
        consumer = stack.processes["worker-1"].pid
        wait_until(
            lambda: Counter(thread_nices(consumer).values())[base + 5] == 3,
            15,
            message=f"3 worker threads at nice {base + 5}: {thread_nices(consumer)}\n{stack.logs()}",
        )
        assert thread_nices(consumer)[consumer] == base
        assert set(thread_nices(stack.serving_pid()).values()) == {base}
