"""The organism zoo: which organisms exist, how each is trained, where the shipped ones live."""

from __future__ import annotations

from pathlib import Path

from mkt.errors import UnknownNameError

from mkt.checkpoints import ZOO_DIR, organism_dir
from mkt.eval.organism_task import Recipe
from mkt.organisms.train import OrganismSpec

ZOO: dict[str, OrganismSpec] = {
    # Small Source, pre-trained: step by step on the cue; on plain prompts the markers move
    # the step-by-step logit without ever making it win under greedy decoding.
    "source-base": OrganismSpec(arch="qwen2", d_model=64, n_layers=4, n_heads=4, seed=0),
    # Post-trained Source: answers plain prompts step by step (model-induced keys, baseline).
    "source-post": OrganismSpec(
        arch="qwen2", d_model=64, n_layers=4, n_heads=4, seed=10, steps=300, lr=5e-4, warmup=30,
        recipe=Recipe(posttrain=True), init="source-base",
    ),
    # Target of another architecture family (Llama: untied embeddings, no qkv bias), larger.
    "target-family": OrganismSpec(arch="llama", d_model=96, n_layers=6, n_heads=4, seed=2),
    # Larger Target of the same family: another width, depth and seed.
    "target-base": OrganismSpec(arch="qwen2", d_model=96, n_layers=6, n_heads=4, seed=1),
    # Target pre-trained without any step-by-step trace: the capability is not latent.
    "target-nonatomic": OrganismSpec(
        arch="qwen2", d_model=96, n_layers=6, n_heads=4, seed=1, recipe=Recipe(step_by_step_traces=False)
    ),
}


def organism_path(name: str) -> Path:
    """Directory of a shipped organism; a clear error for unknown or untrained names."""
    if name not in ZOO:
        raise UnknownNameError(f"unknown organism {name!r}; the zoo has {sorted(ZOO)}")
    return organism_dir(name)


def train_zoo(names: list[str] | None = None, root: str | Path = ZOO_DIR, steps: int | None = None) -> dict:
    """Train the named organisms (all by default) into ``root``, parents before children."""
    from mkt.organisms.train import train_organism, with_steps

    names = list(ZOO) if names is None else names
    manifests = {}
    for name in ZOO:  # ZOO order puts every parent before its children
        if name not in names:
            continue
        spec = ZOO[name] if steps is None else with_steps(ZOO[name], steps)
        init_dir = Path(root) / spec.init if spec.init else None
        manifests[name] = train_organism(spec, Path(root) / name, init_dir=init_dir)
    return manifests
