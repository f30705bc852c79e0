"""Agreement between two labellings of the same items: accuracy, Cohen's kappa, confusion table.

Used to validate an automatic classifier (``mkt.eval.step_by_step``) against labels a person
gave by hand.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Agreement:
    """How far ``predicted`` agrees with ``reference`` on the same items.

    Attributes:
        n: number of items.
        accuracy: share of items with the same label.
        kappa: Cohen's kappa, (p_o - p_e) / (1 - p_e); 1 = perfect, 0 = chance (NaN when
            p_e = 1: both labellings use one and the same label throughout).
        confusion: ``{reference label: {predicted label: count}}`` over ``labels``.
        labels: the label set, in order.
    """

    n: int
    accuracy: float
    kappa: float
    confusion: dict[str, dict[str, int]]
    labels: tuple[str, ...]

    def table(self) -> str:
        """The confusion table as markdown: rows are the reference (hand) labels."""
        head = "| hand \\ detector | " + " | ".join(self.labels) + " |"
        rule = "| --- |" + " --- |" * len(self.labels)
        body = [f"| {r} | " + " | ".join(str(self.confusion[r][p]) for p in self.labels) + " |" for r in self.labels]
        return "\n".join([head, rule, *body])


def agreement(reference: list[str], predicted: list[str], labels: tuple[str, ...] | None = None) -> Agreement:
    """Accuracy, Cohen's kappa and the confusion table of two labellings of the same items.

    Args:
        reference: the labels taken as right (e.g. by hand), one per item.
        predicted: the other labelling (e.g. a detector's), same items, same order.
        labels: the label set (default: every label seen, sorted).

    Returns:
        The ``Agreement``.

    Raises:
        ValueError: the two lists differ in length, are empty, or use a label outside ``labels``.
    """
    if len(reference) != len(predicted) or not reference:
        raise ValueError(f"agreement needs two non-empty labellings of the same items, got {len(reference)} and "
                         f"{len(predicted)} labels")
    labels = tuple(sorted(set(reference) | set(predicted))) if labels is None else tuple(labels)
    unknown = (set(reference) | set(predicted)) - set(labels)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not in the label set {list(labels)}")
    n = len(reference)
    pairs = Counter(zip(reference, predicted))
    p_o = sum(pairs[(x, x)] for x in labels) / n
    ref, pred = Counter(reference), Counter(predicted)
    p_e = sum(ref[x] * pred[x] for x in labels) / n**2
    kappa = (p_o - p_e) / (1 - p_e) if p_e < 1 else float("nan")
    confusion = {r: {p: pairs[(r, p)] for p in labels} for r in labels}
    return Agreement(n, p_o, kappa, confusion, labels)
