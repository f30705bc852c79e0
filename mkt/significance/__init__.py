"""Is a transferred key's effect real? The key against its nulls, under one procedure.

Every condition (the transferred key, each null draw, each control, each oracle) has its
alpha chosen on dev prompts and is then scored once on test prompts
(:mod:`mkt.significance.scoring`). Its *effect* is its test rate minus the unsteered
baseline's on the same prompts; the key's empirical p-value is the share of subspace-matched
null draws whose effect reaches the key's, so N draws resolve p down to 1/(N+1)
(:mod:`mkt.significance.report`). The unsteered Target on the cue prompt is the ceiling the
transfer is compared with. Given a run directory, every finished generation is kept
(:mod:`mkt.significance.store`): an interrupted assessment resumes to the same result, and
pairs that share a Target generate what does not depend on the Source once.

    report = run_transfer(source, target, ...)                 # the paper's protocol
    sig = assess_transfer(target, report.source_key, report.alignment, dev, test,  # Probe: prompts + scorer
                          cue=cue_test, run_dir="runs/sig", progress=True)
    print(sig.table())
"""

from mkt.significance.assess import assess_transfer
from mkt.significance.report import ScoredCondition, TransferSignificance, format_p_value, p_value_floor
from mkt.significance.scoring import ALPHAS, Decoding, Probe, evaluate_conditions

__all__ = ["ALPHAS", "Decoding", "Probe", "ScoredCondition", "TransferSignificance", "assess_transfer",
           "evaluate_conditions", "format_p_value", "p_value_floor"]
