"""Evaluation runs: generate, extract, score, and write one JSONL record per example.

A run directory holds ``run.json`` (its configuration and the fingerprint of everything that
decides the results), ``records.jsonl`` (appended batch by batch, so an interrupted run
loses at most the batch in flight) and ``summary.json``. Starting the same run again skips
the (example, sample) pairs already recorded; a different fingerprint is refused. One
process owns a run directory at a time (``run.lock``; a lock left by a dead process is
taken over). Samples are seeded per (example id, sample index), so a resumed run draws
exactly what an uninterrupted one draws.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from mkt.artifacts import make_directory, replace_atomically
from mkt.engines import as_engine
from mkt.eval.stats import pass_at_k, wilson_interval
from mkt.eval.tasks import Example, build_prompts, extract_and_score
from mkt.prompts import PromptTemplate
from mkt.resume import content_digest, resumable_lines, run_lock, write_config
from mkt.steering import Steering

RECORD_FIELDS = {"id": str, "sample": int, "prompt": str, "output": str, "gold": str, "correct": bool,
                 "n_tokens": int}


def _parse_record(line: str) -> dict | None:
    """A record as ``_run_locked`` writes it (``extracted`` may be null), or None."""
    record = json.loads(line)
    ok = (isinstance(record, dict)
          and all(type(record.get(f)) is kind for f, kind in RECORD_FIELDS.items())
          and record["sample"] >= 0 and record["n_tokens"] >= 0
          and (record.get("extracted") is None or isinstance(record["extracted"], str)))
    return record if ok else None


def _read_records(path: Path) -> list[dict]:
    """Records already written (see ``resumable_lines``); a repeated (id, sample) keeps its first record."""
    records, seen = [], set()
    for record in resumable_lines(path, _parse_record, "examples"):
        if (record["id"], record["sample"]) not in seen:
            seen.add((record["id"], record["sample"]))
            records.append(record)
    return records


def summarize(records: list[dict], pass_ks: tuple[int, ...] = (1,)) -> dict:
    """Accuracy (first sample of each example) with a 95% interval, mean length, pass@k."""
    by_id: dict[str, list[dict]] = {}
    for r in records:
        by_id.setdefault(r["id"], []).append(r)
    first = [min(rs, key=lambda r: r["sample"]) for rs in by_id.values()]
    correct = sum(r["correct"] for r in first)
    lo, hi = wilson_interval(correct, len(first))
    summary = dict(n=len(first), accuracy=correct / max(1, len(first)), ci95=[lo, hi],
                   mean_tokens=sum(r["n_tokens"] for r in records) / max(1, len(records)))
    n_samples = min((len(rs) for rs in by_id.values()), default=0)
    for k in pass_ks:
        if 1 <= k <= n_samples:
            summary[f"pass@{k}"] = sum(pass_at_k(len(rs), sum(r["correct"] for r in rs), k)
                                       for rs in by_id.values()) / len(by_id)
    return summary


def run_eval(
    model,
    examples: list[Example],
    template: PromptTemplate | str,
    out_dir: str | Path,
    steering: Steering | None = None,
    logit_offset=None,
    demos: list[Example] = (),
    chat: bool = False,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    temperature: float = 1.0,
    n_samples: int = 1,
    stop: list[str] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    pass_ks: tuple[int, ...] = (1,),
    config: dict | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate ``model`` on ``examples`` and return the summary (also written to disk).

    Args:
        model: a TransformerBridge or an engine (``mkt.engines``) that generates.
        template: the prompt template (``{question}``).
        out_dir: run directory; an existing run with the same config is resumed.
        steering: an optional key's ``Steering`` (scalar alpha).
        n_samples: samples per example (with ``do_sample``) for pass@k.
        config: extra facts to record (model name, pack, alpha ...).
    """
    if not examples:
        raise ValueError("no examples to evaluate")
    seen: set[str] = set()
    duplicates = sorted({e.id for e in examples if e.id in seen or seen.add(e.id)})
    if duplicates:
        raise ValueError(f"duplicate example ids {duplicates[:5]}: each example needs its own id")
    leaked = {d.question for d in demos} & {e.question for e in examples}
    if leaked:
        raise ValueError(f"{len(leaked)} few-shot demo(s) are also evaluated items (their solutions would sit in "
                         "the prompt): take demos from a split or file disjoint from the evaluated items")
    if n_samples < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("n_samples, batch_size and max_new_tokens must be 1 or more")
    if n_samples > 1 and not do_sample:
        raise ValueError("n_samples > 1 needs do_sample=True (greedy samples are identical)")
    template = PromptTemplate.of(template)
    model = as_engine(model)
    out = Path(out_dir)
    make_directory(out, "a run directory")
    run_config = dict(config or {}, template=template.text, n_examples=len(examples), max_new_tokens=max_new_tokens,
                      do_sample=do_sample, temperature=temperature, n_samples=n_samples, seed=seed,
                      n_demos=len(demos), chat=chat, stop=stop,
                      fingerprint=fingerprint(model, examples, demos, steering, logit_offset))
    with run_lock(out):
        return _run_locked(model, examples, template, out, steering, logit_offset, demos, chat, max_new_tokens,
                           do_sample, temperature, n_samples, stop, batch_size, seed, pass_ks, run_config, progress)


