"""Where a thread is blocked, read from its Python stack: a test can then tell "every poller is
waiting for the render" from "the pollers have not arrived yet" without sleeping and hoping."""

from __future__ import annotations

import sys
import threading
from pathlib import Path


def waiting_in(thread: threading.Thread, where: Path) -> bool:
    """True while ``thread`` is blocked on something of the ``threading`` module (an Event, a
    Semaphore, a Condition, a Lock acquired through it) that code under ``where`` (a file or a
    folder) waits for: the frames on top are threading.py's and the first frame below them is in
    ``where``. A thread on its way there, or already past, or waiting elsewhere, is not."""
    frame = sys._current_frames().get(thread.ident)
    if frame is None or frame.f_code.co_filename != threading.__file__:
        return False
    while frame is not None and frame.f_code.co_filename == threading.__file__:
        frame = frame.f_back
    return frame is not None and Path(frame.f_code.co_filename).is_relative_to(where)
