"""The ``mkt`` command line. Each subcommand is a thin layer over the library; each module here adds its verbs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mkt.cli import analyze, evaluate, generate, info, interop, models, organisms, sweep, transfer
from mkt.errors import one_line

VERBS = (transfer, generate, info, evaluate, sweep, analyze, organisms, models, interop)  # in the order `mkt --help` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mkt", description="Master Key Transfer: extract a capability direction "
                                     "from a Source model, align it into a Target, and apply it at inference.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in VERBS:
        module.add_parsers(sub)
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
    except (ValueError, FileNotFoundError) as err:  # a refusal: MktError is a ValueError
        print(f"mkt {name}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mkt {name}: interrupted; everything written so far is kept", file=sys.stderr)
        return 130
    except Exception as err:  # an unanticipated failure (a KeyError too): one line, the traceback on request
        if args.debug:
            raise
        print(f"mkt {name}: unexpected error: {type(err).__name__}: {one_line(err)} (rerun with --debug for the "
              "traceback)", file=sys.stderr)
        return 1
    return 0

