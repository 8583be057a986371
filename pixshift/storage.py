"""Content-addressed media store: bytes are kept once under their SHA-256, whoever stores them.

Keys are the hex digest, so a retried task that stores the same bytes again changes nothing,
and two requests that share an image share its object. Two stores, one interface: a directory
(the default; a shared volume when workers run on several machines) and S3 or any S3-compatible
server (``PIXSHIFT_MEDIA_URL=s3://bucket/prefix``), so workers on many machines share media
without a shared file system. A store that cannot be reached raises a retryable ImageFailure.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from .failures import ImageFailure

CHUNK = 256 * 1024


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_key(key: str) -> str:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"not a content key: {key!r}")
    return key


def _unavailable(exc: Exception) -> ImageFailure:
    return ImageFailure(
        "storage_unavailable", f"the media store could not be reached: {type(exc).__name__}", retryable=True
    )


@dataclass(frozen=True)
class Blob:
    """A stored object, read lazily: ``chunks`` streams (a byte range of) it."""

    size: int
    chunks: Iterator[bytes]


class MediaStore(Protocol):
    def put(self, data: bytes, content_type: str, key: str | None = None) -> str: ...

    def get(self, key: str, start: int = 0, end: int | None = None) -> Blob: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None: ...

    def check(self) -> None: ...

    def presigned_url(self, key: str, seconds: int, content_type: str) -> str | None: ...

    def public_path(self, key: str) -> str: ...


class DirectoryStore:
    """Files under ``root/ab/cd/<sha256>``; two directory levels keep directories small."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key[:2] / key[2:4] / key

    def public_path(self, key: str) -> str:
        return f"{key[:2]}/{key[2:4]}/{_check_key(key)}"

    def put(self, data: bytes, content_type: str = "application/octet-stream", key: str | None = None) -> str:
        """Store ``data`` and return its key; atomic, so readers never see half a file. ``key``: the
        bytes' SHA-256 when the caller has it already (an image's input is hashed once)."""
        key = key or content_key(data)
        target = self.path(key)
        if target.exists():
            return key
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise _unavailable(exc) from exc
        return key

    def get(self, key: str, start: int = 0, end: int | None = None) -> Blob:
        path = self.path(key)
        size = path.stat().st_size
        stop = size if end is None else min(end, size)

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as f:
                f.seek(start)
                left = stop - start
                while left > 0 and (chunk := f.read(min(CHUNK, left))):
                    left -= len(chunk)
                    yield chunk

        return Blob(size, chunks())

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def check(self) -> None:
        """Raise if the store cannot be written (readiness)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-"):
            pass

    def presigned_url(self, key: str, seconds: int, content_type: str) -> str | None:
        return None  # a directory has no URLs of its own; PixShift serves it


class S3Store:
    """Objects ``<prefix>ab/<sha256>`` in one bucket, through boto3 (credentials and, unless given,
    the endpoint come from the usual AWS environment variables)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self._bucket_ready = False
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=BotoConfig(
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=32,
            ),
        )

    def public_path(self, key: str) -> str:
        return f"{self.prefix}{_check_key(key)[:2]}/{key}"

    def put(self, data: bytes, content_type: str = "application/octet-stream", key: str | None = None) -> str:
        """One PUT from the bytes in memory (no temporary copies); the same bytes make the same
        object, so a repeated PUT is harmless. Multipart is not needed: images are capped far
        below S3's 5 GB single-PUT limit (``PIXSHIFT_MAX_IMAGE_BYTES``). ``key``: as for
        DirectoryStore.put."""
        key = key or content_key(data)
        try:
            if not self._bucket_ready:
                self.check()  # once per process: create the bucket if it is not there yet
                self._bucket_ready = True
            self._put(key, data, content_type)
        except self._errors() as exc:
            raise _unavailable(exc) from exc
        return key

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.public_path(key),
            Body=data,
            ContentType=content_type,
            CacheControl="public, max-age=31536000, immutable",
        )

    def get(self, key: str, start: int = 0, end: int | None = None) -> Blob:
        params = {"Bucket": self.bucket, "Key": self.public_path(key)}
        if start or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = self.client.get_object(**params)
        except self._errors() as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from exc
            raise
        content_range = response.get("ContentRange")  # "bytes 0-9/1234" when a range was asked
        size = int(content_range.rsplit("/", 1)[1]) if content_range else response["ContentLength"]
        return Blob(size, response["Body"].iter_chunks(CHUNK))

    def size(self, key: str) -> int:
        try:
            size: int = self.client.head_object(Bucket=self.bucket, Key=self.public_path(key))["ContentLength"]
            return size
        except self._errors() as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(key) from exc
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.public_path(key))

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._errors() as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            self._create_bucket()

    def presigned_url(self, key: str, seconds: int, content_type: str) -> str | None:
        url: str = self.client.generate_presigned_url(
            "get_object",
            ExpiresIn=seconds,
            Params={"Bucket": self.bucket, "Key": self.public_path(key), "ResponseContentType": content_type},
        )
        return url

    def _create_bucket(self) -> None:
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except self._errors() as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise _unavailable(exc) from exc

    @staticmethod
    def _errors() -> tuple[type[Exception], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def make_store(media_url: str | None, media_root: Path, endpoint_url: str | None = None) -> MediaStore:
    """``s3://bucket/prefix`` for object storage; otherwise the directory ``media_root``."""
    if media_url:
        parts = urlsplit(media_url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"PIXSHIFT_MEDIA_URL must look like s3://bucket/prefix, not {media_url!r}")
        return S3Store(parts.netloc, parts.path, endpoint_url)
    return DirectoryStore(media_root)
