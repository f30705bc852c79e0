"""``mkt generate``: generate, optionally steered by a pack."""

from __future__ import annotations

import json
import sys

from mkt.cli.options import MODEL_HELP, check_chat, check_engine, engine_args, generator
from mkt.cliargs import add_model_arguments, finite_float, positive_float, positive_int, stop_string


def cmd_generate(args) -> None:
    from mkt.pack import CapabilityPack
    from mkt.prompts import read_questions

    check_engine(args)
    if args.prompt is None and args.prompts is None:
        raise ValueError("nothing to generate from: give --prompt TEXT or --prompts FILE")
    prompts = [args.prompt] if args.prompt is not None else read_questions(args.prompts, args.field)
    pack = CapabilityPack.load(args.pack) if args.pack else None  # bad files: before the model loads
    model = generator(args, args.model)
    if args.chat:
        from mkt.prompts import apply_chat

        check_chat(model, True, "--chat")
        prompts = [apply_chat(model.tokenizer, p) for p in prompts]
    steering = None
    if pack is not None:
        pack.check_fits(model)
        steering = pack.steering(args.alpha)
    gens = model.generate(prompts, args.max_new_tokens, steering, do_sample=args.sample, temperature=args.temperature,
                          seed=args.seed, stop=args.stop, batch_size=args.batch_size, progress=True)
    out = open(args.out, "w") if args.out else None
    for g in gens:
        rec = dict(prompt=g.prompt, output=g.text, n_tokens=g.n_tokens)
        print(json.dumps(rec), file=out or sys.stdout)
    if out:
        out.close()
        print(f"wrote {len(gens)} generations to {args.out}")


def add_parsers(sub) -> None:
    """Add this module's verbs to the ``mkt`` subcommands ``sub``."""
    p = sub.add_parser("generate", help="generate, optionally steered by a pack")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--pack", default=None, help="capability pack directory")
    p.add_argument("--alpha", type=finite_float, default=None, help="override the pack's alpha")
    p.add_argument("--prompt", default=None, help="one prompt")
    p.add_argument("--prompts", default=None, help="file of prompts: .jsonl (field --field; prompts may span lines) or UTF-8 text, one prompt per line")
    p.add_argument("--field", default="question", help="JSONL field holding the prompt")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--stop", type=stop_string, nargs="+", default=None,
                   help="stop strings, matched anywhere in the decoded text (generation also stops on every EOS id "
                   "of the tokenizer and generation_config.json)")
    p.add_argument("--chat", action="store_true", help="put each prompt inside the model's chat template")
    p.add_argument("--out", default=None, help="JSONL file to write (default stdout)")
    add_model_arguments(p), engine_args(p)
    p.set_defaults(func=cmd_generate)
