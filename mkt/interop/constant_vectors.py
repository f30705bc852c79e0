"""Which packs other tools can run exactly: the ones that add one fixed vector per layer at every token.

llama.cpp control vectors and lm-evaluation-harness's ``steered`` model both add a fixed vector
to a block's output at every position. That is mkt's mode ``constant`` (``h + alpha * v``) at
``hook_resid_post`` with scope ``all``; nothing else is exact. The paper's ``norm-preserving``
rotation and the ``additive`` push (``alpha * ||h|| * u``) depend on the state they change, and
any other scope steers positions these tools cannot single out.
"""

from __future__ import annotations

import numpy as np

from mkt.errors import MktError
from mkt.models import RESID_HOOK
from mkt.pack import CapabilityPack

EXACT_MODE, EXACT_SCOPE = "constant", "all"


def constant_vectors(pack: CapabilityPack, tool: str) -> dict[int, np.ndarray]:
    """What ``tool`` must add to each block's output to steer exactly as ``pack`` does.

    Returns:
        block index -> ``alpha * v`` (float32 ``[d_model]``), for the pack's steered layers.

    Raises:
        MktError: naming why ``pack`` is not exactly a fixed vector per layer (mode, scope, hook).
    """
    if pack.mode != EXACT_MODE:
        why = ("rotates each state toward the key keeping its norm, so what it adds depends on the state"
               if pack.mode == "norm-preserving" else "adds alpha x ||h|| x v, so what it adds depends on each "
               "token's norm")
        raise MktError(f"this pack's mode {pack.mode!r} {why}; {tool} adds the same vector at every token, which is "
                       f"mode {EXACT_MODE!r} only: re-save the key as CapabilityPack(key, alpha, mode='{EXACT_MODE}', "
                       f"scope='{EXACT_SCOPE}') and check its effect with `mkt eval` before exporting")
    if pack.scope != EXACT_SCOPE:
        raise MktError(f"this pack steers scope {pack.scope!r}, but {tool} adds its vector at every token (scope "
                       f"{EXACT_SCOPE!r}): re-save it with scope='{EXACT_SCOPE}' and check its effect with `mkt eval` "
                       "before exporting")
    if pack.key.hook != RESID_HOOK:
        raise MktError(f"this pack steers at {pack.key.hook}, but {tool} adds its vectors to each block's output "
                       f"({RESID_HOOK}) only")
    layers = pack.layers if pack.layers is not None else list(range(pack.key.n_layers))
    vectors = (float(pack.alpha) * pack.key.directions.double()).float()
    return {layer: vectors[layer].numpy() for layer in layers}
