"""``mkt analyze NAME``: run one of the analyses, dispatched through their registry."""

from __future__ import annotations

import argparse

from analyses.registry import ANALYSES


def cmd_analyze(args: argparse.Namespace) -> None:
    analysis = ANALYSES[args.analysis]
    analysis.run(analysis.options_from(args))


def add_parsers(sub) -> None:
    """Add this module's verbs to the ``mkt`` subcommands ``sub``."""
    p = sub.add_parser("analyze", help=f"run an analysis ({', '.join(ANALYSES)})")
    analyses = p.add_subparsers(dest="analysis", required=True)
    for name, analysis in ANALYSES.items():
        a = analyses.add_parser(name, help=analysis.summary, description=analysis.description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        analysis.add_arguments(a)
        a.set_defaults(func=cmd_analyze)
