"""Capability packs: a Target-side MasterKey plus how to apply it, as a portable directory.

    pack/
      manifest.json           format version, source & target identity, layer map, k, n,
                              aggregator, mode, default alpha, hook, sha256 of the tensors
      directions.safetensors  tensor "directions", float32 [n_layers_target, width]: d_model, or
                              n_heads x d_head for a key at attn.hook_z
      README.md               generated: where the pack came from (mkt.pack_card), not read back
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mkt.errors import CorruptArtifactError, IncompatibleModelError
from mkt.intervention import MODES, check_mode
from mkt.key import MasterKey
from mkt.models import HOOK_POINTS, ModelIdentity, check_layers, model_identity
from mkt.pack_card import write_pack_card
from mkt.steering import SCOPES

PACK_FORMAT = "mkt.capability-pack"
PACK_VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "directions.safetensors"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


KNOWN_HOOKS = HOOK_POINTS  # where mkt reads and writes keys


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def _check_manifest(manifest, path: Path) -> ModelIdentity:
    """Validate a manifest's fields (types, ranges, known values); unknown extra fields are kept.

    Returns the Target identity. Raises ``CorruptArtifactError`` naming the first bad field.
    """
    def bad(field: str, why: str) -> CorruptArtifactError:
        return CorruptArtifactError(f"{path}: field {field!r} {why}; rebuild the pack with `mkt transfer` or fix it")

    if not isinstance(manifest, dict):
        raise CorruptArtifactError(f"{path} holds a JSON {type(manifest).__name__}, not a manifest object")
    for field in ("format", "format_version", "sha256", "target", "hook", "alpha", "mode", "scope"):
        if field not in manifest:
            raise bad(field, "is missing")
    if manifest["format"] != PACK_FORMAT:
        raise CorruptArtifactError(f"{path} is not an mkt capability pack manifest")
    if manifest["format_version"] != PACK_VERSION:
        raise CorruptArtifactError(
            f"pack format version {manifest['format_version']} is not {PACK_VERSION}: "
            "use the mkt version that wrote it or rebuild the pack"
        )
    target = manifest["target"]
    if not isinstance(target, dict):
        raise bad("target", "must be an object with name, architecture, n_layers, d_model, d_vocab")
    for field in ("name", "architecture"):
        if not isinstance(target.get(field), str):
            raise bad(f"target.{field}", "must be a string")
    for field in ("n_layers", "d_model", "d_vocab"):
        if not _is_count(target.get(field)):
            raise bad(f"target.{field}", f"must be a whole number >= 1, got {target.get(field)!r}")
    for field in ("n_heads", "d_head"):  # recorded since per-head keys; absent in older packs
        if target.get(field) is not None and not _is_count(target[field]):
            raise bad(f"target.{field}", f"must be null or a whole number >= 1, got {target[field]!r}")
    if manifest["hook"] not in KNOWN_HOOKS:
        raise bad("hook", f"is {manifest['hook']!r}, but mkt reads and writes keys at {KNOWN_HOOKS} only")
    if not _is_number(manifest["alpha"]):
        raise bad("alpha", f"must be a finite number, got {manifest['alpha']!r}")
    if manifest["mode"] not in MODES:
        raise bad("mode", f"must be one of {sorted(MODES)}, got {manifest['mode']!r}")
    if manifest["scope"] not in SCOPES:
        raise bad("scope", f"must be one of {SCOPES}, got {manifest['scope']!r}")
    layers = manifest.get("layers")
    if layers is not None and not (isinstance(layers, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                                                   and 0 <= x < target["n_layers"] for x in layers)):
        raise bad("layers", f"must be null or a list of layer indices in 0..{target['n_layers'] - 1}")
    if not isinstance(manifest.get("provenance", {}), dict):
        raise bad("provenance", "must be an object")
    if not isinstance(manifest.get("description", ""), str):
        raise bad("description", "must be a string")
    return ModelIdentity(**{f: target[f] for f in ("name", "architecture", "n_layers", "d_model", "d_vocab")},
                         n_heads=target.get("n_heads"), d_head=target.get("d_head"))


@dataclass
class CapabilityPack:
    """A key ready to apply: ``with pack.apply(model): ...``."""

    key: MasterKey
    alpha: float = 0.1
    mode: str = "norm-preserving"
    scope: str = "prompt-last"
    layers: list[int] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.layers is not None:
            self.layers = check_layers(self.layers, self.key.n_layers)
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}: use one of {SCOPES}")
        if not torch.isfinite(torch.tensor(float(self.alpha))):
            raise ValueError(f"alpha must be finite, got {self.alpha}")

    def manifest(self) -> dict:
        prov = self.key.provenance
        return dict(
            format=PACK_FORMAT, format_version=PACK_VERSION, description=self.description,
            source=prov.get("source_model", self.key.model.to_dict()), target=self.key.model.to_dict(),
            hook=self.key.hook, layer_map=prov.get("layer_map", list(range(self.key.n_layers))),
            k=prov.get("k"), n=prov.get("n"), aggregator=prov.get("aggregator"), variant=prov.get("variant"),
            alignment_method=prov.get("alignment_method", "identity"), mode=self.mode, alpha=float(self.alpha),
            scope=self.scope, layers=self.layers, provenance=prov,
        )

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensor_path = directory / TENSORS
        save_file({"directions": self.key.directions.float().contiguous()}, str(tensor_path))
        manifest = self.manifest() | {"sha256": _sha256(tensor_path)}
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
        write_pack_card(directory)  # README.md: where the pack came from, readable on the HF hub
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "CapabilityPack":
        """Read a pack, verifying its format, hash and shapes."""
        directory = Path(directory)
        manifest_path, tensor_path = directory / MANIFEST, directory / TENSORS
        for p in (manifest_path, tensor_path):
            if not p.exists():
                raise CorruptArtifactError(f"{directory} is not a capability pack: {p.name} is missing")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CorruptArtifactError(f"{manifest_path} is not valid JSON ({err}): rewrite the pack") from None
        target = _check_manifest(manifest, manifest_path)
        digest = _sha256(tensor_path)
        if digest != manifest.get("sha256"):
            raise CorruptArtifactError(
                f"{tensor_path} does not match the hash in its manifest (corrupt or tampered); "
                "rebuild the pack with `mkt transfer`"
            )
        try:
            directions = load_file(str(tensor_path))["directions"]
        except (SafetensorError, KeyError, OSError) as err:
            raise CorruptArtifactError(f"{tensor_path} holds no readable 'directions' tensor ({err})") from None
        if not directions.is_floating_point():
            raise CorruptArtifactError(f"{tensor_path}: directions are {directions.dtype}, not floating point; "
                                       "rebuild the pack with `mkt transfer`")
        try:
            width = target.width(manifest["hook"])
        except IncompatibleModelError as err:
            raise CorruptArtifactError(f"{manifest_path}: {err}") from None
        if tuple(directions.shape) != (target.n_layers, width):
            raise CorruptArtifactError(
                f"directions are {tuple(directions.shape)} but the manifest's target has "
                f"{target.n_layers}x{width} at {manifest['hook']}"
            )
        if not torch.isfinite(directions).all():
            raise CorruptArtifactError(f"{tensor_path} holds NaN or inf directions: the pack is corrupt; "
                                       "rebuild it with `mkt transfer`")
        key = MasterKey(directions, target, manifest["hook"], manifest.get("provenance", {}))
        return cls(key, float(manifest["alpha"]), manifest["mode"], manifest["scope"], manifest.get("layers"),
                   manifest.get("description", ""))

    def check_fits(self, model) -> None:
        """Error when the pack cannot fit ``model``; a warning when only the names differ."""
        self.key.check_fits(model)
        ident = model_identity(model)
        if ident.name != self.key.model.name or ident.d_vocab != self.key.model.d_vocab:
            warnings.warn(
                f"pack was made for {self.key.model.name!r} (vocab {self.key.model.d_vocab}) and is "
                f"applied to {ident.name!r} (vocab {ident.d_vocab}); shapes match, so it runs",
                stacklevel=2,
            )

    def steering(self, alpha: float | torch.Tensor | None = None):
        return self.key.steering(self.alpha if alpha is None else alpha, self.mode, self.layers, self.scope)

    @contextmanager
    def apply(self, model, alpha: float | torch.Tensor | None = None) -> Iterator:
        """Steer ``model`` with the pack's settings (``alpha`` overrides its default)."""
        self.check_fits(model)
        with self.steering(alpha).attach(model) as hooks:
            yield hooks
