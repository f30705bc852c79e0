"""Disjoint question splits of the real-model study: extraction/alignment, dev (alpha), test (report)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class QuestionSplits:
    """Indices into one question file; no index is in two splits.

    Attributes:
        fit: questions the key is extracted and the map fitted (and cross-validated) on.
        dev: questions each condition's alpha is chosen on.
        test: questions every reported number is measured on.
        seed: the shuffle that drew them.
    """

    fit: tuple[int, ...]
    dev: tuple[int, ...]
    test: tuple[int, ...]
    seed: int

    def to_dict(self) -> dict:
        return dict(fit=list(self.fit), dev=list(self.dev), test=list(self.test), seed=self.seed)


def split_questions(n_questions: int, n_fit: int, n_dev: int, n_test: int, seed: int = 0) -> QuestionSplits:
    """Draw three disjoint sets of question indices from ``range(n_questions)``.

    Args:
        n_questions: how many questions the file holds.
        n_fit, n_dev, n_test: the sizes of the three splits (each >= 1).
        seed: the shuffle; the same seed and sizes give the same splits.

    Returns:
        The ``QuestionSplits``, each split sorted.

    Raises:
        ValueError: a size below 1, or more questions asked for than the file holds.
    """
    sizes = dict(n_fit=n_fit, n_dev=n_dev, n_test=n_test)
    if any(v < 1 for v in sizes.values()):
        raise ValueError(f"every split needs at least one question, got {sizes}")
    if n_fit + n_dev + n_test > n_questions:
        raise ValueError(f"the splits need {n_fit + n_dev + n_test} questions ({sizes}) but the file holds "
                         f"{n_questions}: use smaller splits or more questions")
    order = list(range(n_questions))
    random.Random(seed).shuffle(order)
    fit, dev, test = order[:n_fit], order[n_fit:n_fit + n_dev], order[n_fit + n_dev:n_fit + n_dev + n_test]
    return QuestionSplits(tuple(sorted(fit)), tuple(sorted(dev)), tuple(sorted(test)), seed)
