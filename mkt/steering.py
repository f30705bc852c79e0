"""Applying directions to a model's residual stream through TransformerLens hook points.

Positions are counted on the left-padded sequence: the prompt occupies ``[0, P)`` and
generated tokens ``[P, ...)``. The paper's intervention (scope ``prompt-last``) changes
only position ``P - 1`` during the prefill, and its effect reaches generated tokens
through the KV cache; ``prompt-last+generated`` also steers every generated token;
``prompt-all`` steers every prompt token (left padding included: it is masked out of
attention, so changing it changes nothing); ``all`` steers every token, prompt and generated.

At a per-head hook (``attn.hook_z``, ``[batch, pos, head, d_head]``) the directions are
``[n_layers, n_heads * d_head]`` and each head's output is turned toward its own slice: the
formula acts per head (a head whose slice is zero is left as it is).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from mkt.errors import IncompatibleModelError, NonFiniteError
from mkt.intervention import MODES, UNSCALED_MODES, check_mode
from mkt.models import PER_HEAD_HOOKS, RESID_HOOK, check_hook, check_layers, model_identity, resid_hook_name

SCOPES = ("prompt-last", "prompt-last+generated", "prompt-all", "all")


@dataclass
class Steering:
    """What to add where: a value, bound to a model only inside ``attach``.

    Args:
        directions: one direction per layer of the model steered, ``[n_layers, d_model]``,
            or one set per prompt, ``[n_prompts, n_layers, d_model]`` (a batch of keys and
            their controls in one generation), or with ``sets`` a table of sets,
            ``[n_sets, n_layers, d_model]``.
        sets: optional, per prompt the index of its set in ``directions`` (``[n_prompts]``): a key,
            its null draws and controls travel once however many prompts and alphas use them
            (:mod:`mkt.battery`).
        alpha: strength, a float or one value per prompt (``[n_prompts]``).
        mode: ``norm-preserving`` (the paper's rotation), ``additive`` (a push scaled by ||h||) or
            ``constant`` (``alpha`` times the direction as it is: a llama.cpp control vector).
        layers: the layers to steer (default all).
        scope: ``prompt-last`` (paper), ``prompt-last+generated``, ``prompt-all`` or ``all``.
        hook: the hook point within each block (``mkt.models.HOOK_POINTS``; the key's own).
    """

    directions: Float[Tensor, "layer d"] | Float[Tensor, "row layer d"]
    alpha: float | Tensor = 0.1
    mode: str = "norm-preserving"
    layers: list[int] | None = None
    scope: str = "prompt-last"
    hook: str = RESID_HOOK
    sets: Tensor | None = None
    _units: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_mode(self.mode)
        check_hook(self.hook)
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}: use one of {SCOPES}")
        if self.directions.ndim not in (2, 3):
            raise ValueError(
                f"directions must be [n_layers, d_model] or [n_prompts, n_layers, d_model], got "
                f"{tuple(self.directions.shape)}"
            )
        if self.sets is not None:
            self.sets = torch.as_tensor(self.sets)
            if self.directions.ndim != 3 or self.sets.ndim != 1 or self.sets.is_floating_point():
                raise ValueError(f"sets must be one integer per prompt indexing directions [n_sets, n_layers, d_model], "
                                 f"got sets {tuple(self.sets.shape)} for directions {tuple(self.directions.shape)}")
            if len(self.sets) and not 0 <= int(self.sets.min()) <= int(self.sets.max()) < len(self.directions):
                raise ValueError(f"sets must lie in [0, {len(self.directions)}) (one per direction set), got values "
                                 f"{int(self.sets.min())}..{int(self.sets.max())}")
        self.layers = check_layers(self.layers, self.directions.shape[-2])
        alpha = torch.as_tensor(self.alpha, dtype=torch.float32)
        if alpha.ndim > 1 or not torch.isfinite(alpha).all():
            raise ValueError(f"alpha must be a finite number or a 1-D tensor of finite numbers, got {self.alpha!r}")
        if not torch.isfinite(self.directions).all():
            raise NonFiniteError("NaN or inf in the steering directions: the key is corrupt, extract it again")
        zero_at = (self.directions[..., self.layers, :].norm(dim=-1) == 0).reshape(-1, len(self.layers)).any(0)
        if zero_at.any():
            zero = [self.layers[i] for i in zero_at.nonzero().flatten().tolist()]
            raise ValueError(f"zero direction at layers {zero}: leave those layers out (layers=...)")
        self._units = self.directions.float()
        if self.mode not in UNSCALED_MODES:
            self._units = self._units / self._units.norm(dim=-1, keepdim=True).clamp_min(1e-30)

    @property
    def per_prompt(self) -> int | None:
        """The number of prompts this steering is made for, or None if it fits any batch."""
        if self.sets is not None:
            return len(self.sets)
        if self.directions.ndim == 3:
            return self.directions.shape[0]
        if isinstance(self.alpha, Tensor) and self.alpha.ndim == 1:
            return self.alpha.shape[0]
        return None

    def rows(self, start: int, stop: int) -> "Steering":
        """The same steering for prompts ``start:stop`` (slices per-prompt alpha and directions)."""
        alpha, directions, sets = self.alpha, self.directions, self.sets
        if isinstance(alpha, Tensor) and alpha.ndim == 1:
            alpha = alpha[start:stop]
        if sets is not None:
            sets = sets[start:stop]
        elif directions.ndim == 3:
            directions = directions[start:stop]
        return replace(self, alpha=alpha, directions=directions, sets=sets)

    def row_units(self) -> Float[Tensor, "row layer d"] | Float[Tensor, "layer d"]:
        """Unit directions of each prompt (``[n_prompts, n_layers, d]``), or the one set for all."""
        return self._units if self.sets is None else self._units[self.sets]

    @contextmanager
    def attach(self, model) -> Iterator["SteeringHooks"]:
        """Hooks on the model while the context is open."""
        n_layers, width = model.cfg.n_layers, model_identity(model).width(self.hook)
        if tuple(self.directions.shape[-2:]) != (n_layers, width):
            raise IncompatibleModelError(
                f"directions are {tuple(self.directions.shape)} but the model has {n_layers} layers of "
                f"width {width} at {self.hook}: transfer the key into this model first (mkt.transfer)"
            )
        hooks = SteeringHooks(self)
        fwd = [(resid_hook_name(layer, self.hook), partial(hooks.hook, layer=layer)) for layer in self.layers]
        with model.hooks(fwd_hooks=fwd):
            yield hooks


class SteeringHooks:
    """The live hooks of one ``Steering``; ``locate_prompt`` and ``locate_step`` place each forward in its sequence.

    Left unplaced (a forward the user runs inside ``with key.apply(model):``), a forward of
    several tokens is a prefill whose last token is the last prompt token, and a
    one-token forward is a generated token.
    """

    def __init__(self, steering: Steering) -> None:
        self.steering = steering
        self.formula = MODES[steering.mode]
        self.generated = steering.scope in ("prompt-last+generated", "all")
        self.whole_prompt = steering.scope in ("prompt-all", "all")
        self._prompt_len: int | None = None
        self._offset = 0
        self._units: dict[tuple, Tensor] = {}

    def locate_prompt(self, prompt_len: int) -> None:
        """The next forward starts a sequence whose prompt has ``prompt_len`` tokens (its last one
        the last prompt token; 1 for the last token alone over a KV cache of the rest)."""
        self._prompt_len, self._offset = prompt_len, 0

    def locate_step(self, offset: int) -> None:
        """The next forward starts ``offset`` positions into the sequence placed by ``locate_prompt``
        (a decoding step over the KV cache)."""
        if self._prompt_len is None:
            raise ValueError("locate_step places a forward after the prompt: call locate_prompt first")
        self._offset = offset

    def _span(self, n_pos: int) -> slice | None:
        if self._prompt_len is None:
            if n_pos > 1:
                prompt_len, offset = n_pos, 0
            else:
                return slice(0, 1) if self.generated else None
        else:
            prompt_len, offset = self._prompt_len, self._offset
        lo = 0 if self.whole_prompt else max(prompt_len - 1 - offset, 0)
        hi = min(n_pos if self.generated else prompt_len - offset, n_pos)
        return slice(lo, hi) if lo < hi else None

    def _unit(self, layer: int, like: Tensor) -> Tensor:
        key = (layer, like.device, like.dtype)
        if key not in self._units:
            units = self.steering.row_units()
            if self.steering.hook in PER_HEAD_HOOKS:  # [..., head, d_head], each head's slice a unit vector
                directions = self.steering.directions
                directions = directions if self.steering.sets is None else directions[self.steering.sets]
                units = directions.float().unflatten(-1, like.shape[-2:])
                if self.steering.mode not in UNSCALED_MODES:
                    units = units / units.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            if self.steering.directions.ndim == 3:  # one direction per row: [rows, 1, ...] broadcasts over positions
                if units.shape[0] != like.shape[0]:
                    raise ValueError(
                        f"the steering holds directions for {units.shape[0]} prompts but the batch has "
                        f"{like.shape[0]} rows: give one set of directions per prompt"
                    )
                self._units[key] = units[:, layer, None].to(device=like.device, dtype=like.dtype)
            else:
                self._units[key] = units[layer].to(device=like.device, dtype=like.dtype)
        return self._units[key]

    def _alpha(self, act: Tensor) -> Tensor | float:
        alpha = self.steering.alpha
        if isinstance(alpha, Tensor) and alpha.ndim == 1:
            if alpha.shape[0] != act.shape[0]:
                raise ValueError(
                    f"alpha has {alpha.shape[0]} values but the batch has {act.shape[0]} rows: "
                    "give one alpha per prompt"
                )
            return alpha.to(device=act.device, dtype=act.dtype).view(-1, *[1] * (act.ndim - 1))
        return float(alpha)

    def hook(self, act: Float[Tensor, "batch pos d"] | Float[Tensor, "batch pos head d_head"], hook, layer: int
             ) -> Tensor:
        span = self._span(act.shape[1])
        if span is None:
            return act
        # the arithmetic in float32 whatever the model's dtype: a bf16 norm and rotation lose the
        # small angles the paper's alphas make
        h = act[:, span].float()
        out = act.clone()
        out[:, span] = self.formula(h, self._unit(layer, h), self._alpha(h)).to(act.dtype)
        return out
