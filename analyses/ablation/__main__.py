"""``python -m analyses.ablation``."""

from analyses.ablation import main

main()
