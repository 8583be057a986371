"""Decoding and encoding in child processes, so one hostile image costs only itself.

A codec library that crashes on crafted input (a segfault) or a child the kernel kills (out of
memory) ends one child, not the worker or, on the embedded default, the web server that shares its
process: the image that child held fails with a retryable ``worker_crashed``. An image that needs
more CPU time than its budget (a crafted file that decodes for minutes) has its child killed
(SIGKILL) and fails with ``too_costly``, not retryable: it would cost the same again. The children
also take the quality search's Python work off the GIL that the embedded default's web threads
share with its worker threads, and run niced like the worker threads. Children start from a fork
server (Python's ``forkserver``), which imports the main module as ``__mp_main__``: entry points
keep their work under ``if __name__ == "__main__"``.

The pool is a small one of our own, not ``concurrent.futures``: killing one of its children breaks
the whole executor and fails every image in flight. Here each slot is one child with its own pipe,
holding one image at a time, so a kill or a crash ends that image only, and the slot starts a new
child for its next image. One pool per process (per size: a service uses one,
``PIXSHIFT_CPU_SLOTS``), started on first use; further calls wait for a free slot.

The budget is CPU time of the child, not wall time: waiting for a slot, or for a core on a busy
machine, costs an image nothing. The calling thread, which waits for the result anyway, reads the
child's CPU time from ``/proc/<pid>/stat`` every 0.1 s (without /proc, wall time stands in) and
kills the child once the image has used its budget. A child that holds an image for ten budgets of
wall time without using it (blocked, or starved of CPU) is killed too, as a retryable
``worker_stalled``, so no slot is held for ever.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import select
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TypeVar, cast

from pixshift.failures import ImageFailure

T = TypeVar("T")
# What crosses the pipe: (fn, args, kwargs) to the child, (True, result) or (False, exception) back.
_Job = tuple[Callable[..., object], tuple[object, ...], dict[str, object]]
_Reply = tuple[bool, object]
logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.1  # how often a busy child's CPU time is read: how far it can overrun its budget
_STALL_BUDGETS = 10  # wall time, in budgets, after which a child that has not used its budget is stalled
_TICKS = os.sysconf("SC_CLK_TCK")  # /proc's unit of CPU time

_lock = threading.Lock()
_pools: dict[int, _Pool] = {}


def run(
    fn: Callable[..., T],
    /,
    *args: object,
    processes: int,
    cpu_seconds: float | None = None,
    heartbeat: Callable[[], object] | None = None,
    heartbeat_seconds: float = 60.0,
    **kwargs: object,
) -> T:
    """``fn(*args, **kwargs)`` in a child process; its exceptions are raised here as they are.

    ``fn`` and its arguments must pickle (a module-level function, bytes, numbers). The child may
    spend ``cpu_seconds`` of CPU time on it (None or 0: no limit); beyond, it is killed and
    ImageFailure ``too_costly`` raised. A child that dies raises ``worker_crashed``, one that holds
    the call for ten budgets of wall time ``worker_stalled`` (both retryable); either way only
    this call fails. ``heartbeat`` is called every ``heartbeat_seconds`` while
    this call waits for a slot or for the result (a worker renews its lease with it); what it
    raises is logged. Children run at the CPU priority of the thread that first calls this (a
    worker thread: niced)."""
    pool = _get_pool(processes)
    beat = _Heartbeat(heartbeat, heartbeat_seconds)
    slot = pool.take(beat)
    try:
        # The child returned what fn(*args, **kwargs) returns, unpickled: a T.
        return cast(T, slot.call((fn, args, kwargs), cpu_seconds or None, beat))
    finally:
        pool.give_back(slot)


def _get_pool(processes: int) -> _Pool:
    with _lock:
        pool = _pools.get(processes)
        if pool is None:
            pool = _pools[processes] = _Pool(max(1, processes))
        return pool


class _Heartbeat:
    """Calls ``fn`` from the waiting thread every ``every`` seconds; ``timeout`` caps each wait so
    that no call is late."""

    def __init__(self, fn: Callable[[], object] | None, every: float) -> None:
        self.fn, self.every = fn, every
        self.due = time.monotonic() + every

    def timeout(self, wanted: float | None) -> float | None:
        if self.fn is None:
            return wanted
        left = max(0.0, self.due - time.monotonic())
        return left if wanted is None else min(wanted, left)

    def __call__(self) -> None:
        if self.fn is None or time.monotonic() < self.due:
            return
        self.due = time.monotonic() + self.every
        try:
            self.fn()
        except Exception:  # a missed renewal costs at most the lease; the image goes on
            logger.warning("heartbeat while compressing failed", exc_info=True)


class _Pool:
    """Slots waiting to be taken, each a child and its pipe; a caller holds one for one call."""

    def __init__(self, size: int) -> None:
        self._idle: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        for _ in range(size):
            self._idle.put(_Slot())

    def take(self, beat: _Heartbeat) -> _Slot:
        while True:
            try:
                return self._idle.get(timeout=beat.timeout(None))
            except queue.Empty:
                beat()

    def give_back(self, slot: _Slot) -> None:
        self._idle.put(slot)


class _Slot:
    """One child process, started on first use and again after it is lost, and its pipe."""

    def __init__(self) -> None:
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None

    def call(self, job: _Job, cpu_seconds: float | None, beat: _Heartbeat) -> object:
        if self.process is None:
            self._start()
        try:
            ok, value = self._exchange(job, cpu_seconds, beat)
        except BaseException:
            self._end()  # dead, over budget, or it would answer the next caller with this job's result
            raise
        if ok:
            return value
        raise cast(BaseException, value)  # _answer replies (False, the exception fn raised)

    def _exchange(self, job: _Job, cpu_seconds: float | None, beat: _Heartbeat) -> _Reply:
        process, conn = self.process, self.conn
        assert process is not None and process.pid is not None and conn is not None  # call() started it
        pid = process.pid
        started, cpu_before = time.monotonic(), _cpu_time(pid)
        try:
            conn.send(job)
            while True:
                ready = wait([conn, process.sentinel], beat.timeout(_POLL_SECONDS if cpu_seconds else None))
                if conn in ready:
                    reply: _Reply = conn.recv()
                    return reply
                if ready:  # the child ended without answering
                    raise EOFError
                beat()
                if cpu_seconds is not None:
                    _check_budget(pid, cpu_before, started, cpu_seconds)
        except (EOFError, OSError) as e:
            raise ImageFailure(
                "worker_crashed",
                "the process decoding or encoding this image stopped abruptly (a codec fault or out of memory)",
                retryable=True,
            ) from e

    def _start(self) -> None:
        # forkserver: children start from a clean process, not a copy of one with threads and
        # open database connections; PIL is imported once in the server, not in every child.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["pixshift.imaging.compress"])
        conn, child_end = context.Pipe()
        # daemon: at interpreter exit multiprocessing terminates the children instead of joining them.
        process = context.Process(target=_serve, args=(child_end, os.getpid()), daemon=True)
        try:
            process.start()
        finally:
            child_end.close()  # the child's copy only: its death then reads as end of file here
        self.process, self.conn = process, conn

    def _end(self) -> None:
        """Kill the child if it still runs, and forget it: the next call starts a new one."""
        process, conn = self.process, self.conn
        assert process is not None and conn is not None  # only a started slot is ended
        self.process = self.conn = None
        conn.close()
        if process.exitcode is None:  # not reaped yet, so the pid is still this child's
            process.kill()
        process.join()
        process.close()


def _check_budget(pid: int, cpu_before: float | None, started: float, cpu_seconds: float) -> None:
    elapsed = time.monotonic() - started
    cpu_now = _cpu_time(pid)
    used = elapsed if cpu_now is None or cpu_before is None else cpu_now - cpu_before
    if used > cpu_seconds:
        raise ImageFailure(
            "too_costly",
            f"decoding and compressing this image needed more than {cpu_seconds:g} s of CPU time "
            "(PIXSHIFT_IMAGE_CPU_SECONDS); it was stopped",
        )
    if elapsed > _STALL_BUDGETS * cpu_seconds:
        raise ImageFailure(
            "worker_stalled",
            f"the process decoding or encoding this image used {used:.0f} s of CPU time in {elapsed:.0f} s "
            "(blocked, or the machine is overloaded); it was stopped",
            retryable=True,
        )


def _cpu_time(pid: int) -> float | None:
    """Seconds of CPU the process has used (all its threads, user and system); None without /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _serve(conn: Connection, service: int) -> None:
    """A child's life: answer the calls its slot sends, one at a time, until the pipe closes."""
    _start_child(service)
    while True:
        try:
            fn, args, kwargs = conn.recv()
        except EOFError:  # the service closed the slot, or ended
            return
        _answer(conn, fn, args, kwargs)
        del fn, args, kwargs  # an idle child keeps no image


def _answer(conn: Connection, fn: Callable[..., object], args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    try:
        reply = (True, fn(*args, **kwargs))
    except Exception as e:
        reply = (False, e)
    try:
        conn.send(reply)
    except Exception as e:  # the result or the exception does not pickle
        conn.send((False, RuntimeError(f"{fn.__name__} returned something that cannot be sent back: {e!r}")))


def _start_child(service: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the parent decides when children end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A service killed without cleanup (SIGKILL, or SIGTERM's default action) may leave a child in
    # the middle of an image, where it would not notice its pipe closing: exit when the service does.
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
