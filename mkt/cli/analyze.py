"""``mkt analyze NAME``: run one of the analyses."""

from __future__ import annotations

import argparse

ANALYSES = ("ablation", "logit_lens", "entropy", "similarity", "atomic")


def cmd_analyze(args) -> None:
    import importlib

    importlib.import_module(f"analyses.{args.analysis}").run(args)


def add_parsers(sub) -> None:
    """Add this module's verbs to the ``mkt`` subcommands ``sub``."""
    p = sub.add_parser("analyze", help="run an analysis (ablation, logit_lens, entropy, similarity, atomic)")
    analyses = p.add_subparsers(dest="analysis", required=True)
    import importlib

    for name in ANALYSES:
        module = importlib.import_module(f"analyses.{name}")
        a = analyses.add_parser(name, help=module.__doc__.strip().splitlines()[0],
                                description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(a)
        a.set_defaults(func=cmd_analyze)
