"""The method's verbs: ``extract`` a key, ``align`` two models, ``transfer`` a key into a pack."""

from __future__ import annotations

import json
from pathlib import Path

from mkt.artifacts import replace_atomically
from mkt.cli.options import (
    MODEL_HELP,
    align_args,
    apply_args,
    check_chat,
    formats,
    key_args,
    load,
    questions_of,
    read_at_args,
    two_format_args,
)
from mkt.cliargs import add_model_arguments, fraction, positive_int


def cmd_extract(args) -> None:
    from mkt.extract import extract_model_key, extract_prompt_key
    from mkt.models import check_layers
    from mkt.pack import CapabilityPack
    from mkt.prompts import PromptFormat, PromptTemplate

    if not (args.unlocked_model or args.unlocked):
        raise ValueError("give --unlocked TEMPLATE (a prompt-induced key) or --unlocked-model M (a model-induced key)")
    locked = PromptFormat(PromptTemplate(args.locked), chat=args.chat)  # bad templates and files: before any load
    unlocked = None if args.unlocked_model else PromptFormat(PromptTemplate(args.unlocked), chat=args.chat)
    qs = questions_of(args)
    model = load(args, args.model)
    check_layers(args.layers, model.cfg.n_layers)  # before the slow work
    check_chat(model, args.chat, "--chat")
    if args.unlocked_model:
        key = extract_model_key(load(args, args.unlocked_model), model, qs, locked, args.aggregator,
                                args.batch_size, True, args.hook, args.position)
    else:
        key = extract_prompt_key(model, qs, locked, unlocked, args.aggregator, args.batch_size, True, args.hook,
                                 args.position)
    pack = CapabilityPack(key, args.alpha, args.mode, args.scope, args.layers)
    print(f"key for {key.model.name}: {key.n_layers} layers x {key.d_model}, n={len(qs)}; wrote {pack.save(args.out)}")


def cmd_align(args) -> None:
    from mkt.pipeline import align_models

    fmts = formats(args, args.locked, args.unlocked)  # bad templates: now
    source, target = load(args, args.source), load(args, args.target)
    check_chat(source, args.source_chat, "--source-chat"), check_chat(target, args.target_chat, "--target-chat")
    al = align_models(source, target, questions_of(args), fmts, args.alignment_set, args.k, args.method, args.center,
                      args.ridge, args.hook, args.position, args.batch_size, progress=True)
    al.save(args.out)
    err = al.diagnostics["fit_relative_error"]
    print(f"alignment {al.source.name} -> {al.target.name}, k={al.k}, n={al.n}, method={al.method}: "
          f"mean fit error {sum(err) / len(err):.3f}; wrote {args.out}")


def cmd_transfer(args) -> None:
    from mkt.extract import extract_prompt_key
    from mkt.models import check_layers
    from mkt.pack import CapabilityPack
    from mkt.pipeline import ORACLE_NOTE, run_transfer

    locked, unlocked, target_locked, target_unlocked = formats(args, args.locked, args.unlocked).all()  # bad templates: now
    source, target = load(args, args.source), load(args, args.target)
    check_layers(args.layers, target.cfg.n_layers)  # before the slow work: the pack would refuse them at the end
    check_chat(source, args.source_chat, "--source-chat"), check_chat(target, args.target_chat, "--target-chat")
    qs = questions_of(args)
    unlocked_model = load(args, args.unlocked_model) if args.unlocked_model else None
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
    replace_atomically(Path(args.out) / "transfer_report.json", json.dumps(s, indent=1))
    print(f"wrote {args.out}")


def add_parsers(sub) -> None:
    """Add this module's verbs to the ``mkt`` subcommands ``sub``."""
    p = sub.add_parser("extract", help="extract a MasterKey from one model and save it as a pack")
    p.add_argument("--model", required=True, help=MODEL_HELP + "; the Locked variant for model-induced keys")
    key_args(p), apply_args(p), add_model_arguments(p)
    p.add_argument("--chat", action="store_true", help="put the templates inside the model's chat template")
    p.add_argument("--out", required=True, help="pack directory to write")
    p.set_defaults(func=cmd_extract)
    p = sub.add_parser("align", help="fit a Source -> Target subspace alignment")
    p.add_argument("--source", required=True, help=MODEL_HELP)
    p.add_argument("--target", required=True, help=MODEL_HELP)
    p.add_argument("--questions", required=True, help="questions: a .jsonl file (field --field; use it when questions span lines) or any other file, read as UTF-8 text with one question per line")
    p.add_argument("--field", default="question", help="JSONL field holding the question")
    p.add_argument("--locked", required=True, help="Locked template with {question}")
    p.add_argument("--unlocked", default=None, help="Unlocked template (needed for --alignment-set oracle-unlocked)")
    p.add_argument("--max-questions", type=positive_int, default=None, help="use only the first N questions")
    read_at_args(p)
    align_args(p), two_format_args(p), add_model_arguments(p)
    p.add_argument("--out", required=True, help="alignment file to write (.safetensors)")
    p.set_defaults(func=cmd_align)
    p = sub.add_parser("transfer", help="extract on the Source, align, and write a pack for the Target")
    p.add_argument("--source", required=True, help=MODEL_HELP + "; the Locked variant for model-induced keys")
    p.add_argument("--target", required=True, help=MODEL_HELP)
    key_args(p), align_args(p), two_format_args(p), apply_args(p), add_model_arguments(p)
    p.add_argument("--heldout-fraction", type=fraction, default=0.2,
                   help="share of questions kept out of the alignment fit to measure its error (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    p.add_argument("--out", required=True, help="pack directory to write")
    p.set_defaults(func=cmd_transfer)
