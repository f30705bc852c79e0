"""Evaluation: tasks, answer checking, steered runs, pass@k and sweeps."""
