"""`mkt demo`: the whole UNLOCK method on the built-in organisms, with the nulls that could fake it.

For each Source -> Target pair: extract the Source's prompt key (cue minus plain), align
the two models by the paper's protocol (a rank-k least-squares map fitted on Locked
prompts only, zero-centred), transfer, and test the transferred key against

- a subspace-matched null: random Source directions pushed through the same map
  (``N_NULL`` draws); the key's p-value is the share of draws whose effect reaches its own;
- controls that must NOT pass: a Target-only search (the Target's own top principal
  directions of its Locked states, either sign, the best chosen on dev: no Source at all),
  a Target-only contrast of its Locked prompts with many vs few style markers (no Source,
  no cue),
  a Source-free pipeline (the same steps from random-init Sources), a nuisance direction
  (4-term minus 3-term problems, the axis that fooled the first organisms) through the same
  map, and isotropic random Target directions;
- oracles, shown apart: the Target's own key, and a map fitted on the Target's own
  Unlocked states (which returns the own key).

Every condition gets the same procedure: alpha chosen on dev prompts, effect (rate minus
the unsteered baseline) measured on held-out test prompts, greedy decoding. The default
seed (1) draws dev and test prompts that were not looked at while the demo was designed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mkt.activations import last_token_resid
from mkt.alignment import transfer
from mkt.artifacts import make_directory
from mkt.controls import target_principal_keys
from mkt.engines import as_engine
from mkt.eval.organism_task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, Problem, problems, score_answer
from mkt.extract import extract_contrast_key, extract_prompt_key
from mkt.models import load_model, load_random_init, model_identity
from mkt.organisms.keys import DEMO_SEED, FIT, RANK
from mkt.organisms.zoo import organism_path
from mkt.pipeline import run_transfer
from mkt.significance import ALPHAS, Decoding, Probe, assess_transfer, format_p_value
from mkt.significance.report import CUE

METRICS = ("clean_step_by_step", "correct")  # the first chooses alpha and decides significance
MAX_NEW_TOKENS = 40
N_NULL = 24  # p-values down to 1/25
N_PCS = 8  # the Target-only search tries +-PC1..8 (the key lies almost wholly in the top 16)
N_SOURCE_FREE = 3
OWN_KEY = "Target's own key"  # the name mkt.significance gives the own key's condition
NUISANCE = "nuisance: 4-term minus 3-term, same map"
SOURCE_FREE = "Source-free pipeline (random-init Source {})"
PC_SEARCH = f"Target-only: best of +-PC1..{N_PCS} on dev"
MARKER_CONTRAST = "Target-only: many-w minus few-w Locked prompts"


def organism_probe(probs: list[Problem], cue: bool = False) -> Probe:
    """Prompts of ``probs`` (plain unless ``cue``) scored by the task's metrics."""

    def score(texts: list[str]) -> dict[str, list[bool]]:
        scores = [score_answer(t, p) for t, p in zip(texts, probs)]
        return {m: [getattr(s, m) for s in scores] for m in ("clean_step_by_step", "any_step_by_step", "correct")}

    return Probe([p.prompt(cue) for p in probs], score)


@dataclass
class Pair:
    """One Source -> Target pair of the demo and its label in the table."""
    source: str
    target: str
    label: str


PAIRS = (
    Pair("source-base", "target-base", "small -> large (same family)"),
    Pair("source-base", "target-family", "small -> large (Qwen2 -> Llama)"),
    Pair("source-base", "target-nonatomic", "into a Target without the latent capability"),
    Pair("target-base", "source-base", "large -> small (reverse)"),
)


