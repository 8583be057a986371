"""Decoding and encoding in child processes, so one hostile image cannot take the service down.

A codec library that crashes on crafted input (a segfault) or a child the kernel kills (out of
memory) ends one child, not the worker or, on the embedded default, the web server that shares its
process: the images that child held fail with a retryable ``worker_crashed`` and the pool is
rebuilt. The children also take the quality search's Python work off the GIL that the embedded
default's web threads share with its worker threads, and run niced like the worker threads.
Children start from a fork server (Python's ``forkserver``), which imports the main module as
``__mp_main__``: entry points keep their work under ``if __name__ == "__main__"``.

One pool per process, started on first use; its size is the number of images decoded and encoded
at once (``PIXSHIFT_CPU_SLOTS``); further calls wait their turn in its queue.
"""
from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from .errors import ImageFailure

T = TypeVar("T")

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size: int | None = None


def run(fn: Callable[..., T], /, *args, processes: int, **kwargs) -> T:
    """``fn(*args, **kwargs)`` in a child process; its exceptions are raised here as they are.

    ``fn`` and its arguments must pickle (a module-level function, bytes, numbers). Children run
    at the CPU priority of the thread that first calls this (a worker thread: niced)."""
    pool = _get_pool(processes)
    try:
        return pool.submit(fn, *args, **kwargs).result()
    except BrokenProcessPool as e:
        _discard(pool)
        raise ImageFailure(
            "worker_crashed",
            "the process decoding or encoding this image stopped abruptly (a codec fault or out of memory)",
            retryable=True,
        ) from e


def _get_pool(processes: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != processes:
            if _pool is not None:
                _pool.shutdown(wait=False)
            # forkserver: children start from a clean process, not a copy of one with threads and
            # open database connections; PIL is imported once in the server, not in every child.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["pixshift.compress"])
            _pool = ProcessPoolExecutor(max(1, processes), mp_context=context, initializer=_start_child,
                                        initargs=(os.getpid(),))
            _pool_size = processes
        return _pool


def _discard(broken: ProcessPoolExecutor) -> None:
    """Forget a broken pool (once, however many threads saw it break); the next call starts anew."""
    global _pool
    with _lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False, cancel_futures=True)


def _start_child(service: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when children end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A service killed without cleanup (SIGKILL, or SIGTERM's default action) leaves its children
    # waiting on their queue for ever, and they keep the fork server alive: exit when it does.
    try:
        service_exited = os.pidfd_open(service)
    except ProcessLookupError:  # it died while this child was starting
        os._exit(0)
    except (AttributeError, OSError):  # not Linux 5.3+
        return
    threading.Thread(target=_exit_when_readable, args=(service_exited,), daemon=True).start()


def _exit_when_readable(fd: int) -> None:
    select.select([fd], [], [])
    os._exit(0)
