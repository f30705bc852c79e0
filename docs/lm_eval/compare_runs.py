"""Item by item: an `mkt eval` run against an lm-eval run of gsm8k_local on the same items.

    python docs/lm_eval/compare_runs.py MKT_RUN_DIR LM_EVAL_OUTPUT_DIR

Reads MKT_RUN_DIR/records.jsonl and the one samples_gsm8k_local_*.jsonl under LM_EVAL_OUTPUT_DIR;
prints how many generated texts are identical (up to the stop string, which lm-eval cuts and mkt
keeps), how many answers each extracts alike and how many items both score alike, and both accuracies.
"""

import json
import sys
from pathlib import Path

STOP = "\nQuestion:"


def main(mkt_run: str, lm_eval_out: str) -> None:
    mkt = {int(r["id"]): r for r in map(json.loads, Path(mkt_run, "records.jsonl").read_text().splitlines())}
    (samples,) = Path(lm_eval_out).rglob("samples_gsm8k_local_*.jsonl")
    lm = {s["doc_id"]: s for s in map(json.loads, samples.read_text().splitlines())}
    if sorted(mkt) != sorted(lm):
        sys.exit(f"the runs scored different items: mkt {sorted(mkt)}, lm-eval {sorted(lm)}")
    same_text = same_answer = same_score = 0
    for i, r in mkt.items():
        s = lm[i]
        same_text += r["output"].split(STOP)[0] == s["resps"][0][0]
        lm_answer = s["filtered_resps"][0].replace(",", "").replace("$", "").rstrip(".")
        mkt_answer = "[invalid]" if r["extracted"] is None else r["extracted"]
        try:
            same_answer += float(mkt_answer) == float(lm_answer)
        except ValueError:
            same_answer += mkt_answer == lm_answer
        same_score += bool(r["correct"]) == bool(s["exact_match"])
    n = len(mkt)
    print(f"{n} items: identical text {same_text}, same extracted answer {same_answer}, same score {same_score}; "
          f"accuracy mkt eval {sum(bool(r['correct']) for r in mkt.values()) / n:.3f}, "
          f"lm-eval {sum(bool(s['exact_match']) for s in lm.values()) / n:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
