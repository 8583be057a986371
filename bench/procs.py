"""What processes cost, read from /proc (psutil is not a dependency): CPU seconds and memory."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return found


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += children(p)
        except FileNotFoundError:
            pass
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (children they waited for excluded)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _TICK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine, for a utilisation between two reads."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def utilisation(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Fraction of all cores busy between two machine_busy() reads."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total if total else 0.0


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs), so a peak can be taken per step."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def named(names: tuple[str, ...]) -> list[int]:
    """Processes whose command name is one of ``names`` (e.g. the PostgreSQL and Redis servers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def background_load(seconds: float = 1.0) -> float:
    """Cores busy while this process sleeps: other people's work on a shared machine."""
    import time

    before = machine_busy()
    time.sleep(seconds)
    return utilisation(before, machine_busy()) * (os.cpu_count() or 1)


def background_while(before: tuple[float, float], own_cpu_s: float, seconds: float) -> float:
    """Cores busy with other work since ``before`` (a machine_busy() read ``seconds`` ago), less
    ``own_cpu_s`` of this process's CPU meanwhile: background_load's figure without its wait."""
    busy = utilisation(before, machine_busy()) * (os.cpu_count() or 1)
    return max(0.0, busy - own_cpu_s / seconds) if seconds > 0 else busy
