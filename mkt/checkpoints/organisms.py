"""Where the shipped model organisms live: ``organism:NAME`` resolved without importing their package."""

from __future__ import annotations

from pathlib import Path

from mkt.errors import UnknownNameError

ORGANISM_PREFIX = "organism:"
ZOO_DIR = Path(__file__).parents[1] / "organisms" / "zoo"  # the shipped organisms' weights (package data)


def organism_dir(name: str) -> Path:
    """Directory of the shipped organism ``name``; a clear error for an unknown or untrained one."""
    path = ZOO_DIR / name
    if not path.is_dir():
        shipped = sorted(p.name for p in ZOO_DIR.iterdir() if p.is_dir())
        raise UnknownNameError(f"unknown organism {name!r}; the zoo has {shipped}")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"organism {name!r} is not trained at {path}; run `mkt organisms train --only {name}`")
    return path
