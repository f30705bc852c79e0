"""Every keyed analysis at its smallest settings: the one run the architecture and real-model tiers share."""

from __future__ import annotations

import json
from pathlib import Path

from mkt.cli import main


def run_keyed_analyses_at_smallest_settings(model: str, pack: str, task: str, out: Path) -> None:
    """Ablation, logit lens, entropy and atomic on 3 prompts, each writing its JSON and a real figure."""
    keyed = ["--model", model, "--pack", pack, "--task", task, "--n", "3"]
    runs = {
        "ablation": keyed + ["--alphas", "0.5", "--null-seeds", "1", "--matched-seeds", "1", "--pc-nulls", "1",
                             "--unembed-nulls", "1"],
        "logit_lens": keyed + ["--null-seeds", "1", "--site-seeds", "1"],
        "entropy": keyed + ["--samples", "2", "--pass-n", "2", "--controls", "1", "--max-new-tokens", "3"],
        "atomic": keyed + ["--max-new-tokens", "3"],
    }
    for name, args in runs.items():
        assert main(["analyze", name, *args, "--out", str(out / name)]) == 0, name
        assert json.loads((out / name / f"{name}.json").read_text()), name
        assert (out / name / f"{name}.png").stat().st_size > 5_000, name
