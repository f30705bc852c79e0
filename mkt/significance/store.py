"""An assessment's generations kept in a run directory: resumed after an interruption, shared by pairs.

Each *unit* of generation (one condition's dev grid, one condition at its chosen alpha on the
test prompts, an unsteered probe) is appended to ``generations.jsonl`` as one line when it
finishes, under a key that hashes everything its texts depend on: the model (identity, a
digest of its weights, the engine), the decoding settings, the prompts, the condition's
directions and its alphas. A later assessment given the same directory reads a unit back
instead of generating it; a changed input makes another key, so a stale unit is never reused.
Names are not part of the key: the unsteered Target, its cue prompt, its own key and its own
principal directions are the same units whatever the Source, so pairs that share a Target and
a run directory generate them once.

The file is read by ``mkt.resume.resumable_lines`` (a line cut by a kill, or malformed, is
dropped by name and its unit generated again) and written by one process at a time
(``mkt.resume.run_lock``), like ``mkt eval``'s records.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from jaxtyping import Float
from torch import Tensor

from mkt.artifacts import make_directory
from mkt.resume import content_digest, resumable_lines, run_lock

GENERATIONS = "generations.jsonl"
_DIGEST = re.compile(r"[0-9a-f]{64}")


def unit_key(context: dict, prompts: Sequence[str], alphas: Sequence[float],
             directions: Float[Tensor, "layer d"] | None) -> str:
    """The sha256 of a unit: ``context`` (model and decoding), its prompts, alphas and directions (float32 bytes)."""
    steer = b"" if directions is None else directions.detach().float().contiguous().cpu().numpy().tobytes()
    shape = None if directions is None else list(directions.shape)
    return content_digest(context, list(prompts), [float(a) for a in alphas], shape, steer)


def _parse(line: str) -> dict | None:
    """A record as ``GenerationStore.put`` writes it, or None."""
    record = json.loads(line)
    ok = (isinstance(record, dict) and isinstance(record.get("unit"), str) and _DIGEST.fullmatch(record["unit"])
          and isinstance(record.get("condition"), str) and isinstance(record.get("texts"), list)
          and all(isinstance(t, str) for t in record["texts"]))
    return record if ok else None


class GenerationStore:
    """The finished units of a run directory's ``generations.jsonl``, and new ones appended as they finish."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / GENERATIONS
        self._texts: dict[str, list[str]] = {}
        for record in resumable_lines(self.path, _parse, "units"):
            self._texts.setdefault(record["unit"], record["texts"])  # a repeated unit keeps its first record

    def get(self, unit: str, n_rows: int) -> list[str] | None:
        """The texts of ``unit`` when it finished before (with ``n_rows`` rows), else None."""
        texts = self._texts.get(unit)
        return texts if texts is not None and len(texts) == n_rows else None

    def put(self, unit: str, condition: str, texts: list[str]) -> None:
        """Append a finished unit (``condition`` names it for a reader; it is not part of the key)."""
        with self.path.open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(dict(unit=unit, condition=condition, texts=texts)) + "\n")
        self._texts.setdefault(unit, texts)


@contextmanager
def open_store(run_dir: str | Path | None) -> Iterator[GenerationStore | None]:
    """The store of ``run_dir``, owned by this process while open (None without a directory)."""
    if run_dir is None:
        yield None
        return
    out = make_directory(Path(run_dir), "an assessment's run directory")
    with run_lock(out):
        yield GenerationStore(out)
