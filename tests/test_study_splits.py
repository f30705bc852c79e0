import random

import pytest

from mkt.study.splits import split_questions


def test_splits_are_disjoint_sized_and_reproducible():
    s = split_questions(1319, 512, 48, 96, seed=3)
    assert (len(s.fit), len(s.dev), len(s.test)) == (512, 48, 96)
    assert not (set(s.fit) & set(s.dev) or set(s.fit) & set(s.test) or set(s.dev) & set(s.test))
    order = list(range(1319))
    random.Random(3).shuffle(order)  # the same draw by hand
    assert set(s.test) == set(order[560:656]) and all(0 <= i < 1319 for i in s.fit)
    assert split_questions(1319, 512, 48, 96, seed=3) == s and split_questions(1319, 512, 48, 96, seed=4) != s


def test_splits_refuse_what_the_file_cannot_hold():
    with pytest.raises(ValueError, match="file holds 100"):
        split_questions(100, 64, 32, 8)
    with pytest.raises(ValueError, match="at least one question"):
        split_questions(100, 10, 0, 8)
