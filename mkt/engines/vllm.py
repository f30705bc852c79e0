"""The vLLM engine: steered generation in a serving engine, on one device or many (tensor parallel).

Same semantics as the TransformerLens engine: mkt tokenizes (``TokensPrompt`` of
:func:`mkt.models.encode` ids, so both engines see the same ids), generation stops on every
EOS id of the tokenizer and generation config, stop strings cut the text where they first
begin (:func:`mkt.generation.stop_position`), and steering edits the residual stream after
each steered layer (TransformerLens ``blocks.{l}.hook_resid_post``) with the formulas of
:mod:`mkt.intervention`. Each request carries its own alpha and direction set, so an alpha
sweep, or a key and all its null draws, is one ``generate`` call.

What is pinned and checked. Hooks run only in eager mode (under torch.compile and CUDA graphs
they silently never run), so the engine always passes ``enforce_eager=True``; they read the
request layout of vLLM's V1 model runner, so it sets ``VLLM_USE_V2_MODEL_RUNNER=0``. After
every steered call each worker reports how many rows its hooks edited per request; fewer
than the call needs (every steered layer at the last prompt token, and at each generated
token for scope ``prompt-last+generated``) raises :class:`SteeringNotAppliedError` instead of
returning unsteered text.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import os
import re
import sys
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import torch

from mkt.engines.base import Engine
from mkt.errors import IncompatibleModelError, MktError
from mkt.generation import Generation, GenerationRequest, stop_position
from mkt.models import RESID_HOOK, ModelIdentity, encode, eos_token_ids
from mkt.steering import Steering

WORKER_EXTENSION = "mkt.engines.vllm_worker.SteeringWorker"
VLLM_SCOPES = ("prompt-last", "prompt-last+generated")  # what the workers' hooks implement


class SteeringNotAppliedError(MktError):
    """vLLM generated, but the steering hooks did not edit every row they had to."""


class VLLMEngine(Engine):
    """Generation through vLLM (``pip install 'mkt[vllm]'``; see docs/engines.md for CUDA builds).

    Args:
        model: hub name, local HF directory, or ``organism:NAME``.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        tensor_parallel_size: split the model over this many devices (vLLM's own tensor parallelism;
            multi-node through vLLM's Ray backend, ``distributed_executor_backend="ray"``).
        trust_remote_code: off unless asked for.
        seed: vLLM's global seed (per-request seeds decide samples).
        **options: passed to ``vllm.LLM`` (``max_model_len``, ``gpu_memory_utilization``, ...).
    """

    name = "vllm"

    def __init__(self, model: str | os.PathLike, dtype: str | torch.dtype = "float32", tensor_parallel_size: int = 1,
                 trust_remote_code: bool = False, seed: int = 0, **options) -> None:
        os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"  # the runner whose request state the hooks read
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig
        from vllm import LLM

        from mkt.checkpoints import resolve_model_path

        path = resolve_model_path(model)
        dtype = str(dtype).removeprefix("torch.")
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        _check_head_size(config)
        options = _kv_cache_on_cpu(_whole_prefills_on_cpu(options, config), config, dtype)
        try:
            generation_config = GenerationConfig.from_pretrained(path)
        except OSError:  # no generation_config.json: the tokenizer's EOS alone
            generation_config = None
        # the bridge's rule (tokenizer EOS + the generation config's list), on this engine's files
        files = SimpleNamespace(tokenizer=self.tokenizer, original_model=SimpleNamespace(generation_config=generation_config))
        self.eos_ids = eos_token_ids(files)
        with _root_cause_of_start_failure():
            self.llm = LLM(model=path, tokenizer=path, dtype=dtype, enforce_eager=True,
                           tensor_parallel_size=tensor_parallel_size, seed=seed, trust_remote_code=trust_remote_code,
                           worker_extension_cls=WORKER_EXTENSION, **{"max_logprobs": -1, **options})
        n_layers, d_model = self.llm.collective_rpc("mkt_install")[0]
        local = Path(path).expanduser()
        self.identity = ModelIdentity(
            name=local.resolve().name if local.is_dir() else path,
            architecture=(getattr(config, "architectures", None) or ["unknown"])[0],
            n_layers=n_layers, d_model=d_model, d_vocab=int(config.vocab_size))
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self._calls = itertools.count()

    def weights_digest(self) -> str:
        return self.llm.collective_rpc("mkt_weights_digest")[0]

    def run(self, prompts: list[str], request: GenerationRequest) -> list[Generation]:
        """See :meth:`Engine.run`; ``request.batch_size`` is left to vLLM's scheduler.

        ``record_entropy`` has vLLM return the whole distribution of every step (for analyses: slow
        on large vocabularies).
        """
        request.check(prompts)
        if request.logit_offset is not None:
            raise MktError("logit offsets (the logit-space transfer baseline) need the TransformerLens engine")
        outputs = self.submit(self.inputs(prompts, request), request.steering, request.progress)
        eos = set(self.eos_ids if request.eos_ids is None else request.eos_ids)
        return [self._generation(p, out.outputs[0], eos, request.stop, request.record_entropy)
                for p, out in zip(prompts, outputs)]

    def inputs(self, prompts: list[str], request: GenerationRequest) -> dict:
        """vLLM's inputs: ``prompts`` (``TokensPrompt``s), ``params`` (one per prompt), ``begin`` (the hooks' setup)."""
        from vllm import SamplingParams, TokensPrompt

        ids = [encode(self.tokenizer, p) for p in prompts]
        empty = [i for i, r in enumerate(ids) if not r]
        if empty:
            raise MktError(f"prompt {empty[0]} encodes to no tokens: pass a non-empty prompt")
        too_long = [i for i, r in enumerate(ids) if len(r) >= self.max_model_len]
        if too_long:
            i = too_long[0]
            raise MktError(f"prompt {i} is {len(ids[i])} tokens but the model's context is {self.max_model_len} "
                           f"({len(too_long)} prompt(s) too long): shorten the prompts or the template")
        max_new_tokens, steering, stop = request.max_new_tokens, request.steering, request.stop
        if max(map(len, ids)) + max_new_tokens > self.max_model_len:
            warnings.warn(f"prompt + max_new_tokens ({max_new_tokens}) exceeds the model's context "
                          f"({self.max_model_len}): long prompts get fewer new tokens", stacklevel=3)
        call = f"{uuid.uuid4().hex[:8]}-{next(self._calls)}"
        rows, begin = self._steering_rows(steering, len(prompts), call) if steering is not None else (None, None)
        params, inputs = [], []
        for i, row_ids in enumerate(ids):
            if not request.do_sample:
                sample_seed = None
            elif request.seeds is not None:
                sample_seed = int(request.seeds[i])
            else:  # one call's seed, a distinct stream per prompt
                sample_seed = int(hashlib.sha256(f"{request.seed}:{i}".encode()).hexdigest()[:15], 16)
            params.append(SamplingParams(
                max_tokens=min(max_new_tokens, self.max_model_len - len(row_ids)),
                temperature=request.temperature if request.do_sample else 0.0,
                top_p=request.top_p if request.do_sample and request.top_p else 1.0,
                seed=sample_seed, stop=list(stop) if stop else None,
                # exactly these ids end a row (the EOS rule above, or the caller's): vLLM's own EOS is ignored
                stop_token_ids=list(self.eos_ids if request.eos_ids is None else request.eos_ids), ignore_eos=True,
                logprobs=-1 if request.record_entropy else None, skip_special_tokens=True,
                extra_args={"mkt": rows[i]} if rows else None))
            prompt = TokensPrompt(prompt_token_ids=row_ids)
            if rows:  # a steered row's KV cache is its own: no prefix-cache hit across steerings
                prompt["cache_salt"] = f"mkt-{call}-{rows[i]['set']}-{rows[i]['alpha']!r}"
            inputs.append(prompt)
        return dict(prompts=inputs, params=params, begin=begin)

    def _steering_rows(self, steering: Steering, n_prompts: int, call: str) -> tuple[list[dict], tuple]:
        """One tag per prompt, and what the workers' hooks need (the distinct unit-direction sets)."""
        if steering.hook != RESID_HOOK:
            raise MktError(f"the vLLM engine steers at {RESID_HOOK} only, but this key lives at {steering.hook}: "
                           "generate with the TransformerLens engine (--engine transformer_lens)")
        if steering.scope not in VLLM_SCOPES:
            raise MktError(f"the vLLM engine steers with scopes {VLLM_SCOPES} only, not {steering.scope!r}: use one "
                           "of those or the TransformerLens engine (--engine transformer_lens)")
        if tuple(steering.directions.shape[-2:]) != (self.identity.n_layers, self.identity.d_model):
            raise IncompatibleModelError(
                f"directions are {tuple(steering.directions.shape)} but the model has {self.identity.n_layers} "
                f"layers of width {self.identity.d_model}: transfer the key into this model first (mkt.transfer)")
        units = steering._units[..., steering.layers, :]
        if steering.sets is not None:  # a table of sets: each travels once (a key and its nulls x alphas)
            table, sets = units, steering.sets.tolist()
        elif units.ndim == 2:
            table, sets = units[None], [0] * n_prompts
        else:  # per-prompt directions: each distinct set travels once
            table, inverse = torch.unique(units.reshape(n_prompts, -1), dim=0, return_inverse=True)
            table, sets = table.reshape(-1, *units.shape[1:]), inverse.tolist()
        alpha = steering.alpha
        alphas = alpha.tolist() if isinstance(alpha, torch.Tensor) and alpha.ndim == 1 else [float(alpha)] * n_prompts
        rows = [dict(call=call, row=i, set=s, alpha=float(a)) for i, (s, a) in enumerate(zip(sets, alphas))]
        # as bytes: vLLM's RPC from the client to its engine process turns tensors into lists
        table = table.float().contiguous()
        return rows, (call, table.numpy().tobytes(), list(table.shape), list(steering.layers), steering.mode,
                      steering.scope, n_prompts)

    def submit(self, inputs: dict, steering: Steering | None, progress: bool = False) -> list:
        """Generate ``inputs`` (from :meth:`inputs`); with steering, hooks on and their hits checked."""
        if steering is None:
            return self.llm.generate(inputs["prompts"], inputs["params"], use_tqdm=progress)
        self.llm.collective_rpc("mkt_begin", args=inputs["begin"])
        try:
            outputs = self.llm.generate(inputs["prompts"], inputs["params"], use_tqdm=progress)
        finally:
            hits = self.llm.collective_rpc("mkt_end")
        self._check_hits(hits, outputs, steering)
        return outputs

    def _check_hits(self, hits: list, outputs: list, steering: Steering) -> None:
        """Every rank edited every row at every steered layer: else the text is not steered, say so."""
        n_layers = len(steering.layers)
        every = steering.scope == "prompt-last+generated"
        # the last sampled token is never fed back, so n - 1 generated tokens pass through the layers
        need_gen = [n_layers * max(len(o.outputs[0].token_ids) - 1, 0) if every else 0 for o in outputs]
        for rank, (last, gen) in enumerate(hits):
            short = [i for i in range(len(outputs))
                     if (last[i] if i < len(last) else 0) < n_layers or (gen[i] if i < len(gen) else 0) < need_gen[i]]
            if short:
                i = short[0]
                raise SteeringNotAppliedError(
                    f"vLLM generated but the steering hooks missed {len(short)} of {len(outputs)} prompts on rank "
                    f"{rank} (prompt {i}: {last[i] if i < len(last) else 0} of {n_layers} last-token edits, "
                    f"{gen[i] if i < len(gen) else 0} of {need_gen[i]} generated-token edits): the model ran "
                    "compiled (torch.compile / CUDA graphs skip hooks) or under a model runner mkt does not "
                    "support. Nothing was returned unsteered.")

    def _generation(self, prompt: str, out, eos: set[int], stop: list[str] | None,
                    record_entropy: bool) -> Generation:
        token_ids = list(out.token_ids)
        stopped = out.finish_reason == "stop"
        if stopped and token_ids and token_ids[-1] in eos and not isinstance(out.stop_reason, str):
            token_ids.pop()  # the EOS ends the row and is not part of it, as in the TransformerLens engine
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        cut = stop_position(text, stop)
        entropies = []
        if record_entropy:
            for step in out.logprobs[: len(out.token_ids)]:
                logp = torch.tensor([lp.logprob for lp in step.values()], dtype=torch.float64)
                entropies.append(float(-(logp.exp() * logp).sum()))
        return Generation(prompt, text[:cut] if cut is not None else text, token_ids, stopped, entropies)


