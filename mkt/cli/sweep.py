"""``mkt sweep``: choose alpha, k, n and layers on dev; report on test with baselines and the null."""

from __future__ import annotations

from mkt.cli.evaluate import decoding_defaults, task_examples
from mkt.cli.options import (
    MODEL_HELP,
    TASK_HELP,
    check_chat,
    check_engine,
    engine_args,
    formats,
    generator,
    load,
    questions_of,
    two_format_args,
)
from mkt.cliargs import add_model_arguments, layer_subset, nonnegative_int, positive_float, positive_int, stop_string


def cmd_sweep(args) -> None:
    from mkt.eval.sweep import SweepSpec, run_sweep
    from mkt.eval.tasks import template_for

    check_engine(args)
    for flag, values in (("--alphas", args.alphas), ("--ks", args.ks), ("--ns", args.ns), ("--layers", args.layers)):
        if len(set(values)) != len(values):
            raise ValueError(f"{flag} lists a value twice ({' '.join(map(str, values))}): give each once")
    if args.task == "organism":
        dev, test = task_examples(args, "dev", args.dev_size), task_examples(args, "test", args.test_size)
        pool = [e.question for e in task_examples(args, "train", max(args.ns), seed=2)]
    else:  # one file: disjoint dev and test slices; the rest are unlabeled queries
        examples = task_examples(args, "test", None)
        dev, test = examples[: args.dev_size], examples[args.dev_size : args.dev_size + args.test_size]
        pool = [e.question for e in examples[args.dev_size + args.test_size :]]
    if not dev or not test:
        raise ValueError(f"{args.task} leaves {len(dev)} dev and {len(test)} test examples for --dev-size "
                         f"{args.dev_size} and --test-size {args.test_size}: lower them or give a larger task file")
    kind = test[0].kind
    style = dict(locked=template_for(kind, args.locked).text,
                 unlocked=template_for(kind, args.unlocked).text if args.unlocked else None)
    if args.target_locked:
        args.target_locked = template_for(kind, args.target_locked).text
    if args.target_unlocked:
        args.target_unlocked = template_for(kind, args.target_unlocked).text
    locked, unlocked, target_locked, target_unlocked = formats(args, style["locked"], style["unlocked"]).all()
    decoding_defaults(args, kind)
    questions = questions_of(args) if args.questions else pool
    spec = SweepSpec(tuple(args.alphas), tuple(args.ks), tuple(args.ns), tuple(args.layers), args.alignment_set,
                     args.method, args.center, args.aggregator, args.mode, args.max_new_tokens, args.batch_size,
                     args.null_seeds, tuple(args.stop))
    source, target = load(args, args.source), load(args, args.target)
    check_chat(source, args.source_chat, "--source-chat"), check_chat(target, args.target_chat, "--target-chat")
    engine = generator(args, args.target, target)  # with vLLM the Target is loaded twice: bridge and engine
    post = load(args, args.post_model) if args.post_model else None
    unlocked_model = load(args, args.unlocked_model) if args.unlocked_model else None
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


def add_parsers(sub) -> None:
    """Add this module's verbs to the ``mkt`` subcommands ``sub``."""
    p = sub.add_parser("sweep", help="choose alpha, k, n and layers on dev; report on test with baselines")
    p.add_argument("--source", required=True, help=MODEL_HELP + "; the Locked variant for model-induced keys")
    p.add_argument("--target", required=True, help=MODEL_HELP)
    p.add_argument("--task", required=True, help=TASK_HELP)
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
    p.add_argument("--layers", type=layer_subset, nargs="+", default=[None],
                   help="layer subsets: 'all' or dash-joined layer indices, e.g. 0-1-2 (default all)")
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
    two_format_args(p, "--locked/--unlocked"), add_model_arguments(p), engine_args(p)
    p.set_defaults(func=cmd_sweep)
