"""Answer checking, mkt vs HF's math-verify: accuracy per spelling family and time per pair.

    python bench/bench_answers.py [--repeats 3] [--agieval ../shared/data/agieval/math.jsonl]

The pairs are the spelling table of tests/eval/test_answers.py (gold, model output, the
expected verdict), with its independent families: "negatives" (pairs that must never be
equal, from a review and fresh ones) and "reviewed" (the review's pairs that must be equal).
False positives (equal said of a pair that is not) are counted apart, per family. math-verify is scored as its README does it, ``verify(parse(gold),
parse(output))`` with default settings, a MATH gold given as ``$\\boxed{gold}$``; it is
skipped, with a message, when it is not importable (it is not a dependency of mkt: install
it into a separate environment or a ``pip install --target`` folder on PYTHONPATH).
With ``--agieval``, both also score the file's 1000 boxed solutions against their gold
answers, and against the next row's gold (which must not match), for time on real text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from mkt.eval import answers
from tests.eval.test_answers import SPELLINGS

Pair = tuple[str, str, str, bool]  # kind, gold, output, expected
# A checker: its verdict on (kind, gold, output), and how to empty its parse caches.
Checker = tuple[Callable[[str, str, str], bool], Callable[[], None]]


def mkt_check(kind: str, gold: str, output: str) -> bool:
    score = answers.score_math if kind == "math" else answers.score_gsm8k
    return score(output, gold)


def math_verify_checker() -> Checker | None:
    """math-verify's ``verify(parse(gold), parse(output))``, or None when not installed."""
    try:
        from math_verify import parse, verify
        from math_verify import parser as mv_parser
    except ImportError:
        return None

    def check(kind: str, gold: str, output: str) -> bool:
        target = parse("$\\boxed{" + gold + "}$") if kind == "math" else parse(gold)
        return bool(verify(target, parse(output)))

    def clear() -> None:
        for cached in (mv_parser.parse_latex_cached, mv_parser.parse_expr_cached, mv_parser.extract_latex):
            cached.cache_clear()

    return check, clear


def timed_verdicts(checker: Checker, pairs: list[Pair], repeats: int) -> tuple[list[bool], float]:
    """Verdicts on every pair, and the median seconds per pair over ``repeats`` passes.

    One untimed pass first (imports of sympy and antlr are no part of the time per pair);
    parse caches are emptied before each pass, so that every pass pays for every parse, as
    a run over distinct outputs does."""
    check, clear = checker
    for kind, gold, output, _ in pairs:
        check(kind, gold, output)
    times = []
    for _ in range(repeats):
        clear()
        start = time.perf_counter()
        verdicts = [check(kind, gold, output) for kind, gold, output, _ in pairs]
        times.append((time.perf_counter() - start) / len(pairs))
    return verdicts, statistics.median(times)


def agieval_pairs(path: Path) -> list[Pair]:
    """Each boxed solution against its own gold answer (True) and the next row's (False,
    unless both golds are the same value)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pairs = []
    for i, row in enumerate(rows):
        after = rows[(i + 1) % len(rows)]["answer"]
        same = answers.normalize_math(after) == answers.normalize_math(row["answer"])
        pairs.append(("math", row["answer"], row["other"]["solution"], True))
        pairs.append(("math", after, row["other"]["solution"], same))
    return pairs


def report(name: str, pairs: list[Pair], families: list[str], checkers: dict[str, Checker], repeats: int) -> dict:
    results = {label: timed_verdicts(checker, pairs, repeats) for label, checker in checkers.items()}
    print(f"\n{name}: accuracy (correct verdicts / pairs) and false positives (said equal / pairs that are not)")
    print(f"{'family':<12}{'n':>5}{'neg':>5}" + "".join(f"{label + ' right':>18}{'FP':>8}" for label in checkers))
    summary: dict = {"accuracy": {}, "false_positives": {}, "us_per_pair": {}}
    for family in sorted(set(families)) + ["all"]:
        idx = [i for i, f in enumerate(families) if f == family or family == "all"]
        negatives = [i for i in idx if not pairs[i][3]]
        row = f"{family:<12}{len(idx):>5}{len(negatives):>5}"
        for label, (verdicts, _) in results.items():
            right = sum(verdicts[i] == pairs[i][3] for i in idx)
            false_pos = sum(verdicts[i] for i in negatives)
            summary["accuracy"].setdefault(label, {})[family] = [right, len(idx)]
            summary["false_positives"].setdefault(label, {})[family] = [false_pos, len(negatives)]
            row += f"{f'{right}/{len(idx)}':>13} {right / len(idx):>4.0%}{f'{false_pos}/{len(negatives)}':>8}"
        print(row)
    print(f"{'us / pair':<17}" + "".join(f"{t * 1e6:>16.0f}" for _, t in results.values()))
    for label, (_, t) in results.items():
        summary["us_per_pair"][label] = round(t * 1e6, 1)
    for label, (verdicts, _) in results.items():
        wrong = [(families[i], *pairs[i]) for i in range(len(pairs)) if verdicts[i] != pairs[i][3]]
        # False positives first: they are the worse mistake.
        wrong.sort(key=lambda row: row[4])
        print(f"{label} wrong on {len(wrong)} ({sum(not row[4] for row in wrong)} false positives):")
        for family, kind, gold, output, expected in wrong[:60]:
            print(f"  {family:<10} {kind:<6} gold={gold!r:<24} output={output[:70]!r:<50} expected={expected}")
    return summary


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--agieval", type=Path, help="AGIEval-Math JSONL file, for time on real solutions")
    args = ap.parse_args()
    checkers: dict[str, Checker] = {"mkt": (mkt_check, answers.clear_parse_cache)}
    mv = math_verify_checker()
    if mv is None:
        print("math-verify is not importable: reporting mkt alone (pip install math-verify elsewhere to compare)")
    else:
        checkers["math-verify"] = mv
    pairs = [(kind, gold, output, expected) for _, kind, gold, output, expected in SPELLINGS]
    result = {"spellings": report("spellings", pairs, [row[0] for row in SPELLINGS], checkers, args.repeats)}
    if args.agieval is not None:
        if args.agieval.exists():
            real = agieval_pairs(args.agieval)
            families = ["own gold" if i % 2 == 0 else "next gold" for i in range(len(real))]
            result["agieval"] = report("AGIEval-Math solutions", real, families, checkers, 1)
        else:
            print(f"{args.agieval} not present: skipping the real-file timing")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