def fingerprint(model, examples, demos, steering: Steering | None, logit_offset) -> dict:
    """Everything besides the run's settings that decides its results, as short hashes.

    The model's identity and a hash of a sample of its weights (every parameter's shape and
    first values: cheap on a 14B model, and different for other weights); the examples and
    demos; the steering's directions and settings; the engine (``model``: a bridge or an engine).
    """
    engine = as_engine(model)
    steer = None
    if steering is not None:
        steer = content_digest(steering.directions.float().contiguous().cpu().numpy().tobytes(),
                        [steering.alpha.tolist() if hasattr(steering.alpha, "tolist") else steering.alpha,
                         steering.mode, steering.layers, steering.scope])
    return dict(model=engine.identity.to_dict(), weights=engine.weights_digest(),
                examples=content_digest([(e.id, e.question, e.gold, e.kind) for e in examples])[:16],
                demos=content_digest([(e.id, e.question, e.solution) for e in demos])[:16],
                steering=steer[:16] if steer else None,
                logit_offset=type(logit_offset).__name__ if logit_offset is not None else None,
                engine=engine.name)


def sample_seed(seed: int, example_id: str, sample: int) -> int:
    """The sampling seed of one (example, sample): independent of batching and of resumption."""
    return int(content_digest([seed, example_id, sample])[:15], 16)


def _run_locked(model, examples, template, out, steering, logit_offset, demos, chat, max_new_tokens, do_sample,
                temperature, n_samples, stop, batch_size, seed, pass_ks, run_config, progress) -> dict:
    write_config(out / "run.json", run_config)
    records_path = out / "records.jsonl"
    records = _read_records(records_path)
    done = {(r["id"], r["sample"]) for r in records}
    prompts = build_prompts(examples, template, list(demos), model.tokenizer, chat)
    todo = [(e, p, s) for s in range(n_samples) for e, p in zip(examples, prompts) if (e.id, s) not in done]
    bar = tqdm(total=len(todo), desc="eval", disable=not progress)
    correct_so_far = sum(r["correct"] for r in records)
    with records_path.open("a") as sink:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            gens = model.generate([p for _, p, _ in chunk], max_new_tokens, steering, do_sample=do_sample,
                                  temperature=temperature, seeds=[sample_seed(seed, e.id, s) for e, _, s in chunk], stop=stop,
                                  batch_size=batch_size, logit_offset=logit_offset)
            for (example, prompt, s), g in zip(chunk, gens):
                extracted, ok = extract_and_score(example.kind, g.text, example.gold)
                rec = dict(id=example.id, sample=s, prompt=prompt, output=g.text, extracted=extracted,
                           gold=example.gold, correct=bool(ok), n_tokens=g.n_tokens)
                records.append(rec)
                sink.write(json.dumps(rec) + "\n")
                correct_so_far += rec["correct"]
            sink.flush()
            bar.update(len(chunk))
            bar.set_postfix(acc=f"{correct_so_far / len(records):.3f}")
    bar.close()
    summary = summarize(records, pass_ks) | {"config": run_config}
    replace_atomically(out / "summary.json", json.dumps(summary, indent=1))
    return summary
