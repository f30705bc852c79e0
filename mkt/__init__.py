"""mkt: Master Key Transfer on TransformerLens models.

Two models to steered generation in three calls::

    report = mkt.run_transfer(source, target, questions, questions, locked="Q: {question}\\nA:",
                              unlocked="Q: {question}\\nA: Let's think step by step.")
    with report.target_key.apply(target, alpha=0.2):
        outputs = mkt.generate(target, prompts)

or step by step::

    key = extract_prompt_key(source, questions, locked, unlocked)
    alignment = fit_alignment(last_token_resid(source, prompts), last_token_resid(target, prompts),
                              model_identity(source), model_identity(target), k=64)
    target_key = transfer(key, alignment)
"""

from mkt.activations import last_token_resid
from mkt.aggregators import mean_difference, pca_direction
from mkt.alignment import (
    SubspaceAlignment,
    fit_alignment,
    relative_depth_map,
    select_rank,
    transfer,
)
from mkt.errors import (
    CorruptArtifactError,
    IncompatibleModelError,
    MktError,
    ModelLoadError,
    NonFiniteError,
)
from mkt.extract import extract_model_key, extract_prompt_key
from mkt.generation import Generation, generate
from mkt.intervention import additive, norm_preserving
from mkt.key import MasterKey, random_like
from mkt.models import ModelIdentity, load_model, model_identity
from mkt.pack import CapabilityPack
from mkt.pipeline import TransferFormats, TransferReport, align_models, run_transfer
from mkt.prompts import PromptTemplate
from mkt.steering import Steering

__version__ = "0.1.0"
__all__ = [
    "CapabilityPack", "CorruptArtifactError", "Generation", "IncompatibleModelError", "MasterKey",
    "MktError", "ModelIdentity", "ModelLoadError", "NonFiniteError", "PromptTemplate", "Steering",
    "SubspaceAlignment", "TransferFormats", "TransferReport", "additive", "align_models", "extract_model_key",
    "extract_prompt_key", "fit_alignment", "generate", "last_token_resid", "load_model", "mean_difference",
    "model_identity", "norm_preserving", "pca_direction", "random_like", "relative_depth_map", "run_transfer",
    "select_rank", "transfer",
]
