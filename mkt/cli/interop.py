"""``mkt export`` / ``mkt import``: packs to and from llama.cpp control vectors and lm-eval steer files."""

from __future__ import annotations

from pathlib import Path

from mkt.cliargs import add_model_arguments, finite_float

FORMATS = ("gguf-control-vector", "lm-eval-steered")


def cmd_export(args) -> None:
    from mkt.pack import CapabilityPack

    pack = CapabilityPack.load(args.pack)
    if args.format == "gguf-control-vector":
        from mkt.interop.control_vector import export_control_vector

        path = export_control_vector(pack, args.out, args.model_hint)
        print(f"wrote {path}: llama.cpp control vector, layers {sorted(pack.layers or range(pack.key.n_layers))}, "
              f"alpha {pack.alpha} baked in (run with --control-vector {path})")
    else:
        from mkt.interop.lm_eval_steered import export_lm_eval_steered

        path = export_lm_eval_steered(pack, args.out, args.layer_module)
        print(f"wrote {path}: lm-eval steer file (--model steered --model_args pretrained=MODEL,steer_path={path})")


def cmd_import(args) -> None:
    from mkt.cli.options import load
    from mkt.interop.control_vector import import_control_vector
    from mkt.interop.llamacpp_rules import read_control_vector

    read_control_vector(args.file)  # a bad file says so before the model loads
    pack = import_control_vector(args.file, load(args, args.model), args.scale)
    out = pack.save(args.out)
    print(f"wrote {out}: mode constant, scope all, layers {pack.layers}, alpha {pack.alpha}")


def add_parsers(sub) -> None:
    """Add this module's verbs to the ``mkt`` subcommands ``sub``."""
    from mkt.cli.options import MODEL_HELP

    p = sub.add_parser("export", help="write a pack as a llama.cpp control vector or an lm-eval steer file")
    p.add_argument("pack", help="pack directory (mode constant, scope all: the only steering these tools run exactly)")
    p.add_argument("--format", choices=FORMATS, required=True, help="gguf-control-vector (llama.cpp, repeng) or "
                   "lm-eval-steered (lm-evaluation-harness's steered model, a .pt file)")
    p.add_argument("--out", required=True, help="file to write (.gguf or .pt)")
    p.add_argument("--model-hint", default=None, help="controlvector.model_hint (default: the Target's HF model_type)")
    p.add_argument("--layer-module", default="layers.{layer}",
                   help="lm-eval: block N's module under base_model (default layers.{layer}; GPT-2: h.{layer})")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import", help="read a llama.cpp / repeng control vector into a pack for a model")
    p.add_argument("file", help="the .gguf control vector")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="pack directory to write")
    p.add_argument("--scale", type=finite_float, default=1.0,
                   help="strength, as llama.cpp's --control-vector-scaled FILE SCALE (default 1)")
    add_model_arguments(p, batch_size=False)
    p.set_defaults(func=cmd_import)