def run_demo(out_dir: str | Path = "runs/demo", n_test: int = 200, n_dev: int = 32, quick: bool = False,
             seed: int = DEMO_SEED, n_null: int = N_NULL, k: int = RANK,
             alphas: tuple[float, ...] = ALPHAS, engine: str = "transformer_lens",
             tensor_parallel_size: int = 1) -> dict:
    """Run the demo; print a table per pair; write ``results.json``, ``results.md`` and ``demo.png``.

    ``engine="vllm"`` generates on each Target with vLLM (loaded beside its bridge, which still
    gives the activations); vLLM's CPU build cannot run the organisms (head sizes 16 and 24).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars say nothing here
    torch.manual_seed(seed)
    start = time.time()
    out = Path(out_dir)
    make_directory(out, "the demo's results")
    if quick:
        n_test, n_dev, n_null = min(n_test, 64), min(n_dev, 16), min(n_null, 8)
    pairs = PAIRS[1:3] if quick else PAIRS
    names = sorted({n for p in pairs for n in (p.source, p.target)})
    models = {n: load_model(organism_path(n), device="cpu") for n in names}
    if engine == "vllm":
        from mkt.engines import VLLMEngine

        targets = sorted({p.target for p in pairs})
        engines = {n: VLLMEngine(organism_path(n), tensor_parallel_size=tensor_parallel_size) for n in targets}
    else:
        engines = {n: as_engine(m) for n, m in models.items()}
    key_q = [p.question for p in problems(256, "train", seed=1)]
    align_probs = problems(320, "train", seed=2)
    align_q = [p.question for p in align_probs]
    dev, test = problems(n_dev, "dev", seed=seed), problems(n_test, "test", seed=seed)
    long_q = [p.prompt(False) for p in align_probs if len(p.terms) == 4]
    short_q = [p.prompt(False) for p in align_probs if len(p.terms) == 3]
    many_w = [p.prompt(False) for p in align_probs if p.style_evidence >= 6]
    few_w = [p.prompt(False) for p in align_probs if p.style_evidence <= 2]
    decoding = Decoding(max_new_tokens=MAX_NEW_TOKENS, batch_size=256)

    results: dict = dict(n_test=n_test, n_dev=n_dev, n_null=n_null, k=k, fit=FIT, alphas=list(alphas),
                         metrics=list(METRICS), pairs={})
    for pair in tqdm(pairs, desc="demo: Source -> Target pairs"):
        src, tgt = models[pair.source], models[pair.target]
        common = dict(k=k, center=True, heldout_fraction=0.2, seed=seed, method=FIT)
        report = run_transfer(src, tgt, key_q, align_q, LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, **common)
        own = extract_prompt_key(tgt, key_q, LOCKED_TEMPLATE, UNLOCKED_TEMPLATE)
        oracle = run_transfer(src, tgt, key_q, align_q, LOCKED_TEMPLATE, UNLOCKED_TEMPLATE,
                              alignment_set="oracle-unlocked", source_key=report.source_key, **common)
        controls = {NUISANCE: transfer(extract_contrast_key(src, long_q, short_q), report.alignment)}
        for i in range(N_SOURCE_FREE):
            free = run_transfer(load_random_init(organism_path(pair.source), seed=seed + i), tgt, key_q, align_q,
                                LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, **common)
            controls[SOURCE_FREE.format(i)] = free.target_key
        controls[MARKER_CONTRAST] = extract_contrast_key(tgt, many_w, few_w)
        x_locked = last_token_resid(tgt, [LOCKED_TEMPLATE.format(question=q) for q in align_q])
        pcs = target_principal_keys(x_locked, model_identity(tgt), N_PCS)
        sig = assess_transfer(
            engines[pair.target], report.source_key, report.alignment, organism_probe(dev), organism_probe(test), METRICS,
            n_null=n_null, n_isotropic=2, controls=controls, searches={PC_SEARCH: pcs},
            oracles={"map fitted on Target-Unlocked (oracle)": oracle.target_key}, own_key=own,
            alphas=alphas, decoding=decoding, seed=seed, cue=organism_probe(test, cue=True),
        )
        summary = sig.summary()
        summary["diagnostics"]["mean_heldout_error"] = report.summary()["mean_heldout_error"]
        summary["diagnostics"]["cosine_with_target_pcs"] = {n: report.target_key.cosine(pc).tolist()
                                                            for n, pc in pcs.items() if n.startswith("+")}
        summary["label"] = pair.label
        _print_pair(pair, f"Locked-only alignment, {FIT} fit", sig, summary)
        results["pairs"][f"{pair.source} -> {pair.target}"] = summary
    results["seconds"] = round(time.time() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(results_table(results))
    plot_demo(results, out / "demo.png")
    print(f"\nwrote {out / 'results.json'}, {out / 'results.md'} and {out / 'demo.png'} ({results['seconds']} s)")
    return results


def _print_pair(pair: Pair, what: str, sig, summary: dict) -> None:
    d = summary["diagnostics"]
    cos = d.get("cosine_with_own_key", [])
    lines = [f"\n== {pair.source} -> {pair.target}: {pair.label}; {what} ==",
             f"  k={d['k']}, coverage {d['mean_coverage']:.2f}, cos(transferred, own key) per layer (diagnostic) "
             + " ".join(f"{c:+.2f}" for c in cos)]
    lines += [sig.table(), "  beats the subspace-matched null (p < 0.05; read the controls too): "
              + ", ".join(f"{m}: {'yes' if v else 'no'}" for m, v in summary["significant"].items())]
    tqdm.write("\n".join(lines))


def _cell(row: dict) -> str:
    return f"{row['clean_step_by_step']:.1%} / {row['correct']:.1%}"


def _key_cell(sig: dict) -> str:
    """The key's rates, its p-values against its null, and the null's best draw."""
    key, base = sig["rows"][sig["key"]], sig["rows"]["baseline"]
    ps = " / ".join(format_p_value(key[f"{m}_p_vs_null"], sig["n_null"]) for m in sig["metrics"])
    best = " / ".join(f"{max(sig['null'][m]['effects']) + base[m]:.1%}" for m in sig["metrics"])
    return f"**{_cell(key)}** (p {ps}; null max {best})"


def results_table(results: dict) -> str:
    """The README's table: clean step-by-step / accuracy on plain test prompts, p-values against the null."""
    head = (f"| Source -> Target | baseline | cue (ceiling) | transferred key, paper protocol ({results['fit']}) "
            f"| Target-only PC search | Target-only marker contrast | Source-free (best of {N_SOURCE_FREE}) "
            f"| own key (oracle) |")
    lines = [head, "|" + " --- |" * 8]
    for name, pair in results["pairs"].items():
        rows = pair["rows"]
        free = max((rows[SOURCE_FREE.format(s)] for s in range(N_SOURCE_FREE)),
                   key=lambda r: (r["clean_step_by_step"], r["correct"]))
        lines.append(f"| {name} | {_cell(rows['baseline'])} | {_cell(rows[CUE])} | {_key_cell(pair)} "
                     f"| {_cell(rows[PC_SEARCH])} ({rows[PC_SEARCH]['chosen']}) | {_cell(rows[MARKER_CONTRAST])} "
                     f"| {_cell(free)} | {_cell(rows[OWN_KEY])} |")
    return "\n".join(lines) + "\n"


