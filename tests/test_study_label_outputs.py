import hashlib
import re
from difflib import SequenceMatcher

import pytest

from mkt.extract import extract_prompt_key
from mkt.generation import generate
from mkt.steering import Steering
from mkt.study.label_outputs import label_outputs, labelled, mask_copies

LOCKED, UNLOCKED = "Q:{question}|A:", "S:{question}|A:"  # what the tiny models' characters spell

QUESTIONS = {i: f"{i}+{i + 7}" for i in range(12)}


def test_outputs_are_the_conditions_generations_and_never_store_the_question(qwen):
    records = label_outputs(qwen, QUESTIONS, key_ids=[8, 9, 10, 11], plain_ids=[0, 1, 2, 3], steered_ids=[4, 5, 6, 7],
                            alphas=(0.1, 1.0), max_new_tokens=3, batch_size=4,
                            locked=LOCKED, unlocked=UNLOCKED)
    assert [(r["qid"], r["condition"], r["alpha"]) for r in records] == [
        (0, "locked", 0.0), (1, "locked", 0.0), (2, "unlocked", 0.0), (3, "unlocked", 0.0),
        (4, "steered", 0.1), (5, "steered", 0.1), (6, "steered", 1.0), (7, "steered", 1.0)]
    key = extract_prompt_key(qwen, [QUESTIONS[i] for i in (8, 9, 10, 11)], LOCKED, UNLOCKED)
    by_hand = generate(qwen, [UNLOCKED.format(question=QUESTIONS[2])], 3, stop=["\nQuestion:"])[0].text
    steered = generate(qwen, [LOCKED.format(question=QUESTIONS[6])], 3, steering=Steering(key.directions, alpha=1.0),
                       stop=["\nQuestion:"])[0].text
    assert records[2]["text"] == by_hand and records[6]["text"] == steered
    assert all("question" not in r for r in records)
    with pytest.raises(ValueError, match="kept apart"):
        label_outputs(qwen, QUESTIONS, [0], [0, 1], [])


def test_labelled_records_carry_halves_by_hash_and_refuse_bad_labels():
    records = [dict(model="m", qid=i, condition="locked", alpha=0.0, text="x" * 900, n_tokens=5) for i in range(6)]
    out = labelled(records, ["direct"] * 6)
    for r in out:
        assert r["half"] == ("tune" if int(hashlib.sha256(r["id"].encode()).hexdigest(), 16) % 2 == 0 else "heldout")
        assert len(r["text"]) == 600 and r["id"] == f"m/locked/0.0/{r['qid']}"
        assert r["note"] == "" and r["uncertain"] is False
    with pytest.raises(ValueError, match="one per output"):
        labelled(records, ["direct"])
    with pytest.raises(ValueError, match="not among"):
        labelled(records, ["maybe"] * 6)


def test_masked_outputs_keep_no_run_of_the_question_and_keep_their_shape():
    question = "Tom's hens lay 12 eggs a day. He gives four to his neighbour every morning. How many are left?"
    echo = " Tom's hens lay 12 eggs a day. He gives four to his neighbour every morning.\n1. 12 - 4 = 8 eggs."
    text = echo + " Tom's hens lay 12 eggs a day. He gives four to his neighbour every morning."
    masked = mask_copies(text, question)
    longest = SequenceMatcher(None, masked, question, autojunk=False).find_longest_match(0, len(masked), 0, len(question))
    assert longest.size < 40 and "hens" not in masked
    assert len(masked) == len(text) and re.sub(r"[A-Za-z]", "a", masked) == re.sub(r"[A-Za-z]", "a", text)
    assert [c.isupper() for c in masked] == [c.isupper() for c in text]  # sentences still start with a capital
    assert masked[len(echo):] == masked[:len(text) - len(echo)]  # a repeat of the copy stays a repeat
    assert mask_copies(" 12 - 4 = 8 eggs are left for Tom.", question) == " 12 - 4 = 8 eggs are left for Tom."
    assert labelled([dict(model="m", qid=0, condition="unlocked", alpha=0.0, text=text, n_tokens=9)], ["degenerate"],
                    {0: question})[0]["text"] == masked
