"""The organisms' transfer protocol, and the organism key every analysis of an organism starts from.

The demo and the analyses run the same protocol (rank ``RANK``, ``FIT`` least squares,
zero-centred, Locked prompts only, seed ``DEMO_SEED``), so they read it from here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load, save

from mkt.artifacts import check_tensor, read_bytes, replace_atomically
from mkt.checkpoints import ORGANISM_PREFIX, cache_root
from mkt.eval.organism_task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, problems
from mkt.extract import extract_prompt_key
from mkt.key import MasterKey
from mkt.models import HOOK_POINTS, load_model, model_identity
from mkt.organisms.zoo import organism_path
from mkt.pipeline import run_transfer

RANK = 32
FIT = "lstsq"  # the paper's least squares
DEMO_SEED = 1  # dev and test prompts; seed 0 was looked at while the demo was designed


def _zoo_hash(*names: str) -> str:
    """sha256 over the named organisms' weight and config files (what the key is computed from)."""

    h = hashlib.sha256()
    for name in names:
        path = organism_path(name.removeprefix(ORGANISM_PREFIX))
        for f in sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".json", ".bin")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cached_organism_key(target, target_name: str, cache_dir: str | Path | None = None) -> MasterKey:
    """``organism_key``, cached on disk: ``<cache_dir>/<target>-<seed>-<zoo hash>.safetensors``.

    The key is deterministic given the zoo's weights and the demo's seed, so the file is named
    by both and validated on load (target, seed, hash, shape); a file that does not match is
    recomputed and overwritten. Default cache dir: ``$MKT_CACHE`` or ``~/.cache/mkt``, then
    ``organism-keys``.
    """
    root = Path(cache_dir) if cache_dir else cache_root() / "organism-keys"
    digest = _zoo_hash("source-base", target_name)
    meta = {"target": target_name, "seed": str(DEMO_SEED), "zoo_hash": digest}
    path = root / f"{target_name.removeprefix(ORGANISM_PREFIX)}-{DEMO_SEED}-{digest}.safetensors"
    identity = model_identity(target)
    if path.is_file():
        try:  # the same checks as any key: a file that fails them is recomputed, never used
            data = read_bytes(path, "a cached key", "")
            stored = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]).get("__metadata__", {})
            provenance = json.loads(stored["provenance"])
            if all(stored.get(k) == v for k, v in meta.items()) and stored["hook"] in HOOK_POINTS and isinstance(
                    provenance, dict):
                directions = check_tensor(load(data).get("directions"), "directions",
                                          (identity.n_layers, identity.width(stored["hook"])), str(path), "")
                return MasterKey(directions, identity, stored["hook"], provenance)
        except (SafetensorError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass  # corrupt, truncated or another model's: recomputed below
    key = organism_key(target, target_name)
    root.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, save({"directions": key.directions.contiguous()}, metadata={
        **meta, "hook": key.hook, "provenance": json.dumps(key.provenance, default=str)}))
    return key


def organism_key(target, target_name: str) -> MasterKey:
    """The organism Source's prompt key, transferred into ``target`` exactly as the demo does.

    The paper's protocol: a rank-32 least-squares map fitted on Locked prompts only,
    zero-centred, never on the Target's Unlocked states; the demo's seed. Into
    ``source-base`` itself, the Source's own key. On the organisms this key cannot be told
    from its controls (docs/organisms.md): analyses of it describe what the key does, not
    that the transfer is real.
    """
    source = load_model("organism:source-base", device="cpu")
    if target_name == "organism:source-base":
        return extract_prompt_key(source, [p.question for p in problems(256, "train", 1)], LOCKED_TEMPLATE,
                                  UNLOCKED_TEMPLATE)
    report = run_transfer(source, target, [p.question for p in problems(256, "train", 1)],
                          [p.question for p in problems(320, "train", 2)], LOCKED_TEMPLATE, UNLOCKED_TEMPLATE,
                          k=RANK, method=FIT, center=True, alignment_set="locked", heldout_fraction=0.2,
                          seed=DEMO_SEED)
    return report.target_key
