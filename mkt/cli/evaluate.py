"""``mkt eval``: score a model on a task, optionally steered, optionally against the pack's null."""

from __future__ import annotations

import json
from pathlib import Path

from mkt.artifacts import replace_atomically
from mkt.cli.options import MODEL_HELP, TASK_HELP, check_chat, check_engine, engine_args, generator, load
from mkt.cliargs import (
    add_model_arguments,
    finite_float,
    nonnegative_int,
    positive_float,
    positive_int,
    stop_string,
)


def task_examples(args, split: str, limit: int | None, seed: int = 0):
    from mkt.eval.tasks import load_task

    return load_task(args.task, args.kind, limit, split=split, seed=seed)


def few_shot_demos(args, n_evaluated: int):
    """Few-shot demos that are not evaluated: the organism's dev split, or a task file's last items."""
    if args.task == "organism":
        return task_examples(args, "dev", args.few_shot, seed=1)
    pool = task_examples(args, "test", None)
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

    check_engine(args)
    examples = task_examples(args, "test", args.limit)
    kind = examples[0].kind
    template = template_for(kind, args.template)
    demos = few_shot_demos(args, len(examples)) if args.few_shot else []
    decoding_defaults(args, kind)
    model = generator(args, args.model)
    check_chat(model, args.chat, "--chat")
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
        source = load(args, args.logit_transfer_from)
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


def decoding_defaults(args, kind: str) -> None:
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
        dev = task_examples(args, "dev", args.dev_size)
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
    replace_atomically(Path(args.out) / "significance.json", json.dumps(sig.summary(), indent=1))
    print(f"against {args.null_seeds} subspace-matched null draws (alpha chosen on {len(dev)} dev examples):")
    print(sig.table())
    print(f"  the key {'beats' if sig.significant() else 'does NOT beat'} the subspace-matched null at p < 0.05 "
          f"(that null only; see docs/significance.md); wrote {Path(args.out) / 'significance.json'}")


def add_parsers(sub) -> None:
    """Add this module's verbs to the ``mkt`` subcommands ``sub``."""
    p = sub.add_parser("eval", help="evaluate a model on a task, optionally steered by a pack")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--task", required=True, help=TASK_HELP)
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
    add_model_arguments(p), engine_args(p)
    p.set_defaults(func=cmd_eval)
