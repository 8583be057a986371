"""Content-addressed media store: bytes are kept once under their SHA-256, whoever stores them.

Keys are the hex digest, so a retried task that stores the same bytes again changes nothing,
and two requests that share an image share its file. The default store is a directory
(a shared volume when workers run on several machines).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DirectoryStore:
    """Files under ``root/ab/cd/<sha256>``; two directory levels keep directories small."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(f"not a content key: {key!r}")
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its key; atomic, so readers never see half a file."""
        key = content_key(data)
        target = self.path(key)
        if target.exists():
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def check(self) -> None:
        """Raise if the store cannot be written (used by readiness checks)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".ready-"):
            pass

