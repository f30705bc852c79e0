"""Null keys: what a transferred key must beat before anyone believes it.

Each function returns keys in the Target's space that share everything with the transferred
key except the one thing under test, so that "the key worked" can be told apart from "any
direction pushed the same way would have worked":

- ``subspace_matched_null``: random *Source* directions with the key's per-layer norms,
  pushed through the very same alignment. They live in the same top-k subspace and get the
  same map, so they reproduce whatever the map alone does to any vector (the failure of the
  first organisms, where a Locked-only map sent every direction toward one nuisance axis).
- ``isotropic_null``: random *Target* directions with the transferred key's norms (the
  weakest control: it only rules out "any push at all").
- a nuisance contrast (``mkt.extract.extract_contrast_key`` on the Source, then
  ``mkt.transfer``): a direction known to be beside the point, e.g. long minus short
  questions.

Pure tensor math over keys and alignments, no model I/O.
"""

from __future__ import annotations

from dataclasses import replace

from mkt.alignment import SubspaceAlignment, transfer
from mkt.key import MasterKey, random_like


def subspace_matched_null(source_key: MasterKey, alignment: SubspaceAlignment, n: int = 20,
                          seed: int = 0) -> list[MasterKey]:
    """``n`` random Source keys with the key's per-layer norms, transferred by ``alignment``."""
    if n < 1:
        raise ValueError(f"a null needs at least one draw, got n={n}")
    return [
        transfer(replace(random_like(source_key, seed + i), provenance=dict(null="subspace-matched", seed=seed + i)),
                 alignment)
        for i in range(n)
    ]


def isotropic_null(target_key: MasterKey, n: int = 5, seed: int = 0) -> list[MasterKey]:
    """``n`` random Target keys with the transferred key's per-layer norms."""
    if n < 1:
        raise ValueError(f"a null needs at least one draw, got n={n}")
    return [replace(random_like(target_key, seed + i), provenance=dict(null="isotropic", seed=seed + i))
            for i in range(n)]
