"""Hyperparameter sweeps: choose alpha, k, n and layers on a dev split, report on test.

The research code picks the best configuration on test accuracy; mkt never does. Every
alpha of a grid is evaluated in one batched generation (one alpha per row). The best
configuration is then tested against its subspace-matched null (``mkt.significance``):
random Source directions through the same map, each with its alpha chosen on the same dev
split. Rows are appended to ``sweep.csv`` configuration by configuration, so an interrupted
sweep resumes where it stopped (``sweep_run.json`` holds what a resume must match; one
process at a time). Results are written as ``sweep.csv``, ``sweep.json`` (best configuration, its test
score, the baselines table and the significance report) and ``sweep.png``.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mkt.alignment import transfer
from mkt.artifacts import make_directory, replace_atomically
from mkt.engines import Engine, as_engine
from mkt.eval.baselines import LogitTransfer
from mkt.eval.runner import fingerprint
from mkt.eval.stats import wilson_interval
from mkt.eval.tasks import Example, build_prompts, extract_and_score, task_probe
from mkt.key import MasterKey, random_like
from mkt.models import check_layers, model_identity
from mkt.pipeline import TransferFormats, align_models, extract_source_key
from mkt.prompts import PromptFormat
from mkt.resume import content_digest, resumable_lines, run_lock, write_config
from mkt.significance import Decoding, assess_transfer
from mkt.steering import Steering


@dataclass
class SweepSpec:
    """The grid and the decoding settings of a sweep."""

    alphas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5)
    ks: tuple[int, ...] = (8, 32)
    ns: tuple[int, ...] = (64, 256)
    layer_subsets: tuple[tuple[int, ...] | None, ...] = (None,)
    alignment_set: str = "locked"
    method: str = "lstsq"
    center: bool = False
    aggregator: str = "mean"
    mode: str = "norm-preserving"
    max_new_tokens: int = 64
    batch_size: int = 64
    null_seeds: int = 20  # subspace-matched null draws for the best configuration (0: skip)
    stop: tuple[str, ...] = ()  # stop strings (the task's defaults from the CLI)


def _accuracy(engine: Engine, examples: list[Example], prompts: list[str], spec: SweepSpec,
              steering: Steering | None = None, logit_offset=None) -> float:
    gens = engine.generate(prompts, spec.max_new_tokens, steering, batch_size=spec.batch_size,
                           logit_offset=logit_offset, stop=list(spec.stop))
    return sum(extract_and_score(e.kind, g.text, e.gold)[1] for e, g in zip(examples, gens)) / len(examples)


def _alpha_grid(engine: Engine, key: MasterKey, examples, prompts, spec: SweepSpec, layers) -> dict[float, float]:
    """Accuracy at every alpha from one generation over prompts x alphas (one alpha per row)."""
    rows = [p for _ in spec.alphas for p in prompts]
    alpha = torch.tensor([a for a in spec.alphas for _ in prompts])
    steering = Steering(key.directions, alpha=alpha, mode=spec.mode, layers=list(layers) if layers else None,
                        hook=key.hook)
    gens = engine.generate(rows, spec.max_new_tokens, steering, batch_size=spec.batch_size, stop=list(spec.stop))
    out = {}
    for i, a in enumerate(spec.alphas):
        chunk = gens[i * len(prompts) : (i + 1) * len(prompts)]
        out[a] = sum(extract_and_score(e.kind, g.text, e.gold)[1] for e, g in zip(examples, chunk)) / len(examples)
    return out


def run_sweep(
    source,
    target,
    questions: list[str],
    dev: list[Example],
    test: list[Example],
    locked: str | PromptFormat,
    unlocked: str | PromptFormat | None,
    out_dir: str | Path,
    spec: SweepSpec = SweepSpec(),
    source_unlocked_model=None,
    post_trained=None,
    progress: bool = True,
    target_locked: str | PromptFormat | None = None,
    target_unlocked: str | PromptFormat | None = None,
    engine: Engine | None = None,
) -> dict:
    """Sweep alpha x k x n x layers on ``dev``; evaluate the best on ``test`` with the baselines.

    Args:
        questions: unlabeled queries; the first n serve the key and the alignment.
        locked, unlocked: the Source's formats (templates, or ``PromptFormat`` in its chat
            template); ``unlocked`` None with ``source_unlocked_model`` for a model-induced key.
        target_locked, target_unlocked: the Target's own formats (default: the Source's); the
            dev and test prompts are the Target's Locked format.
        post_trained: an optional post-trained Target-sized model for the baselines table.
        engine: what generates on the Target (default: the TransformerLens engine over
            ``target``, which always serves the activations).
    """
    out = Path(out_dir)
    make_directory(out, "a sweep directory")
    formats = TransferFormats.of(locked, unlocked, target_locked, target_unlocked)
    n_layers = model_identity(target).n_layers
    for layers in spec.layer_subsets:  # before any slow work
        if layers is not None:
            check_layers(list(layers), n_layers)
    with run_lock(out):
        return _sweep_locked(source, target, questions, dev, test, formats, out, spec, source_unlocked_model,
                             post_trained, progress, as_engine(engine if engine is not None else target))


FIELDS = ("n", "k", "layers", "alpha", "dev_accuracy", "coverage")


def layers_name(layers: tuple[int, ...] | None) -> str:
    """How a layer subset is written in ``sweep.csv``: ``all`` or dash-joined indices."""
    return "all" if layers is None else "-".join(map(str, layers))


def _read_rows(path: Path, spec: SweepSpec) -> list[dict]:
    """Rows of an earlier, interrupted sweep. A line cut by a kill, a malformed line and a row outside
    this sweep's grid are dropped by name (``resumable_lines``); a repeated row keeps its first copy."""
    names = {layers_name(layers) for layers in spec.layer_subsets}

    def parse(line: str) -> dict | None:
        cells = next(csv.reader([line]))
        if len(cells) != len(FIELDS):
            return None
        r = dict(zip(FIELDS, cells))
        row = dict(n=int(r["n"]), k=int(r["k"]), layers=r["layers"], alpha=float(r["alpha"]),
                   dev_accuracy=float(r["dev_accuracy"]), coverage=float(r["coverage"]))
        ok = (row["n"] in spec.ns and row["k"] in spec.ks and row["layers"] in names and row["alpha"] in spec.alphas
              and 0 <= row["dev_accuracy"] <= 1 and 0 <= row["coverage"] <= 1 + 1e-6)
        return row if ok else None

    if not path.exists():
        return []
    header = ",".join(FIELDS)
    with path.open("rb") as f:
        first = f.readline().strip().decode("utf-8", "replace")
    if first != header:
        raise ValueError(f"{path} does not start with the header {header!r}, so it was not written by mkt sweep: "
                         "move it away (or delete it) to run the sweep's configurations again")
    rows, seen = [], set()
    for row in resumable_lines(path, lambda line: {} if line.strip() == header else parse(line), "configurations"):
        if row and (row["n"], row["k"], row["layers"], row["alpha"]) not in seen:
            seen.add((row["n"], row["k"], row["layers"], row["alpha"]))
            rows.append(row)
    return rows


