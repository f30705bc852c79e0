"""mkt's on-disk cache: where fetched and converted checkpoints live, and how they are written.

Everything under the cache is written to a temporary name and renamed into place only when
whole, under a per-entry lock, so an interrupted or concurrent fetch never leaves a half file
that a later run takes for whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 22  # 4 MiB: large reads keep hashing near disk speed


def cache_root() -> Path:
    """The cache directory: ``$MKT_CACHE``, else ``$XDG_CACHE_HOME/mkt``, else ``~/.cache/mkt``."""
    if os.environ.get("MKT_CACHE"):
        return Path(os.environ["MKT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mkt"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def entry_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on cache entry ``path`` (a sibling ``.lock`` file) for the block.

    A second process that wants the same entry waits here, then finds it finished.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def partial_path(path: Path) -> Path:
    """A temporary sibling of ``path`` unique to this process (renamed into place when whole)."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")
