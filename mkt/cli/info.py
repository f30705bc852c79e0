"""``mkt info``: describe a capability pack."""

from __future__ import annotations


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


def add_parsers(sub) -> None:
    """Add this module's verbs to the ``mkt`` subcommands ``sub``."""
    p = sub.add_parser("info", help="describe a capability pack")
    p.add_argument("pack", help="pack directory")
    p.set_defaults(func=cmd_info)
