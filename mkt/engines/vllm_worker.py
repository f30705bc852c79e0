"""The steering hooks inside vLLM's workers (loaded there as ``worker_extension_cls``).

vLLM runs the model in worker processes (one per tensor-parallel rank), so the hooks live
there; the driver (:mod:`mkt.engines.vllm`) reaches them by ``collective_rpc`` with the
method names below. Each request carries its own steering row in
``SamplingParams.extra_args["mkt"]`` (``call``, ``row``, ``set``, ``alpha``), so one
``generate`` call can hold a whole alpha sweep and a batch of different keys.

Where the steered positions are. vLLM flattens a step's requests into one token axis:
request ``i`` of the runner's input batch owns tokens ``query_start_loc[i]:query_start_loc[i+1]``
at positions ``num_computed_tokens[i] + 0, 1, ...``; its prompt has ``num_prompt_tokens[i]``
tokens. The last prompt token is position ``P - 1`` (whether it arrives in a full prefill, a
chunk of a chunked prefill, or beside decoding requests); generated tokens are positions
``>= P``. This is the layout of vLLM's V1 ``GPUModelRunner`` (also the CPU runner's base); the
driver pins it (``VLLM_USE_V2_MODEL_RUNNER=0``) and :meth:`SteeringWorker.mkt_install`
refuses any runner without that state.

What is edited. vLLM's decoder layers return ``(hidden_states, residual)`` and leave the add
to the next layer's fused norm: the residual stream after layer ``l`` (TransformerLens
``blocks.{l}.hook_resid_post``) is their sum. The hook computes the steered sum in float32
with :data:`mkt.intervention.MODES`, writes it, rounded once to the model's dtype, into
``hidden_states`` and zeroes ``residual`` on those rows, so the next layer reads exactly it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from mkt.hf_view import decoder_layers
from mkt.intervention import MODES


@dataclass
class _Plan:
    """One forward's steered rows: token index, direction set, alpha; and per request, what was hit."""

    rows: torch.Tensor  # [n] token indices in the flattened batch
    sets: torch.Tensor  # [n] direction set of each row
    alpha: torch.Tensor  # [n, 1] float32
    tags: np.ndarray  # mkt rows (requests) hit in this forward
    n_last: np.ndarray  # per tag: 1 when its last prompt token is in this forward
    n_gen: np.ndarray  # per tag: generated tokens steered in this forward
    layers_done: int = 0


