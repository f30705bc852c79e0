"""Every analysis by name: what ``mkt analyze NAME`` dispatches through (the contract: ``analyses.contract``)."""

from __future__ import annotations

from analyses import ablation, atomic, entropy, logit_lens, similarity
from analyses.contract import Analysis

ANALYSES: dict[str, Analysis] = {a.name: a for a in (ablation.ANALYSIS, logit_lens.ANALYSIS, entropy.ANALYSIS,
                                                     similarity.ANALYSIS, atomic.ANALYSIS)}