def plot_demo(results: dict, path: Path) -> None:
    """Per pair and metric: a bar per condition, each null's draws as a strip beside its key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = results["pairs"]
    metrics = results["metrics"]
    fig, axes = plt.subplots(len(pairs), len(metrics), figsize=(6.5 * len(metrics), 3.4 * len(pairs)), squeeze=False)
    colors = dict(baseline="#999999", cue="#8172b2", method="#4c72b0", control="#dd8452", oracle="#55a868")
    for r, (name, pair) in enumerate(pairs.items()):
        rows = pair["rows"]
        bars = [("baseline", rows["baseline"], "baseline"), ("cue prompt (ceiling)", rows[CUE], "cue"),
                (f"transferred key ({results['fit']})", rows[pair["key"]], "method"), ("null", pair, "null")]
        bars += [(n, v, g) for g in ("control", "oracle") for n, v in rows.items() if v["group"] == g]
        for c, metric in enumerate(metrics):
            ax = axes[r, c]
            for x, (label, row, group) in enumerate(bars):
                if group == "null":
                    base = row["rows"]["baseline"][metric]
                    draws = [100 * (e + base) for e in row["null"][metric]["effects"]]
                    jitter = torch.linspace(-0.28, 0.28, len(draws)).tolist()
                    ax.scatter([x + j for j in jitter], draws, s=8, color="black", zorder=3)
                    continue
                ax.bar(x, 100 * row[metric], 0.7, color=colors[group])
                if group == "method":
                    p = format_p_value(row[f"{metric}_p_vs_null"], results["n_null"])
                    ax.text(x, 100 * row[metric] + 2, f"p {p}", ha="center", fontsize=7)
            labels = [f"null ({results['n_null']} draws)" if g == "null" else lbl for lbl, _, g in bars]
            ax.set_xticks(range(len(bars)), [lbl[:44] for lbl in labels], rotation=30, ha="right", fontsize=6)
            ax.set_ylim(0, 112)
            ax.set_ylabel(f"% {metric.replace('_', ' ')}", fontsize=8)
            ax.set_title(f"{name}: {pair['label']} (n={results['n_test']})", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