def _sweep_locked(source, target, questions, dev, test, formats, out: Path, spec: SweepSpec,
                  source_unlocked_model, post_trained, progress, engine: Engine) -> dict:
    target_locked_t, target_unlocked_t = formats.target_locked, formats.target_unlocked
    config = dict(spec={k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()},
                  formats=[f.describe() if f is not None else None for f in formats.all()],
                  source=model_identity(source).to_dict(),
                  source_unlocked=model_identity(source_unlocked_model).to_dict() if source_unlocked_model else None,
                  questions=content_digest(list(questions))[:16],
                  fingerprint=fingerprint(engine, list(dev) + list(test), [], None, None))
    write_config(out / "sweep_run.json", config, "sweep")
    csv_path = out / "sweep.csv"
    dev_prompts = build_prompts(dev, target_locked_t, tokenizer=target.tokenizer)
    test_prompts = build_prompts(test, target_locked_t, tokenizer=target.tokenizer)

    def fit(qs: list[str], k: int):
        return align_models(source, target, qs, formats, spec.alignment_set, k, spec.method, spec.center)

    rows, keys = _read_rows(csv_path, spec), {}

    def key_for(n: int) -> MasterKey:  # the Source key from the first n questions, made once when first needed
        if n not in keys:
            keys[n] = extract_source_key(source, questions[:n], formats, source_unlocked_model, spec.aggregator)
        return keys[n]

    counts = Counter((r["n"], r["k"], r["layers"]) for r in rows)
    rows = [r for r in rows if counts[(r["n"], r["k"], r["layers"])] == len(spec.alphas)]  # all its alphas: done
    done = {(r["n"], r["k"], r["layers"]) for r in rows}
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with tmp.open("w", newline="") as f:  # what survived, replaced atomically, then append-only
        writer = csv.DictWriter(f, fieldnames=list(FIELDS))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, csv_path)
    sink = csv_path.open("a", newline="")
    writer = csv.DictWriter(sink, fieldnames=list(FIELDS))
    grid = [(n, k) for n in spec.ns for k in spec.ks]
    for n in spec.ns:
        if len(questions) < n:
            raise ValueError(f"n={n} but only {len(questions)} questions were given")
    for n, k in tqdm(grid, desc="sweep n x k", disable=not progress):
        qs = questions[:n]
        names = [layers_name(layers) for layers in spec.layer_subsets]
        if all((n, k, name) in done for name in names):
            continue  # finished before an interruption
        n_align = len(qs) * (2 if spec.alignment_set == "oracle-unlocked" else 1)
        if k > n_align:
            continue  # k cannot exceed the alignment prompts
        alignment = fit(qs, k)
        target_key = transfer(key_for(n), alignment)
        coverage = float(alignment.coverage(key_for(n).directions).mean())
        for layers, name in zip(spec.layer_subsets, names):
            if (n, k, name) in done:
                continue
            new = [dict(n=n, k=k, layers=name, alpha=alpha, dev_accuracy=acc, coverage=coverage)
                   for alpha, acc in _alpha_grid(engine, target_key, dev, dev_prompts, spec, layers).items()]
            writer.writerows(new)
            sink.flush()
            rows += new
    sink.close()
    if not rows:
        raise ValueError("every k of the grid exceeds the number of alignment prompts: lower --ks or raise --ns")
    best = max(rows, key=lambda r: (r["dev_accuracy"], -r["alpha"], -r["k"]))
    layers = None if best["layers"] == "all" else [int(x) for x in best["layers"].split("-")]
    alignment = fit(questions[: best["n"]], best["k"])
    best_key = transfer(key_for(best["n"]), alignment)
    table = baselines_table(target, test, test_prompts, spec, best_key, best["alpha"], layers, target_unlocked_t,
                            source, post_trained, engine)
    result = dict(best=best, test=table[key_label(spec)], baselines=table,
                  spec={k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()},
                  n_dev=len(dev), n_test=len(test))
    if spec.null_seeds:
        # the key's n, k and layers were chosen on dev among the grid; each null draw only
        # gets its alpha, so with a grid of several configurations this test favours the key
        result["null_test_note"] = (
            "the null draws reuse the key's dev-chosen n, k and layers and choose only alpha: with "
            f"{len(grid) * len(spec.layer_subsets)} configurations in the grid the test favours the key; "
            "fix one configuration (one --ns, --ks and --layers) for an even test")
        sig = assess_transfer(
            engine, key_for(best["n"]), alignment, task_probe(dev, dev_prompts), task_probe(test, test_prompts),
            ("correct",),
            n_null=spec.null_seeds, alphas=spec.alphas, progress=progress,
            decoding=Decoding(spec.max_new_tokens, list(spec.stop), mode=spec.mode, layers=layers,
                              batch_size=spec.batch_size),
        )
        result["significance"] = sig.summary()
        result["significance_table"] = sig.table()
    replace_atomically(out / "sweep.json", json.dumps(result, indent=1, default=str))
    plot_sweep(rows, best, out / "sweep.png")
    return result


