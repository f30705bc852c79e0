"""``mkt info``: describe a capability pack (its README.md, made fresh from the folder)."""

from __future__ import annotations


def cmd_info(args) -> None:
    from mkt.pack import CapabilityPack
    from mkt.pack_card import pack_card

    pack = CapabilityPack.load(args.pack)  # verified (hash, shapes) before it is described
    print(pack_card(args.pack), end="")
    norms = pack.key.norms()
    print(f"Key norms per layer: {' '.join(f'{x:.3g}' for x in norms.tolist())}")


def add_parsers(sub) -> None:
    """Add this module's verbs to the ``mkt`` subcommands ``sub``."""
    p = sub.add_parser("info", help="describe a capability pack")
    p.add_argument("pack", help="pack directory")
    p.set_defaults(func=cmd_info)
