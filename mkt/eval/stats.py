"""Statistics of evaluation runs and analyses: pass@k, binomial and paired intervals, paired tests, empirical p-values.

Pure functions of per-item scores; nothing here knows about models.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021).

    1 - C(n-c, k) / C(n, k), computed as a product to stay exact for large n.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of samples n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sensible at 0% and 100%)."""
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def difference_interval(a: float, b: float, n: int) -> tuple[float, float]:
    """95% interval of the difference a - b of two rates measured on n items each.

    Newcombe's hybrid score interval (built from the two Wilson intervals), which unlike
    the normal approximation stays sensible at 0% and 100%.
    """
    (la, ua), (lb, ub) = wilson_interval(round(a * n), n), wilson_interval(round(b * n), n)
    d = a - b
    return (d - math.sqrt((a - la) ** 2 + (ub - b) ** 2), d + math.sqrt((ua - a) ** 2 + (b - lb) ** 2))


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value for two conditions scored on the same items.

    Only discordant items count: under the null that neither condition is better, each
    discordant item favours ``a`` with probability 1/2.
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same items: got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference_interval(a: Sequence[bool], b: Sequence[bool], z: float = 1.96) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b) for paired 0/1 scores: Newcombe's score method 10.

    Newcombe (1998), "Improved confidence intervals for the difference between binomial
    proportions based on paired data", Stat. Med. 17:2635: the two margins' Wilson
    intervals, combined with the phi correlation of the 2x2 table (0 when a margin is
    empty). Unlike a percentile bootstrap it does not collapse when no item is discordant:
    0/3 vs 0/3 gives [-0.56, +0.56].
    """
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired scores need the same, non-empty items: got {a.shape} and {b.shape}")
    n = len(a)
    both, only_a, only_b, neither = (int(np.sum(x)) for x in (a & b, a & ~b, ~a & b, ~a & ~b))
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    (l1, u1), (l2, u2) = wilson_interval(both + only_a, n, z), wilson_interval(both + only_b, n, z)
    denom = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = 0.0 if denom == 0 else (both * neither - only_a * only_b) / np.sqrt(float(denom))
    d = p1 - p2
    lo = d - np.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    hi = d + np.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return float(max(-1.0, lo)), float(min(1.0, hi))


def paired_bootstrap_interval(a: Sequence[float], b: Sequence[float], n_boot: int = 2000, seed: int = 0,
                              level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(a - b), resampling items (both conditions together)."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired scores need the same, non-empty items: got {len(a)} and {len(b)}")
    diff = torch.tensor([float(x) - float(y) for x, y in zip(a, b)], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    means = diff[torch.randint(len(diff), (n_boot, len(diff)), generator=g)].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)


def empirical_p_value(effect: float, null_effects: Sequence[float], larger: bool = True) -> float:
    """One-sided p-value of ``effect`` against draws of the null: (1 + #{null >= effect}) / (1 + N).

    ``larger=False`` counts the draws ``<= effect`` instead (a drop is the effect). Ties count
    against the effect, so a discrete score never looks better than it is, and with N draws
    no p-value is below 1 / (N + 1). NaN draws (e.g. nulls that could not be matched) are left
    out; with none left, or a NaN effect, there is no evidence either way and the p-value is NaN.
    """
    draws = [float(x) for x in null_effects if not math.isnan(x)]
    if not draws or math.isnan(effect):
        return float("nan")
    return (1 + sum(1 for x in draws if (x >= effect if larger else x <= effect))) / (1 + len(draws))
