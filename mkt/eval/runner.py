"""Evaluation runs: generate, extract, score, and write one JSONL record per example.

A run directory holds ``run.json`` (its configuration), ``records.jsonl`` (appended batch by
batch, so an interrupted run loses at most the batch in flight) and ``summary.json``.
Starting the same run again skips the (example, sample) pairs already recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from mkt.eval.stats import pass_at_k, wilson_interval
from mkt.eval.tasks import Example, build_prompts, extract_and_score
from mkt.generation import generate
from mkt.prompts import PromptTemplate
from mkt.steering import Steering


def _read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by an interruption: redo that example
            continue
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
        template: the prompt template (``{question}``).
        out_dir: run directory; an existing run with the same config is resumed.
        steering: an optional key's ``Steering`` (scalar alpha).
        n_samples: samples per example (with ``do_sample``) for pass@k.
        config: extra facts to record (model name, pack, alpha ...).
    """
    if not examples:
        raise ValueError("no examples to evaluate")
    if n_samples > 1 and not do_sample:
        raise ValueError("n_samples > 1 needs do_sample=True (greedy samples are identical)")
    template = PromptTemplate.of(template)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_config = dict(config or {}, template=template.text, n_examples=len(examples), max_new_tokens=max_new_tokens,
                      do_sample=do_sample, temperature=temperature, n_samples=n_samples, seed=seed,
                      n_demos=len(demos), chat=chat, stop=stop)
    config_path = out / "run.json"
    if config_path.exists():
        previous = json.loads(config_path.read_text())
        if previous != json.loads(json.dumps(run_config)):
            raise ValueError(f"{out} holds a run with another configuration: choose a new output directory")
    config_path.write_text(json.dumps(run_config, indent=1))
    records_path = out / "records.jsonl"
    records = _read_records(records_path)
    # rewrite what survived, so a line cut by an interruption cannot glue onto the next one
    records_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = {(r["id"], r["sample"]) for r in records}
    prompts = build_prompts(examples, template, list(demos), model.tokenizer, chat)
    todo = [(e, p, s) for s in range(n_samples) for e, p in zip(examples, prompts) if (e.id, s) not in done]
    bar = tqdm(total=len(todo), desc="eval", disable=not progress)
    correct_so_far = sum(r["correct"] for r in records)
    with records_path.open("a") as sink:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            sample = chunk[0][2]
            gens = generate(model, [p for _, p, _ in chunk], max_new_tokens, steering, do_sample, temperature,
                            seed=seed + 1000 * sample + start, stop=stop, batch_size=batch_size,
                            logit_offset=logit_offset)
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
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
