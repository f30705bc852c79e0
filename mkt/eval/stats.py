"""Statistics of evaluation runs: the unbiased pass@k estimator and binomial intervals."""

from __future__ import annotations

import math


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
