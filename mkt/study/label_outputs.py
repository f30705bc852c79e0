"""Outputs of real models to label by hand, for validating ``mkt.eval.step_by_step``.

For a model: its own prompt-induced key on ``key_questions``; then greedy continuations (stop at
"\\nQuestion:") of plain prompts (no chat template) under Locked "Question: {question}\\nAnswer:",
Unlocked "... Answer: Let's think step by step." and Locked steered by the own key at each alpha
(large alphas make text fall apart: the detector must call that a failure). Records keep the
question's line number in the question file, never the question; ``labelled`` also masks what
an output copied from it.

Run: ``python -m mkt.study.label_outputs --model real:gemma-3-270m --out gemma.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from difflib import SequenceMatcher
from pathlib import Path

import torch

from mkt.eval.step_by_step import LABELS

LOCKED = "Question: {question}\nAnswer:"
UNLOCKED = "Question: {question}\nAnswer: Let's think step by step."
ALPHAS = (0.1, 0.25, 0.5, 1.0)
TEXT_KEPT = 600  # characters of each output stored with its label (the detector reads 400)
MIN_COPY = 40  # characters: a longer run copied from the question is masked before the output is checked in


def label_outputs(model, questions: dict[int, str], key_ids: list[int], plain_ids: list[int], steered_ids: list[int],
                  alphas: tuple[float, ...] = ALPHAS, max_new_tokens: int = 128, batch_size: int = 24,
                  locked: str = LOCKED, unlocked: str = UNLOCKED) -> list[dict]:
    """Greedy continuations to label: Locked and Unlocked on ``plain_ids`` (half each), steered on ``steered_ids``.

    Args:
        model: a TransformerBridge.
        questions: question text by line number in the question file.
        key_ids: the questions the own key is extracted on (kept apart from the others).
        plain_ids: the first half get the Locked prompt, the rest the Unlocked one.
        steered_ids: spread evenly over ``alphas``, each Locked and steered by the own key.
        alphas, max_new_tokens, batch_size: the steering strengths, budget and batch.
        locked, unlocked: the two templates (the study's by default).

    Returns:
        One record per output: model, qid, condition, alpha, text, n_tokens.
    """
    from mkt.extract import extract_prompt_key
    from mkt.generation import generate
    from mkt.steering import Steering

    if set(key_ids) & (set(plain_ids) | set(steered_ids)):
        raise ValueError("the key's questions must be kept apart from the labelled ones")
    key = extract_prompt_key(model, [questions[i] for i in key_ids], locked, unlocked, batch_size=batch_size)
    half = len(plain_ids) // 2
    plain = [(q, "locked", 0.0) for q in plain_ids[:half]] + [(q, "unlocked", 0.0) for q in plain_ids[half:]]
    per = -(-len(steered_ids) // len(alphas))
    steered = [(q, "steered", alphas[j // per]) for j, q in enumerate(steered_ids)]
    name = getattr(model.cfg, "model_name", "model")
    records = []
    for items, steering in ((plain, None), (steered, Steering(key.directions, alpha=torch.tensor([a for *_, a in steered])))):
        if not items:
            continue
        prompts = [(unlocked if c == "unlocked" else locked).format(question=questions[q]) for q, c, _ in items]
        gens = generate(model, prompts, max_new_tokens, steering=steering, stop=["\nQuestion:"], batch_size=batch_size)
        records += [dict(model=name, qid=q, condition=c, alpha=a, text=g.text, n_tokens=g.n_tokens)
                    for (q, c, a), g in zip(items, gens)]
    return records


def _pseudo_word(word: str) -> str:
    """A made-up word of ``word``'s length and case pattern, always the same for the same word."""
    digest = hashlib.sha256(word.lower().encode()).digest()
    made = "".join("bcdfghjklmnpqrstvwz"[b % 19] if i % 2 == 0 else "aeiou"[b % 5] for i, b in enumerate(digest[:len(word)]))
    return "".join(c.upper() if o.isupper() else c for c, o in zip(made, word))


def mask_copies(text: str, question: str, min_copy: int = MIN_COPY) -> str:
    """``text`` with the words of every run of ``min_copy`` or more characters copied from ``question`` made up.

    Small models echo the question; a checked-in output must not carry the benchmark's text. Each
    word becomes a made-up word of its shape (the same word always the same one), digits, spaces
    and punctuation stay: the length, the sentences, the numbers and the repeats a reader or the
    detector looks at are kept.
    """
    while (m := SequenceMatcher(None, text, question, autojunk=False).find_longest_match(
            0, len(text), 0, len(question))).size >= min_copy:
        start, end = m.a, m.a + m.size
        while start > 0 and text[start - 1].isalpha():  # whole words, so a copy and its repeats stay alike
            start -= 1
        while end < len(text) and text[end].isalpha():
            end += 1
        text = text[:start] + re.sub(r"[A-Za-z]+", lambda w: _pseudo_word(w.group()), text[start:end]) + text[end:]
    return text


def labelled(records: list[dict], labels: list[str], questions: dict[int, str] | None = None,
             notes: list[str] | None = None, uncertain: list[bool] | None = None) -> list[dict]:
    """The records with their hand labels, an id, a tune/held-out half (by a hash of the id) and text cut short.

    Args:
        records: outputs of ``label_outputs``.
        labels: one of ``LABELS`` per record.
        questions: question text by line number; where given, runs copied from it are masked (``mask_copies``).
        notes, uncertain: the labeller's reason for a hard case and whether the label was a close call.

    Raises:
        ValueError: a label per record is not given, or a label is not one of ``LABELS``.
    """
    if len(labels) != len(records):
        raise ValueError(f"{len(labels)} labels for {len(records)} outputs: give one per output")
    bad = sorted(set(labels) - set(LABELS))
    if bad:
        raise ValueError(f"labels {bad} are not among {list(LABELS)}")
    notes = notes or [""] * len(records)
    uncertain = uncertain or [False] * len(records)
    out = []
    for r, label, note, close in zip(records, labels, notes, uncertain):
        rid = f"{r['model']}/{r['condition']}/{r['alpha']}/{r['qid']}"
        half = "tune" if int(hashlib.sha256(rid.encode()).hexdigest(), 16) % 2 == 0 else "heldout"
        text = r["text"][:TEXT_KEPT]
        if questions is not None:
            text = mask_copies(text, questions[r["qid"]])
        out.append(dict(id=rid, model=r["model"], qid=r["qid"], condition=r["condition"], alpha=r["alpha"],
                        label=label, half=half, text=text, uncertain=close, note=note))
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: write the outputs to label by hand (``--model``, ``--out``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="e.g. real:gemma-3-270m")
    p.add_argument("--out", required=True, type=Path, help="JSONL of outputs to label")
    p.add_argument("--questions", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/gsm8k/test.jsonl")
    args = p.parse_args(argv)
    if not args.questions.is_file():
        raise SystemExit(f"--questions {args.questions}: no such file; give a GSM8K-style JSONL")
    rows = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    if len(rows) < 1232:
        raise SystemExit(f"--questions {args.questions} holds {len(rows)} questions; this sample uses lines 1000-1231")
    import mkt

    records = label_outputs(mkt.load_model(args.model), {i: r["question"] for i, r in enumerate(rows)},
                            list(range(1200, 1232)), list(range(1000, 1020)), list(range(1020, 1044)))
    args.out.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"wrote {len(records)} outputs to {args.out}")


if __name__ == "__main__":
    main()