def _check_head_size(config) -> None:
    """vLLM's CPU attention takes a few head sizes only: say so in one line, before any process starts."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head not in supported:
        raise MktError(f"vLLM's CPU build cannot run this model: its attention head size is {head}, and the CPU "
                       f"attention supports {supported}; use the TransformerLens engine or a GPU build of vLLM")


KV_SHARE = 0.25  # of the memory available at start, at most, for the KV cache of the vLLM engine on CPU
KV_SEQUENCES = 32  # full-context sequences the default KV cache holds, when that fits in KV_SHARE


def _kv_cache_on_cpu(options: dict, config, dtype: str) -> dict:
    """On CPU, a KV cache sized from the model (unless ``kv_cache_memory_bytes``,
    ``gpu_memory_utilization`` or ``VLLM_CPU_KVCACHE_SPACE`` says otherwise).

    vLLM's CPU backend otherwise reserves 92% of the machine's memory and refuses to start when
    other work holds more than 8%. mkt asks for ``KV_SEQUENCES`` sequences of the full context,
    at most ``KV_SHARE`` of the memory available now, at least one sequence.
    """
    import psutil
    from vllm.platforms import current_platform

    chosen = {"kv_cache_memory_bytes", "gpu_memory_utilization"} & set(options)
    if not current_platform.is_cpu() or chosen or os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return options
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    element = torch.finfo(getattr(torch, dtype)).bits // 8
    per_token = 2 * config.num_hidden_layers * kv_heads * head * element
    context = options.get("max_model_len") or getattr(config, "max_position_embeddings", 4096)
    one = per_token * context
    size = max(one, min(KV_SEQUENCES * one, int(KV_SHARE * psutil.virtual_memory().available)))
    return dict(options, kv_cache_memory_bytes=size)


@contextmanager
def _root_cause_of_start_failure() -> Iterator[None]:
    """vLLM's engine starts in a child process, which prints why it failed and leaves the parent
    only "Engine core initialization failed": while it starts, stderr (the child's too) passes
    through a pipe whose lines are kept, and the last error line goes into mkt's one-line error.
    The children keep writing through the pipe afterwards; a thread forwards it to the real stderr."""
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    lines: collections.deque[str] = collections.deque(maxlen=400)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                os.write(real, line)
                lines.append(line.decode(errors="replace"))

    threading.Thread(target=forward, daemon=True, name="mkt-vllm-stderr").start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    except Exception as err:
        sys.stderr.flush()
        time.sleep(0.5)  # the child's last lines still in the pipe
        causes = [x.strip() for x in lines if re.match(r"\s*(?:\w+\.)*\w*(?:Error|Exception): ", x)]
        cause = next((c for c in reversed(causes) if "Engine core initialization failed" not in c),
                     f"{type(err).__name__}: {err}")
        raise MktError(f"vLLM's engine did not start: {cause} (mkt's vLLM engine takes kv_cache_memory_bytes=... and "
                       "max_model_len=...; or set VLLM_CPU_KVCACHE_SPACE=GiB)") from err
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)  # the parent writes to the real stderr again; the children keep the pipe


def _whole_prefills_on_cpu(options: dict, config) -> dict:
    """On CPU, prompts prefilled whole unless asked otherwise.

    vllm-cpu 0.32 fails seeded sampling when a request's prefill is split into chunks (it
    rewinds the request's generator, which CPU generators cannot), and chunks happen whenever
    more prompt tokens wait than one step takes.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or "enable_chunked_prefill" in options:
        return options
    longest = options.get("max_model_len") or getattr(config, "max_position_embeddings", 4096)
    return dict(options, enable_chunked_prefill=False,
                max_num_batched_tokens=max(options.get("max_num_batched_tokens", 4096), longest))