def key_label(spec: SweepSpec) -> str:
    """What the sweep's key is called: an oracle alignment never makes a "transferred" key."""
    if spec.alignment_set == "oracle-unlocked":
        return "ORACLE key, map fitted on Target-Unlocked states (best on dev)"
    return "transferred key (best on dev)"


def baselines_table(target, test, test_prompts, spec, key, alpha, layers, unlocked_t, source=None,
                    post_trained=None, engine: Engine | None = None) -> dict:
    """Test accuracy (with 95% interval) of the key and every baseline, in one table.

    ``engine`` generates on the Target (default: the TransformerLens engine over ``target``);
    the logit-space transfer always runs on ``target``'s bridge, the one engine that adds logit offsets.
    """
    def entry(acc: float) -> dict:
        return dict(accuracy=acc, ci95=list(wilson_interval(round(acc * len(test)), len(test))))

    gen = as_engine(engine if engine is not None else target)
    steer = Steering(key.directions, alpha=alpha, mode=spec.mode, layers=layers, hook=key.hook)
    table = {"Target, plain prompt": entry(_accuracy(gen, test, test_prompts, spec)),
             key_label(spec): entry(_accuracy(gen, test, test_prompts, spec, steer))}
    if unlocked_t is not None:
        unlocked_prompts = build_prompts(test, unlocked_t, tokenizer=target.tokenizer)
        table["Target, step-by-step prompt"] = entry(_accuracy(gen, test, unlocked_prompts, spec))
    if post_trained is not None:
        table["post-trained model, plain prompt"] = entry(_accuracy(as_engine(post_trained), test, test_prompts, spec))
    rand = random_like(key, seed=0)
    table["random direction, same norm and alpha"] = entry(_accuracy(
        gen, test, test_prompts, spec, Steering(rand.directions, alpha=alpha, mode=spec.mode, layers=layers, hook=rand.hook)))
    if source is not None and unlocked_t is not None:
        try:
            mapping = dict(zip(test_prompts, unlocked_prompts))
            offset = LogitTransfer(source, target, mapping.__getitem__)
            table["logit-space transfer"] = entry(_accuracy(as_engine(target), test, test_prompts, spec,
                                                            logit_offset=offset))
        except ValueError as err:  # tokenizers differ: the baseline does not apply
            table["logit-space transfer"] = dict(accuracy=None, skipped=str(err))
    return table


