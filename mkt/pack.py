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
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from mkt.artifacts import (
    check_tensor,
    identity_from_record,
    is_int,
    is_number,
    json_text,
    make_directory,
    read_bytes,
    read_json_object,
    replace_atomically,
)
from mkt.errors import CorruptArtifactError, IncompatibleModelError
from mkt.intervention import MODES, check_mode
from mkt.key import MasterKey
from mkt.models import HOOK_POINTS, ModelIdentity, check_layers, model_identity
from mkt.pack_card import write_pack_card
from mkt.positions import check_position
from mkt.steering import SCOPES

PACK_FORMAT = "mkt.capability-pack"
PACK_VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "directions.safetensors"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


KNOWN_HOOKS = HOOK_POINTS  # where mkt reads and writes keys
REBUILD = "rebuild the pack with `mkt transfer` (or `mkt extract`)"


def _check_provenance(prov, where: str) -> None:
    """The provenance fields mkt reads back (``mkt info``, transfers, the null) must have their types."""
    def bad(field: str, why: str) -> CorruptArtifactError:
        return CorruptArtifactError(f"{where}: field 'provenance.{field}' {why}; {REBUILD}")

    if not isinstance(prov, dict):
        raise CorruptArtifactError(f"{where}: field 'provenance' must be an object; {REBUILD}")
    if "source_model" in prov:
        identity_from_record(prov["source_model"], where, "provenance.source_model")
    if "layer_map" in prov and not (isinstance(prov["layer_map"], list)
                                    and all(is_int(x) and x >= 0 for x in prov["layer_map"])):
        raise bad("layer_map", "must be a list of layer indices")
    if "coverage" in prov and not (isinstance(prov["coverage"], list) and all(map(is_number, prov["coverage"]))):
        raise bad("coverage", "must be a list of finite numbers")
    for field in ("k", "n"):
        if prov.get(field) is not None and not is_int(prov[field]):
            raise bad(field, f"must be null or a whole number, got {prov[field]!r}")
    if "oracle" in prov and not isinstance(prov["oracle"], str):
        raise bad("oracle", "must be a string")
    if "position" in prov:
        try:
            check_position(prov["position"])
        except (ValueError, TypeError):
            raise bad("position", f"is {prov['position']!r}, not a prompt position (last, mean, last-N)") from None


def _check_manifest(manifest, path: Path) -> ModelIdentity:
    """Validate a manifest's fields (types, ranges, known values); unknown extra fields are kept.

    Returns the Target identity. Raises ``CorruptArtifactError`` naming the first bad field.
    """
    def bad(field: str, why: str) -> CorruptArtifactError:
        return CorruptArtifactError(f"{path}: field {field!r} {why}; {REBUILD} or fix it")

    if not isinstance(manifest, dict):
        raise CorruptArtifactError(f"{path} holds a JSON {type(manifest).__name__}, not a manifest object")
    for field in ("format", "format_version", "sha256", "target", "hook", "alpha", "mode", "scope"):
        if field not in manifest:
            raise bad(field, "is missing")
    if manifest["format"] != PACK_FORMAT:
        raise CorruptArtifactError(f"{path} is not an mkt capability pack manifest (format {manifest['format']!r}, "
                                   f"not {PACK_FORMAT!r})")
    version = manifest["format_version"]
    if not is_int(version):
        raise bad("format_version", f"must be the whole number {PACK_VERSION}, got {version!r} "
                  f"(a JSON {type(version).__name__})")
    if version != PACK_VERSION:
        raise CorruptArtifactError(f"{path}: pack format version {version} is not {PACK_VERSION}: use the mkt "
                                   f"version that wrote it or {REBUILD}")
    if not (isinstance(manifest["sha256"], str) and len(manifest["sha256"]) == 64):
        raise bad("sha256", "must be the 64-character hex sha256 of directions.safetensors")
    target = identity_from_record(manifest["target"], str(path), "target")
    if not (isinstance(manifest["hook"], str) and manifest["hook"] in KNOWN_HOOKS):
        raise bad("hook", f"is {manifest['hook']!r}, but mkt reads and writes keys at {KNOWN_HOOKS} only")
    try:
        target.width(manifest["hook"])
    except IncompatibleModelError as err:
        raise CorruptArtifactError(f"{path}: {err}") from None
    if not is_number(manifest["alpha"]):
        raise bad("alpha", f"must be a finite number, got {manifest['alpha']!r}")
    if not (isinstance(manifest["mode"], str) and manifest["mode"] in MODES):
        raise bad("mode", f"must be one of {sorted(MODES)}, got {manifest['mode']!r}")
    if not (isinstance(manifest["scope"], str) and manifest["scope"] in SCOPES):
        raise bad("scope", f"must be one of {SCOPES}, got {manifest['scope']!r}")
    layers = manifest.get("layers")
    if layers is not None and not (isinstance(layers, list) and layers
                                   and all(is_int(x) and 0 <= x < target.n_layers for x in layers)):
        raise bad("layers", f"must be null or a non-empty list of layer indices in 0..{target.n_layers - 1}")
    _check_provenance(manifest.get("provenance", {}), str(path))
    if not isinstance(manifest.get("description", ""), str):
        raise bad("description", "must be a string")
    return target


