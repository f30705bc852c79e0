"""``assess_transfer``: a transferred key against its nulls, controls, oracles and the cue, in one call."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from mkt.alignment import SubspaceAlignment, transfer
from mkt.controls import isotropic_null, subspace_matched_null
from mkt.intervention import UNSCALED_MODES
from mkt.key import MasterKey
from mkt.significance.report import BASELINE, CUE, TransferSignificance
from mkt.significance.scoring import ALPHAS, Decoding, Probe, evaluate_conditions

KEY = "transferred key"
OWN_KEY = "Target's own key"


def assess_transfer(
    target,
    source_key: MasterKey,
    alignment: SubspaceAlignment,
    dev: Probe,
    test: Probe,
    metrics: Sequence[str] = ("correct",),
    n_null: int = 20,
    n_isotropic: int = 3,
    controls: dict[str, MasterKey] | None = None,
    searches: dict[str, dict[str, MasterKey]] | None = None,
    oracles: dict[str, MasterKey] | None = None,
    own_key: MasterKey | None = None,
    alphas: Sequence[float] = ALPHAS,
    decoding: Decoding = Decoding(),
    seed: int = 0,
    progress: bool = False,
    cue: Probe | None = None,
    run_dir: str | Path | None = None,
) -> TransferSignificance:
    """Test the transfer of ``source_key`` through ``alignment`` against its nulls, in one call.

    Args:
        target: the Target (the alignment's Target): a bridge or an engine (``mkt.engines``).
        source_key, alignment: what ``run_transfer`` returns as ``report.source_key`` and
            ``report.alignment``; the transferred key is ``transfer(source_key, alignment)``.
        dev, test: disjoint probes; alphas are chosen on ``dev``, effects measured on ``test``.
        metrics: metric names of the probes' scorer; the first decides alpha and significance.
        n_null: subspace-matched null draws (p-values go down to 1/(n_null + 1): 20 or more
            for p below 0.05).
        n_isotropic: isotropic random Target directions (a weak control, shown for contrast).
        controls: more keys that must NOT pass (a nuisance direction, a Source-free pipeline).
        searches: controls chosen on dev among candidate keys, e.g. the Target's own top
            principal directions (``mkt.controls.target_principal_keys``): a Source-free
            procedure the transfer must beat to show the Source added something.
        oracles: keys that look at the Target's own elicited capability; shown apart, never
            as the method.
        own_key: the Target's own key (prompt-induced), shown as an oracle; its per-layer
            cosine with the transferred key is reported as a diagnostic.
        cue: the test questions in the Unlocked format (same order and scorer as ``test``):
            the unsteered Target on them is the prompting ceiling, shown beside the baseline.
        run_dir: a directory that keeps every finished generation (``mkt.significance.store``):
            a rerun after an interruption resumes where it stopped, with identical results,
            and the conditions that do not depend on the Source (baseline, cue, own key,
            searches and controls over the Target alone, isotropic draws) are generated once
            for all the pairs that share the Target and the directory.
        progress: a progress bar over the rows to generate, with the stage and an ETA.
    """
    if n_null < 1:
        raise ValueError(f"n_null must be >= 1 (20 or more for a p-value below 0.05), got {n_null}")
    if set(dev.prompts) & set(test.prompts):
        raise ValueError("dev and test share prompts: alpha would be chosen on the prompts it is scored on")
    if cue is not None and len(cue.prompts) != len(test.prompts):
        raise ValueError(f"the cue probe has {len(cue.prompts)} prompts for {len(test.prompts)} test prompts: give the "
                         "test questions in the Unlocked format, one per test prompt and in the same order")
    target_key = transfer(source_key, alignment)
    decoding = replace(decoding, hook=source_key.hook)  # the key, its nulls and controls at the key's hook point
    keys, groups = {KEY: target_key}, {KEY: "method", CUE: "ceiling"}
    for i, k in enumerate(subspace_matched_null(source_key, alignment, n_null, seed=seed + 1000)):
        keys[f"null {i}"], groups[f"null {i}"] = k, "null"
    # where the mode scales each direction to unit norm, unit draws steer as key-normed ones do and are
    # the same for every Source: a run directory shared by the pairs of one Target generates them once
    unit = decoding.mode not in UNSCALED_MODES
    for i, k in enumerate(isotropic_null(target_key, n_isotropic, seed + 2000, unit) if n_isotropic else []):
        keys[f"isotropic random {i}"], groups[f"isotropic random {i}"] = k, "control"
    for name, k in (controls or {}).items():
        keys[name], groups[name] = k, "control"
    oracles = {OWN_KEY: own_key, **(oracles or {})} if own_key is not None else dict(oracles or {})
    for name, k in oracles.items():
        keys[name], groups[name] = k, "oracle"
    for name in searches or {}:
        groups[name] = "control"
    taken = sorted({BASELINE, CUE} & (set(keys) | set(searches or {})))
    if taken:
        raise ValueError(f"conditions named {taken} would hide the unsteered ones of that name: rename them")
    unsteered = {BASELINE: test, **({CUE: cue} if cue is not None else {})}
    conditions = evaluate_conditions(target, keys, dev, test, metrics, groups, alphas, decoding, progress, searches,
                                     unsteered, run_dir)
    baseline, cue_ceiling = conditions.pop(BASELINE), conditions.pop(CUE, None)
    coverage = alignment.coverage(source_key.directions).tolist()
    diagnostics = dict(alignment.summary(), coverage=coverage, mean_coverage=sum(coverage) / len(coverage))
    if own_key is not None:
        diagnostics["cosine_with_own_key"] = target_key.cosine(own_key).tolist()
    return TransferSignificance(tuple(metrics), baseline, conditions, KEY, cue=cue_ceiling, diagnostics=diagnostics)
