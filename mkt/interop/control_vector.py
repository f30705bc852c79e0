"""Capability packs as llama.cpp / repeng GGUF control vectors, and back.

A control vector adds ``strength x direction.N`` to the output of block N at every token, so
it is exactly a pack in mode ``constant`` at ``hook_resid_post`` with scope ``all``
(``mkt.interop.constant_vectors``): ``direction.N = alpha * v_N`` for each steered layer N, no
index shift (llama.cpp's block N output is TransformerLens's ``blocks.N.hook_resid_post``).
llama.cpp never steers block 0, so a pack that does is refused.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from mkt.errors import CorruptArtifactError, IncompatibleModelError, MktError
from mkt.interop.constant_vectors import EXACT_MODE, EXACT_SCOPE, constant_vectors
from mkt.interop.llamacpp_rules import ARCHITECTURE, read_control_vector
from mkt.key import MasterKey
from mkt.models import RESID_HOOK, model_identity
from mkt.pack import CapabilityPack

def hf_model_type(architecture: str) -> str | None:
    """The HF ``model_type`` (what repeng writes as ``model_hint``) of an architecture class name.

    None when transformers knows no single model type for it (e.g. mkt's own tiny models).
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    types = [t for t, cls in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items() if cls == architecture]
    return types[0] if len(types) == 1 else None


def model_type_of(model) -> str | None:
    """The HF ``model_type`` of a loaded model (its config's), else from its architecture name."""
    config = getattr(getattr(model, "original_model", None), "config", None)
    return getattr(config, "model_type", None) or hf_model_type(model_identity(model).architecture)


def control_vector_directions(pack: CapabilityPack) -> dict[int, np.ndarray]:
    """What llama.cpp must add to each block's output to steer exactly as ``pack`` does.

    Returns:
        block index N -> ``alpha * v_N`` (float32 ``[d_model]``), for the pack's steered layers.

    Raises:
        MktError: naming why the pack is not a control vector (mode, scope, hook, block 0).
    """
    vectors = constant_vectors(pack, "a llama.cpp control vector")
    if 0 in vectors:
        raise MktError("this pack steers block 0, whose output llama.cpp never steers (control vectors start at "
                       "direction.1): leave layer 0 out (layers=[1, ...]) and check the effect with `mkt eval`")
    return vectors


def export_control_vector(pack: CapabilityPack, path: str | Path, model_hint: str | None = None) -> Path:
    """Write ``pack`` as a GGUF control vector and check it against llama.cpp's rules.

    Args:
        pack: a pack in mode ``constant`` and scope ``all`` at ``hook_resid_post``.
        path: the ``.gguf`` file to write.
        model_hint: ``controlvector.model_hint``; default the HF ``model_type`` of the pack's
            Target, as repeng writes it.

    Raises:
        MktError: the pack is not exactly a control vector (see ``control_vector_directions``), or
            no model hint is known.
    """
    from gguf import GGUFWriter

    directions = control_vector_directions(pack)
    hint = model_hint or hf_model_type(pack.key.model.architecture)
    if not hint:
        raise MktError(f"no HF model_type is known for architecture {pack.key.model.architecture!r}: give the "
                       "model hint (--model-hint, e.g. llama)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(path, ARCHITECTURE)  # writes general.architecture
    writer.add_string(f"{ARCHITECTURE}.model_hint", hint)
    writer.add_uint32(f"{ARCHITECTURE}.layer_count", len(directions))  # as repeng: the number of directions
    for layer, vector in directions.items():
        writer.add_tensor(f"direction.{layer}", vector)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    written = read_control_vector(path, pack.key.d_model, pack.key.n_layers)
    if written.vectors.keys() != directions.keys() or not all(
            np.array_equal(written.vectors[n], v) for n, v in directions.items()):
        raise MktError(f"{path} does not read back as written: the disk or the gguf package is at fault")
    return path


def import_control_vector(path: str | Path, model, scale: float = 1.0) -> CapabilityPack:
    """A GGUF control vector as a pack for ``model`` that steers exactly as llama.cpp would.

    Args:
        path: a control vector file (mkt, repeng or llama.cpp's ``cvector-generator``).
        model: the model it is for (a bridge or engine): its width and depth are checked.
        scale: the strength llama.cpp's ``--control-vector-scaled FILE SCALE`` would give (the
            pack's alpha).

    Raises:
        CorruptArtifactError: the file breaks a rule llama.cpp or repeng checks.
        IncompatibleModelError: its width is not the model's.
    """
    ident = model_identity(model)
    cvec = read_control_vector(path, n_layers=ident.n_layers)
    if cvec.n_embd != ident.d_model:
        raise IncompatibleModelError(f"{path}: its directions have {cvec.n_embd} values but {ident.name!r} has "
                                     f"d_model {ident.d_model}: it was made for another model")
    model_type = model_type_of(model)
    if model_type is not None and cvec.model_hint != model_type:
        warnings.warn(f"{path} was made for a {cvec.model_hint!r} model and is applied to {ident.name!r} "
                      f"({model_type}); the width matches, so it runs", stacklevel=2)
    directions = torch.zeros(ident.n_layers, ident.d_model)
    for layer, vector in cvec.vectors.items():
        directions[layer] = torch.from_numpy(vector.copy())
    steered = [layer for layer, vector in cvec.vectors.items() if np.any(vector)]
    if not steered:
        raise CorruptArtifactError(f"{path}: every direction is zero, so it steers nothing; export the key again")
    provenance = dict(variant="llama.cpp control vector", imported_from=Path(path).name, model_hint=cvec.model_hint,
                      sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                      alpha_choice="the strength given at import (llama.cpp's --control-vector-scaled); the file's "
                                   "vectors carry whatever alpha it was exported with")
    key = MasterKey(directions, ident, RESID_HOOK, provenance)
    return CapabilityPack(key, float(scale), EXACT_MODE, EXACT_SCOPE, steered,
                          description=f"imported from the control vector {Path(path).name}")