class _Steerer:
    """The live hooks of one ``generate`` call on one worker."""

    def __init__(self, runner, layers: torch.nn.ModuleList) -> None:
        self.runner, self.layers = runner, layers
        self.handles: list = []
        self.plan: _Plan | None = None
        self.last_hits: np.ndarray | None = None  # per mkt row of the current call
        self.gen_hits: np.ndarray | None = None

    def begin(self, call: str, units: torch.Tensor, layers: list[int], mode: str, scope: str, n_rows: int) -> None:
        self.end()  # hooks a failed call may have left
        self.call, self.units, self.formula = call, units.float(), MODES[mode]
        self.column = {layer: j for j, layer in enumerate(layers)}  # units are [set, len(layers), d]
        self.generated = scope == "prompt-last+generated"
        self.last_hits = np.zeros(n_rows, dtype=np.int64)
        self.gen_hits = np.zeros(n_rows, dtype=np.int64)
        self.first = min(layers)
        self.handles = [self.layers[layer].register_forward_hook(self._hook(layer)) for layer in layers]

    def end(self) -> tuple[list[int], list[int]]:
        self._fold()
        for handle in self.handles:
            handle.remove()
        self.handles = []
        if self.last_hits is None:
            return [], []
        hits = (self.last_hits.tolist(), self.gen_hits.tolist())
        self.last_hits = self.gen_hits = None
        return hits

    def _fold(self) -> None:
        """Count the previous forward's hits: each of its rows was edited once per steered layer that ran."""
        plan, self.plan = self.plan, None
        if plan is not None and plan.layers_done:
            np.add.at(self.last_hits, plan.tags, plan.n_last * plan.layers_done)
            np.add.at(self.gen_hits, plan.tags, plan.n_gen * plan.layers_done)

    def _make_plan(self, device: torch.device) -> _Plan | None:
        from vllm.forward_context import get_forward_context

        if get_forward_context().attn_metadata is None:  # a profiling or warm-up run: no requests
            return None
        batch = self.runner.input_batch
        n = batch.num_reqs
        starts = self.runner.query_start_loc.np[: n + 1]
        rows, sets, alphas, tags, n_last, n_gen = [], [], [], [], [], []
        for i, req_id in enumerate(batch.req_ids[:n]):
            params = self.runner.requests[req_id].sampling_params
            tag = (params.extra_args or {}).get("mkt") if params is not None else None
            if tag is None or tag["call"] != self.call:
                continue
            lo, hi = int(starts[i]), int(starts[i + 1])
            first_pos, prompt_len = int(batch.num_computed_tokens_cpu[i]), int(batch.num_prompt_tokens[i])
            has_last = first_pos <= prompt_len - 1 < first_pos + hi - lo
            picked = [lo + prompt_len - 1 - first_pos] if has_last else []
            gen_from = lo + max(prompt_len - first_pos, 0)
            if self.generated and gen_from < hi:
                picked.extend(range(gen_from, hi))
            if not picked:
                continue
            rows.extend(picked)
            sets.extend([tag["set"]] * len(picked))
            alphas.extend([tag["alpha"]] * len(picked))
            tags.append(tag["row"])
            n_last.append(int(has_last))
            n_gen.append(len(picked) - int(has_last))
        if not rows:
            return None
        return _Plan(torch.tensor(rows, device=device), torch.tensor(sets, device=device),
                     torch.tensor(alphas, dtype=torch.float32, device=device)[:, None],
                     np.array(tags), np.array(n_last), np.array(n_gen))

    def _hook(self, layer: int):
        def hook(module, args, output):
            hidden, residual = output if isinstance(output, tuple) else (output, None)
            if layer == self.first:  # layers run in order: the first steered one starts a new forward
                self._fold()
                self.plan = self._make_plan(hidden.device)
            plan = self.plan
            if plan is None:
                return None
            if self.units.device != hidden.device:
                self.units = self.units.to(hidden.device)
            h = hidden[plan.rows].float()
            if residual is not None:
                h = h + residual[plan.rows].float()
            steered = self.formula(h, self.units[plan.sets, self.column[layer]], plan.alpha)
            hidden[plan.rows] = steered.to(hidden.dtype)
            if residual is not None:
                residual[plan.rows] = 0
            plan.layers_done += 1
            return None

        return hook


class SteeringWorker:
    """Methods mixed into vLLM's worker class; the driver calls them by name through ``collective_rpc``."""

    def mkt_install(self) -> tuple[int, int]:
        """Find the decoder layers and check the runner's request state; return (n_layers, d_model)."""
        runner = self.model_runner
        missing = [a for a in ("input_batch", "requests", "query_start_loc") if not hasattr(runner, a)]
        if missing:
            raise RuntimeError(
                f"vLLM's model runner {type(runner).__name__} keeps no {missing}: mkt's steering supports the V1 "
                "GPUModelRunner and its CPU subclass only (set VLLM_USE_V2_MODEL_RUNNER=0)")
        model = runner.get_model()
        layers = decoder_layers(model)
        self._mkt = _Steerer(runner, layers)
        return len(layers), int(model.config.hidden_size)

    def mkt_begin(self, call: str, units: bytes, shape: list[int], layers: list[int], mode: str, scope: str,
                  n_rows: int) -> None:
        """Hook ``layers`` for one call; ``units`` are float32 ``[set, len(layers), d]`` as bytes."""
        table = torch.frombuffer(bytearray(units), dtype=torch.float32).reshape(shape)
        self._mkt.begin(call, table, layers, mode, scope, n_rows)

    def mkt_end(self) -> tuple[list[int], list[int]]:
        """Remove the hooks; per mkt row, the edits at the last prompt token and at generated tokens."""
        return self._mkt.end()

    def mkt_weights_digest(self) -> str:
        """Every parameter's name, shape and first values (this rank's shard), hashed."""
        digest = hashlib.sha256()
        for name, param in self.model_runner.get_model().named_parameters():
            digest.update(f"{name}:{tuple(param.shape)}".encode())
            digest.update(param.detach().reshape(-1)[:64].float().cpu().numpy().tobytes())
        return digest.hexdigest()[:16]
