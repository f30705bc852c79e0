"""``python -m analyses.ablation``."""

from analyses.ablation import ANALYSIS

ANALYSIS.main()
