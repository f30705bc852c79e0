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


def test_loops_count_only_after_working():
    working = " First, we need to find out how many books he bought. He buys 3 books * 16 dollars = 48 dollars. "
    assert classify(working + "Then, he buys 3 pencils * 6 dollars = 18 pencils." + " He has now 3 pencils left." * 8) == STEPS
    assert classify(" First, let's see how many points she's sure to get.\n" * 8) == DEGENERATE  # looped from the start
    assert classify("\n1. Wanda fills the tank with water.\n2. Ms. B fills the tank with water." * 4) == DEGENERATE
    assert classify(" Firstly, the answer is 25k a year.  The 25k is the amount of money Jim has to pay for the 4 years he "
                    "has to pay for the 25k is the amount of money he has to pay for the 4 years he has to pay for the "
                    "25k is the amount of money he has to pay for the 25k is the 25k is the 25k is the 25k is 25k is "
                    "25k is 25k is 25k:1.  the 25k") == DEGENERATE  # a run-on (Gemma-3-270M, own key at alpha 1)
    assert classify(" If Tom has 5 apples and buys 3 bags of 4 apples, how many apples does he have?") == DEGENERATE
    assert classify(" How many are left? 16 - 3 - 4 = 9 eggs.\n9 * 2 = 18 dollars.") == STEPS  # a question with working
