"""What /proc says about a service's processes: its compression children (the children of its
``forkserver``), a process's state letter and the CPU it has used. A process that has just ended
reads as gone, never as an error."""

from __future__ import annotations

from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:  # the thread or process has just ended
        return ""


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (started by any of its threads)."""
    tasks = Path(f"/proc/{pid}/task")
    try:
        threads = list(tasks.iterdir())
    except OSError:
        return []
    return [int(c) for t in threads for c in _read(f"{t}/children").split()]


def forkservers(service: int) -> list[int]:
    """The multiprocessing fork servers started by ``service``: where its compression children come from."""
    return [c for c in children(service) if "forkserver" in _read(f"/proc/{c}/cmdline")]


def pool_workers(service: int) -> list[int]:
    """The compression children of a service: its fork server's children."""
    return [w for s in forkservers(service) for w in children(s)]


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name, from the state on; [] once it is gone."""
    text = _read(f"/proc/{pid}/stat")
    return text.rsplit(")", 1)[1].split() if ")" in text else []


def state(pid: int) -> str:
    """A process's state letter (R running, S sleeping, T stopped, Z zombie), or "" once it is gone."""
    fields = _stat(pid)
    return fields[0] if fields else ""


def gone(pid: int) -> bool:
    """Exited (or a zombie its parent has not reaped yet)."""
    return state(pid) in ("", "Z")


def cpu_ticks(pid: int) -> int:
    """The CPU time the process has used (user and system, all its threads) in clock ticks (1/100 s
    here, ``os.sysconf("SC_CLK_TCK")``); 0 once it is gone."""
    fields = _stat(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def listening_ports(pid: int) -> set[int]:
    """The TCP ports (IPv4 and IPv6) that the process itself listens on: its sockets, found in
    /proc/net/tcp by inode; not a port that some other process answers on."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # gone
        return set()
    for fd in fds:
        try:
            target = str(fd.readlink())
        except OSError:  # closed meanwhile (the listing's own descriptor, for one)
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in _read(f"/proc/{pid}/net/{table}").splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
