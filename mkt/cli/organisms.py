"""The organisms' verbs: ``mkt demo`` (the whole transfer on them) and ``mkt organisms list|train``."""

from __future__ import annotations

import json
from pathlib import Path

from mkt.cli.options import check_engine, engine_args
from mkt.cliargs import positive_float, positive_int


def cmd_demo(args) -> None:
    from mkt.organisms.demo import run_demo

    check_engine(args)
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


def add_parsers(sub) -> None:
    """Add this module's verbs to the ``mkt`` subcommands ``sub``."""
    p = sub.add_parser("demo", help="the whole transfer on the built-in organisms (CPU, minutes)")
    p.add_argument("--out", default="runs/demo", help="where to write results.json and the plot (default runs/demo)")
    p.add_argument("--n-test", type=positive_int, default=200, help="held-out test prompts per condition (default 200)")
    p.add_argument("--quick", action="store_true", help="fewer prompts and conditions (a smoke run)")
    p.add_argument("--alphas", type=positive_float, nargs="+", default=[0.05, 0.1, 0.2, 0.5],
                   help="alpha grid every condition chooses from on dev (default: the paper's 0.05 0.1 0.2 0.5)")
    engine_args(p)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("organisms", help="list or train the model organisms")
    p.add_argument("action", choices=["list", "train"])
    p.add_argument("--only", nargs="+", default=None, help="organisms to train (default all, parents first)")
    p.add_argument("--steps", type=positive_int, default=None, help="override the training steps (short runs)")
    p.add_argument("--out", default=None, help="directory to write the zoo to (default: the package's zoo)")
    p.set_defaults(func=cmd_organisms)
