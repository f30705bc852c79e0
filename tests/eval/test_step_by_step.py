"""The step-by-step detector on the pilot's failures. Its agreement with real outputs labelled by hand is
asserted in test_step_by_step_labels.py."""

from mkt.eval.step_by_step import DEGENERATE, DIRECT, STEPS, classify, is_step_by_step


def test_the_pilot_s_failures():
    assert classify("ermeister" * 30) == DEGENERATE  # a key at a large alpha: one junk token repeated
    assert classify(" ermeister ermeister ermeister ermeister ermeister") == DEGENERATE
    assert classify(" First, let's look at how many eggs Janet has left each day.") == STEPS
    assert classify(" 18") == DIRECT and classify(" Janet makes $18 every day.") == DIRECT
    assert classify("") == DEGENERATE and not is_step_by_step(" " + "= " * 20)
    assert classify(" 16 - 3 - 4 = 9 eggs are left.\n9 * 2 = 18 dollars.") == STEPS
    assert classify(" She makes $18 every day.") == DIRECT  # a narrative answer is not reasoning
