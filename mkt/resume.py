"""Resumable run directories: one writer at a time, append-only files that survive a kill.

A run directory is owned by one process at a time (``run_lock``; a lock left by a dead process
is taken over). Results are appended line by line as they finish, so a kill loses at most the
work in flight; ``resumable_lines`` reads them back, dropping a line cut by the kill or a
malformed one by name, so that its work is done again. ``write_config`` records what decides a
run's results and refuses to resume a run whose configuration changed; ``content_digest`` hashes
such a configuration (or any content a result depends on).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from mkt.artifacts import read_json_object, replace_atomically

LOCK = "run.lock"
T = TypeVar("T")


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Own ``out`` for the duration: a second writer gets a clear error; a dead owner's lock is taken over."""
    path = out / LOCK
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                owner = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and _alive(owner):
                raise ValueError(f"{out} is being written by another mkt run (pid {owner}): wait for it to "
                                 "finish or choose another output directory") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def complete_lines(path: Path) -> list[bytes]:
    """The non-blank lines of an append-only file, up to its last newline.

    A line cut by a kill is dropped by an atomic rewrite of the file without it, so finished
    rows are never at risk and the next append starts on a fresh line.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if complete != data:
        replace_atomically(path, complete)
    return [line for line in complete.split(b"\n") if line.strip()]


def resumable_lines(path: Path, parse: Callable[[str], T | None], what: str) -> list[T]:
    """The lines of a resumable file, each parsed by ``parse`` (None for a malformed line).

    Malformed lines (bad UTF-8, bad JSON, missing or mistyped fields) are dropped: a warning names
    them and the file is rewritten atomically without them, so their ``what`` are run again.
    """
    lines = complete_lines(path)
    values = []
    for line in lines:
        try:
            values.append(parse(line.decode("utf-8")))
        except (UnicodeDecodeError, ValueError, RecursionError):
            values.append(None)
    bad = [i for i, v in enumerate(values, 1) if v is None]
    if bad:
        warnings.warn(f"{path}: dropped {len(bad)} malformed line(s) (line {', '.join(map(str, bad[:10]))}"
                      f"{' ...' if len(bad) > 10 else ''}); those {what} are run again", stacklevel=2)
        replace_atomically(path, b"".join(line + b"\n" for line, v in zip(lines, values) if v is not None))
    return [v for v in values if v is not None]


def write_config(path: Path, config: dict, what: str = "run") -> None:
    """Write ``config`` (atomically) for a new run, or check that a resumed run has the same one."""
    config = json.loads(json.dumps(config, default=str))
    if path.exists():
        fix = f"delete {path.parent} to start the {what} over, or choose another output directory"
        previous = read_json_object(path, f"a {what} configuration", fix)
        if previous != config:
            changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
            raise ValueError(f"{path.parent} holds a {what} whose {', '.join(changed)} differ from this one (a "
                             f"resumed {what} must be the same {what}): choose a new output directory")
        return
    replace_atomically(path, json.dumps(config, indent=1))


def content_digest(*parts) -> str:
    """sha256 of ``parts`` (bytes as they are, anything else as sorted JSON): a run's identity."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()