def plot_sweep(rows: list[dict], best: dict, path: Path) -> None:
    """Plot each configuration's dev score against alpha, the chosen one marked, to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    sel = [r for r in rows if r["n"] == best["n"] and r["layers"] == best["layers"]]
    for k in sorted({r["k"] for r in sel}):
        pts = sorted((r["alpha"], r["dev_accuracy"]) for r in sel if r["k"] == k)
        left.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=f"k={k}")
    left.set_xscale("log")
    left.set_xlabel("alpha")
    left.set_ylabel("dev accuracy (%)")
    left.set_title(f"accuracy vs alpha per rank k (n={best['n']}, layers {best['layers']})", fontsize=9)
    left.legend(fontsize=8)
    ks = sorted({r["k"] for r in rows})
    ns = sorted({r["n"] for r in rows})
    heat = torch.full((len(ks), len(ns)), float("nan"))
    for r in rows:
        if r["layers"] == best["layers"]:
            i, j = ks.index(r["k"]), ns.index(r["n"])
            heat[i, j] = max(100 * r["dev_accuracy"], heat[i, j].nan_to_num(-1.0).item())
    im = right.imshow(heat.numpy(), origin="lower", aspect="auto", cmap="viridis")
    right.set_xticks(range(len(ns)), [str(n) for n in ns])
    right.set_yticks(range(len(ks)), [str(k) for k in ks])
    right.set_xlabel("n (queries)")
    right.set_ylabel("rank k")
    right.set_title("best dev accuracy over alpha (%)", fontsize=9)
    fig.colorbar(im, ax=right)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
