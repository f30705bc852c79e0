"""MasterKey extraction: contrast a capability-present and a capability-absent variant.

prompt-induced: one model, a Locked and an Unlocked template.
model-induced: a Locked (e.g. base) and an Unlocked (e.g. post-trained) model, one template.
"""

from __future__ import annotations

import torch

from mkt.activations import prompt_states
from mkt.aggregators import aggregate
from mkt.errors import IncompatibleModelError, MktError
from mkt.key import MasterKey
from mkt.models import RESID_HOOK, model_identity
from mkt.prompts import PromptFormat, PromptTemplate


def _nonzero(directions: torch.Tensor) -> torch.Tensor:
    if not bool((directions.norm(dim=-1) > 0).any()):
        raise MktError(
            "the Locked and Unlocked variants give identical activations at every layer, so the key "
            "is zero: check that the two templates (or models) really differ after tokenization"
        )
    return directions


def extract_prompt_key(
    model,
    questions: list[str],
    locked: str | PromptTemplate | PromptFormat,
    unlocked: str | PromptTemplate | PromptFormat,
    aggregator: str = "mean",
    batch_size: int = 32,
    progress: bool = False,
    hook: str = RESID_HOOK,
    position: str = "last",
) -> MasterKey:
    """Key from the same model under two formats (e.g. plain vs "think step by step"), each a
    template or a ``PromptFormat`` in the model's chat template; read at ``hook`` of each block
    and at ``position`` (``last``, ``mean`` or ``last-N``; see ``mkt.activations.prompt_states``)."""
    locked, unlocked = PromptFormat.of(locked), PromptFormat.of(unlocked)
    tok = model.tokenizer

    def states(prompts):
        return prompt_states(model, prompts, None, hook, position, batch_size, progress)

    h_locked, h_unlocked = states(locked.render_all(tok, questions)), states(unlocked.render_all(tok, questions))
    return MasterKey(
        _nonzero(aggregate(h_unlocked - h_locked, aggregator)),
        model_identity(model), hook,
        provenance=dict(variant="prompt", n=len(questions), aggregator=aggregator, position=position,
                        locked_template=locked.template.text, unlocked_template=unlocked.template.text,
                        locked_format=locked.describe(), unlocked_format=unlocked.describe()),
    )


def extract_model_key(unlocked_model, locked_model, questions: list[str], template: str | PromptTemplate | PromptFormat,
                      aggregator: str = "mean", batch_size: int = 32, progress: bool = False, hook: str = RESID_HOOK,
                      position: str = "last") -> MasterKey:
    """Key from two variants of one architecture (post-trained minus base) on one format, read
    at ``hook`` and ``position`` as in :func:`extract_prompt_key`."""
    a, b = model_identity(unlocked_model), model_identity(locked_model)
    if not a.fits(b):
        raise IncompatibleModelError(
            f"model-induced keys need two variants of the same architecture: {a.name!r} has "
            f"{a.n_layers}x{a.d_model}, {b.name!r} has {b.n_layers}x{b.d_model}"
        )
    template = PromptFormat.of(template)
    prompts = template.render_all(locked_model.tokenizer, questions)
    h_unlocked = prompt_states(unlocked_model, prompts, None, hook, position, batch_size, progress)
    h_locked = prompt_states(locked_model, prompts, None, hook, position, batch_size, progress)
    return MasterKey(
        _nonzero(aggregate(h_unlocked - h_locked, aggregator)),
        b, hook,
        provenance=dict(variant="model", n=len(questions), aggregator=aggregator, position=position,
                        unlocked_model=a.name, locked_model=b.name, template=template.template.text,
                        format=template.describe()),
    )


def extract_contrast_key(
    model,
    positive: list[str],
    negative: list[str],
    batch_size: int = 32,
    progress: bool = False,
) -> MasterKey:
    """Mean last-token state of ``positive`` prompts minus that of ``negative`` prompts.

    For contrasts between different prompts, such as a nuisance control (long minus short
    questions) that a transferred key must beat.
    """
    for name, prompts in (("positive", positive), ("negative", negative)):
        if isinstance(prompts, str) or not prompts:
            raise ValueError(f"the {name} prompts must be a non-empty list of strings")
    h_pos = prompt_states(model, list(positive), batch_size=batch_size, progress=progress)
    h_neg = prompt_states(model, list(negative), batch_size=batch_size, progress=progress)
    return MasterKey(
        _nonzero(h_pos.mean(0) - h_neg.mean(0)),
        model_identity(model),
        provenance=dict(variant="contrast", n_positive=len(positive), n_negative=len(negative)),
    )
