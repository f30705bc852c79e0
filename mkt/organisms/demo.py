"""`mkt demo`: the whole UNLOCK method on the built-in organisms, on a CPU.

For each Source -> Target pair: extract keys on the Source (prompt-induced: cue minus
plain; model-induced: post-trained minus base), align with both alignment sets (the
paper's Locked-only prompts, with the paper's least squares and with ridge; and Locked +
Unlocked prompts), all zero-centred, and evaluate greedy generation on held-out plain test
prompts against the baselines and controls. Every rank and alpha is chosen on the dev
split; the test split is only reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mkt.eval.stats import difference_interval
from mkt.extract import extract_prompt_key
from mkt.generation import generate
from mkt.key import MasterKey, random_like
from mkt.models import load_model
from mkt.organisms.task import (
    LOCKED_TEMPLATE,
    SCORE_METRICS,
    UNLOCKED_TEMPLATE,
    Problem,
    problems,
    score_answer,
)
from mkt.organisms.zoo import organism_path
from mkt.pipeline import run_transfer
from mkt.steering import Steering

ALPHAS = (0.05, 0.1, 0.2, 0.5, 1.0)
MAX_NEW_TOKENS = 40
RANKS = (8, 32)


def _rates(gens, probs: list[Problem]) -> dict:
    scores = [score_answer(g.text, p) for g, p in zip(gens, probs)]
    rates = {m: sum(getattr(s, m) for s in scores) / len(scores) for m in SCORE_METRICS}
    return rates | {"examples": [g.text for g in gens[:3]]}


def evaluate(model, probs: list[Problem], cue: bool = False, steering: Steering | None = None) -> dict:
    """Rates of the three metrics on greedy answers (plain prompts unless ``cue``)."""
    gens = generate(model, [p.prompt(cue) for p in probs], MAX_NEW_TOKENS, steering, batch_size=len(probs))
    return _rates(gens, probs)


def choose_alpha(model, key: MasterKey, dev: list[Problem]) -> tuple[float, dict]:
    """The alpha with the best dev accuracy (then clean rate, then the smaller alpha).

    All alphas run in one batched generation, one alpha per row.
    """
    prompts = [p.prompt(False) for p in dev]
    alpha = torch.tensor([a for a in ALPHAS for _ in dev])
    gens = generate(model, prompts * len(ALPHAS), MAX_NEW_TOKENS, key.steering(alpha=alpha), batch_size=256)
    results = {a: _rates(gens[i * len(dev) : (i + 1) * len(dev)], dev) for i, a in enumerate(ALPHAS)}
    best = max(ALPHAS, key=lambda a: (results[a]["correct"], results[a]["clean_step_by_step"], -a))
    return best, {a: {m: r[m] for m in SCORE_METRICS} for a, r in results.items()}


@dataclass
class Pair:
    source: str
    target: str
    label: str
    full: bool  # all conditions, or the key ones only


PAIRS = (
    Pair("source-base", "target-base", "small -> large (same family)", True),
    Pair("source-base", "target-family", "small -> large (Qwen2 -> Llama)", True),
    Pair("source-base", "target-nonatomic", "into a Target without the latent capability", False),
    Pair("target-base", "source-base", "large -> small (reverse)", False),
)


def run_demo(out_dir: str | Path = "runs/demo", n_test: int = 200, n_dev: int = 64, quick: bool = False,
             seed: int = 0) -> dict:
    """Run the demo; print a table; write ``results.json`` and ``demo.png`` to ``out_dir``."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # five "Loading weights" bars say nothing here
    torch.manual_seed(seed)
    start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if quick:
        n_test, n_dev = min(n_test, 48), min(n_dev, 24)
    names = {n for p in PAIRS for n in (p.source, p.target)} | {"source-post"}
    models = {n: load_model(organism_path(n), device="cpu") for n in sorted(names)}
    key_q = [p.question for p in problems(256, "train", seed=1)]
    align_q = [p.question for p in problems(320, "train", seed=2)]
    dev, test = problems(n_dev, "dev", seed=seed), problems(n_test, "test", seed=seed)

    results: dict = dict(n_test=n_test, n_dev=n_dev, ranks=list(RANKS), alphas=list(ALPHAS), pairs={})
    post = evaluate(models["source-post"], test)
    source_keys = {}  # (source, variant) -> key, extracted once
    for pair in tqdm(PAIRS, desc="demo: Source -> Target pairs"):
        src, tgt = models[pair.source], models[pair.target]
        rows, transfers = {}, {}
        rows["baseline"] = evaluate(tgt, test)
        rows["cue (prompting ceiling)"] = evaluate(tgt, test, cue=True)
        if pair.full:
            rows["post-trained Source"] = dict(post)
        own = extract_prompt_key(tgt, key_q, LOCKED_TEMPLATE, UNLOCKED_TEMPLATE)
        alpha, curve = choose_alpha(tgt, own, dev)
        keys, chosen = {"own key (oracle)": own}, {"own key (oracle)": dict(alpha=alpha, dev=curve)}
        variants = [("prompt key", None, "locked", "lstsq"), ("prompt key", None, "locked", "ridge"),
                    ("prompt key", None, "mixed", "lstsq")]
        if pair.full:
            variants.append(("model key", models["source-post"], "mixed", "lstsq"))
        for label, unlocked_model, align_set, method in variants:
            name = f"transferred {label}, {align_set} alignment" + (f" ({method})" if method != "lstsq" else "")
            per_rank = {}
            for k in RANKS:  # the rank, like alpha, is chosen on dev
                report = run_transfer(
                    src, tgt, key_q, align_q, LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, unlocked_model, k=k,
                    method=method, center=True, alignment_set=align_set, heldout_fraction=0.2, seed=seed,
                    source_key=source_keys.get((pair.source, label)),
                )
                source_keys[(pair.source, label)] = report.source_key
                alpha, curve = choose_alpha(tgt, report.target_key, dev)
                per_rank[k] = (report, alpha, curve)
            k = max(RANKS, key=lambda r: (per_rank[r][2][per_rank[r][1]]["correct"],
                                          per_rank[r][2][per_rank[r][1]]["clean_step_by_step"], -r))
            report, alpha, curve = per_rank[k]
            keys[name] = report.target_key
            chosen[name] = dict(k=k, alpha=alpha, dev=curve,
                                dev_by_rank={r: v[2][v[1]] | {"alpha": v[1]} for r, v in per_rank.items()})
            transfers[name] = dict(report.summary(), cosine_with_own_key=report.target_key.cosine(own).tolist())
        for name, key in keys.items():
            alpha = chosen[name]["alpha"]
            rows[name] = evaluate(tgt, test, steering=key.steering(alpha=alpha)) | {"alpha": alpha}
        ref_name = "transferred prompt key, mixed alignment"
        ref_alpha = chosen[ref_name]["alpha"]
        for s in range(1 if quick else 3):
            rand = random_like(keys[ref_name], seed=100 + s)
            rows[f"random direction (seed {s})"] = evaluate(tgt, test, steering=rand.steering(alpha=ref_alpha)) | {
                "alpha": ref_alpha}
        for name, row in rows.items():  # accuracy gain over the baseline, with its 95% interval
            row["accuracy_gain"] = row["correct"] - rows["baseline"]["correct"]
            row["accuracy_gain_ci95"] = list(difference_interval(row["correct"], rows["baseline"]["correct"], n_test))
        results["pairs"][f"{pair.source} -> {pair.target}"] = dict(
            label=pair.label, rows=rows, transfers=transfers, alpha_selection=chosen)
        _print_pair(pair, rows, transfers)
    results["seconds"] = round(time.time() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot_demo(results, out / "demo.png")
    print(f"\nwrote {out / 'results.json'} and {out / 'demo.png'} ({results['seconds']} s)")
    return results


def _print_pair(pair: Pair, rows: dict, transfers: dict) -> None:
    lines = [f"\n== {pair.source} -> {pair.target}: {pair.label} =="]
    for name, t in transfers.items():
        lines.append(f"  {name}: k={t['k']} (chosen on dev), coverage {t['mean_coverage']:.2f}, "
                     f"held-out error {t['mean_heldout_error']:.2f}")
    lines.append(f"  {'condition':50s} {'alpha':>5s} {'clean sbs':>9s} {'any sbs':>8s} {'accuracy':>8s}"
                 f"  accuracy gain [95% CI]")
    for name, r in rows.items():
        alpha = f"{r['alpha']:.2f}" if "alpha" in r else ""
        lo, hi = r["accuracy_gain_ci95"]
        gain = "" if name == "baseline" else f"  {100 * r['accuracy_gain']:+5.1f} [{100 * lo:+5.1f}, {100 * hi:+5.1f}]"
        lines.append(f"  {name:50s} {alpha:>5s} {r['clean_step_by_step']:9.1%} {r['any_step_by_step']:8.1%} "
                     f"{r['correct']:8.1%}{gain}")
    tqdm.write("\n".join(lines))


def plot_demo(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = results["pairs"]
    fig, axes = plt.subplots(len(pairs), 1, figsize=(11, 3.4 * len(pairs)), squeeze=False)
    for ax, (name, pair) in zip(axes[:, 0], pairs.items()):
        rows = pair["rows"]
        labels = list(rows)
        x = torch.arange(len(labels)).float()
        for i, (metric, color) in enumerate(zip(("clean_step_by_step", "correct"), ("#4c72b0", "#dd8452"))):
            ax.bar(x + (i - 0.5) * 0.38, [100 * rows[l][metric] for l in labels], 0.38, color=color,
                   label={"clean_step_by_step": "clean step-by-step rate", "correct": "accuracy"}[metric])
        ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=7)
        ax.set_ylabel("% of test prompts")
        ax.set_ylim(0, 105)
        ax.set_title(f"{name}: {pair['label']} (plain test prompts, n={results['n_test']})", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
