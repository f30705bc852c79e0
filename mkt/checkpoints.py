"""What a model name points at: ``organism:NAME`` is a shipped organism's directory; any other name is passed on.

The one place a model spec is resolved, so the loaders (``mkt.models``, the vLLM engine) never
import the organisms package.
"""

from __future__ import annotations

import os
from pathlib import Path

ORGANISM_PREFIX = "organism:"
ZOO_DIR = Path(__file__).parent / "organisms" / "zoo"  # the shipped organisms' weights (package data)


def organism_dir(name: str) -> Path:
    """Directory of the shipped organism ``name``; a clear error for an unknown or untrained one."""
    path = ZOO_DIR / name
    if not path.is_dir():
        shipped = sorted(p.name for p in ZOO_DIR.iterdir() if p.is_dir())
        raise KeyError(f"unknown organism {name!r}; the zoo has {shipped}")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"organism {name!r} is not trained at {path}; run `mkt organisms train --only {name}`")
    return path


def resolve_model_path(spec: str | os.PathLike) -> str:
    """``spec`` as a loader takes it: an organism's directory for ``organism:NAME``, else ``spec`` itself."""
    spec = str(spec)
    return str(organism_dir(spec.removeprefix(ORGANISM_PREFIX))) if spec.startswith(ORGANISM_PREFIX) else spec