def _check_directions(directions, target: ModelIdentity, hook: str, where: str, fix: str = REBUILD):
    """The directions tensor against the identity it belongs to (a clear error, never a later one)."""
    return check_tensor(directions, "directions", (target.n_layers, target.width(hook)), where, fix)


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
        """Write the pack, after the checks ``load`` makes (a key edited in place since it was made
        is refused here, not by whoever loads it); each file is replaced atomically."""
        directory = Path(directory)
        where = f"pack {directory}"
        directions = _check_directions(self.key.directions, self.key.model, self.key.hook, where,
                                       "the key was changed after it was made: make it again").float()
        data = save({"directions": directions.contiguous().cpu()})
        manifest = self.manifest() | {"sha256": _sha256(data)}
        _check_manifest(manifest, directory / MANIFEST)
        text = json_text(manifest, f"{where}: the manifest")
        make_directory(directory, "a capability pack")
        # tensors first: a kill between the two leaves a hash that does not match, refused on load
        replace_atomically(directory / TENSORS, data)
        replace_atomically(directory / MANIFEST, text)
        write_pack_card(directory)  # README.md: where the pack came from, readable on the HF hub
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "CapabilityPack":
        """Read a pack, verifying its format, hash, shapes, dtype and finiteness.

        Raises:
            CorruptArtifactError: naming the file and what is wrong with it.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise CorruptArtifactError(f"{directory} is not a capability pack directory"
                                       f"{' (no such path)' if not directory.exists() else ''}: pass the folder "
                                       "`mkt transfer --out` or `mkt extract --out` wrote")
        manifest_path, tensor_path = directory / MANIFEST, directory / TENSORS
        for p in (manifest_path, tensor_path):
            if not p.exists():
                raise CorruptArtifactError(f"{directory} is not a capability pack: {p.name} is missing")
        manifest = read_json_object(manifest_path, "a manifest object", REBUILD)
        target = _check_manifest(manifest, manifest_path)
        data = read_bytes(tensor_path, "a tensor file", REBUILD)
        if _sha256(data) != manifest["sha256"]:
            raise CorruptArtifactError(
                f"{tensor_path} does not match the hash in its manifest (corrupt or tampered); {REBUILD}"
            )
        try:
            tensors = load(data)
        except (SafetensorError, ValueError, OSError) as err:
            raise CorruptArtifactError(f"{tensor_path} is not a readable safetensors file ({err}); {REBUILD}") from None
        directions = _check_directions(tensors.get("directions"), target, manifest["hook"], str(tensor_path))
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
