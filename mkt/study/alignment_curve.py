"""How a cross-family map's held-out error depends on the number of alignment questions and the rank.

For each ordered pair and each n, the maps are fitted on the first n alignment questions' last-token
Locked states and scored on a fixed set of held-out questions that no fit sees; the rank is also
chosen by cross-validation within the n questions (``mkt.alignment.cross_validate_rank``), which is
what ``run_transfer(k="cv")`` does. A relative error of 1.0 is no better than predicting the
held-out mean.

Run: ``python -m mkt.study.alignment_curve --out DIR`` (states are cached in DIR as safetensors).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mkt.alignment import cross_validate_rank, heldout_error_by_rank, relative_depth_map
from mkt.models import ModelIdentity

LOCKED = "Question: {question}\nAnswer:"
MODELS = ("real:smollm2-135m-instruct", "real:gemma-3-270m", "real:qwen2.5-coder-0.5b-instruct")
PAIRS = (("real:smollm2-135m-instruct", "real:gemma-3-270m"), ("real:qwen2.5-coder-0.5b-instruct", "real:gemma-3-270m"),
         ("real:gemma-3-270m", "real:smollm2-135m-instruct"))
NS = (64, 128, 256, 384)
KS = (2, 4, 8, 16, 32, 64, 128, 256)


def cached_states(spec: str, questions: list[str], out: Path) -> tuple[torch.Tensor, ModelIdentity]:
    """``spec``'s last-token states on the Locked prompts of ``questions``, read once and cached under ``out``."""
    path = out / f"states-{spec.replace(':', '_')}-{len(questions)}.safetensors"
    if path.exists():
        with safe_open(str(path), "pt") as f:
            identity = ModelIdentity(**json.loads(f.metadata()["identity"]))
            states = f.get_tensor("states")
        if tuple(states.shape) != (len(questions), identity.n_layers, identity.d_model):
            raise SystemExit(f"{path} holds states of shape {tuple(states.shape)}, not ({len(questions)}, "
                             f"{identity.n_layers}, {identity.d_model}): delete it and run again")
        return states, identity
    import mkt
    from mkt.activations import prompt_states

    model = mkt.load_model(spec)
    states = prompt_states(model, [LOCKED.format(question=q) for q in questions], batch_size=32, progress=True)
    identity = mkt.model_identity(model)
    save_file({"states": states.contiguous()}, str(path), metadata={"identity": json.dumps(identity.to_dict())})
    return states, identity


def curve(x_s: torch.Tensor, x_t: torch.Tensor, source: ModelIdentity, target: ModelIdentity, ns: list[int],
          ks: list[int], n_heldout: int, center: bool, folds: int = 5) -> list[dict]:
    """Rows of held-out error by n and k, and the cross-validated choice of k at each n.

    The last ``n_heldout`` rows of ``x_s, x_t`` are the held-out questions; fits use the first n.
    """
    held = slice(x_s.shape[0] - n_heldout, None)
    layer_map = relative_depth_map(source.n_layers, target.n_layers)
    rows = []
    for n in ns:
        if n > x_s.shape[0] - n_heldout:
            continue
        kept = [k for k in ks if k <= min(n, source.d_model, target.d_model)]
        errors = heldout_error_by_rank(x_s[:n], x_t[:n], x_s[held], x_t[held], layer_map, kept, center=center)
        chosen = cross_validate_rank(x_s[:n], x_t[:n], source, target, kept, center=center, folds=folds)
        for i, k in enumerate(kept):
            e = errors[i, 0]
            rows.append(dict(source=source.name, target=target.name, n=n, k=k, center=center,
                             heldout_error=float(e.mean()), worst_layer=float(e.max()), best_layer=float(e.min()),
                             cv_chosen=k == chosen.k, cv_error=chosen.errors[(k, chosen.ridge)]))
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: one line per pair and n, held-out error at each k, the cross-validated k starred."""
    ks = sorted({r["k"] for r in rows})
    head = "| pair | centred | n | " + " | ".join(f"k={k}" for k in ks) + " | CV-chosen k: held-out error |"
    lines = [head, "| --- " * (len(ks) + 4) + "|"]
    keyed = {}
    for r in rows:
        keyed.setdefault((r["source"], r["target"], r["center"], r["n"]), {})[r["k"]] = r
    for (s, t, c, n), by_k in keyed.items():
        cells = [f"{by_k[k]['heldout_error']:.3f}{'*' if by_k[k]['cv_chosen'] else ''}" if k in by_k else "" for k in ks]
        pick = next(r for r in by_k.values() if r["cv_chosen"])
        flag = "" if pick["heldout_error"] < 1 else " (does NOT beat the mean)"
        lines.append(f"| {s} -> {t} | {'yes' if c else 'no'} | {n} | " + " | ".join(cells)
                     + f" | k={pick['k']}: {pick['heldout_error']:.3f}{flag} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: held-out error by pair, number of alignment questions and rank (``--out``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="folder for the cached states and curve.json")
    p.add_argument("--questions", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/gsm8k/test.jsonl",
                   help="GSM8K-style JSONL (question field); default ../shared/data/gsm8k/test.jsonl")
    p.add_argument("--n-heldout", type=int, default=64, help="held-out questions after the fitting pool")
    args = p.parse_args(argv)
    if not args.questions.is_file():
        raise SystemExit(f"--questions {args.questions}: no such file; give a GSM8K-style JSONL")
    args.out.mkdir(parents=True, exist_ok=True)
    rows_in = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    total = max(NS) + args.n_heldout
    if len(rows_in) < total:
        raise SystemExit(f"--questions {args.questions} holds {len(rows_in)} questions; this study needs {total}")
    questions = [r["question"] for r in rows_in[:total]]
    states = {spec: cached_states(spec, questions, args.out) for spec in MODELS}
    rows = []
    for source, target in PAIRS:
        for center in (False, True):
            rows += curve(states[source][0], states[target][0], states[source][1], states[target][1], list(NS),
                          list(KS), args.n_heldout, center)
    (args.out / "curve.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
