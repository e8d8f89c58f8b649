"""Answer extraction, canonical numbers and the match tolerance (distill_jax/reasoning/answers.py)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from distill_jax.data.records import read_jsonl
from distill_jax.reasoning.answers import answers_match, canonical, extract_answer, normalize_number

FIXTURES = Path(__file__).parent / "fixtures" / "teacher_outputs"


@pytest.mark.parametrize("text, expected", [
    ("The answer is 1,080.", "1080"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("So the total is $\\boxed{18}$.", "18"),
    ("She pays $18.00 in total.", "18"),
    ("He earns 18 dollars.", "18"),
    ("**Answer:** 42", "42"),
    ("**Final Answer:** 7 apples", "7"),
    ("Answer: 3/4", "0.75"),
    ("The answer is 2/3.", "0.6666666666666667"),
    ("She needs 1 3/4.", "1.75"),
    ("The answer is \\frac{3}{4}.", "0.75"),
    ("\\boxed{\\dfrac{5}{2}}", "2.5"),
    ("The answer is 2 1/2 cups.", "2.5"),
    ("\\boxed{2\\frac{1}{4}}", "2.25"),
    ("The temperature is now -7 degrees.", "-7"),
    ("The answer is −12.", "-12"),
    ("The answer is 25%.", "25"),
    ("The answer is 0.125.", "0.125"),
    ("Answer: 1.5e3", "1500"),
    ("The answer is $3.2 \\times 10^{4}$.", "32000"),
    ("The answer is 12 * 3 = 36.", "36"),
    ("The answer is:\n\n**36**", "36"),
    ("The final answer is $\\boxed{1{,}250}$. I hope it is correct.", "1250"),
    ("\\boxed{1\\,250 \\text{ dollars}}", "1250"),
    ("She has 10-3=7 left.", "7"),
    ("It is 8 10/2", "5"),
    ("She had 12 - 7", "7"),  # a spaced minus is an operator
    ("She owes -$5.", "-5"),  # improper: not a mixed number
    ("It takes 3-4 days, so 5 hours.", "5"),
])
def test_extraction_patterns(text, expected):
    assert extract_answer(text) == expected


def test_markers_beat_the_last_number():
    assert extract_answer("The answer is 18.\nCheck: 18 - 6 = 12, 12 + 6 = 18, and 2023 was the year.") == "18"
    assert extract_answer("#### 72\n(Computed in 3 steps.)") == "72"
    assert extract_answer("He buys 3 packs of 12 pens. 3 * 12 = 36 pens in all.") == "36"


def test_last_marker_wins_and_empty_markers_are_skipped():
    text = "First guess: the answer is 10.\nWait, I forgot the tax. The answer is 11."
    assert extract_answer(text) == "11"
    assert extract_answer("Total 8 + 4 = 12.\nAnswer: (see above)") == "12"


def test_no_number():
    assert extract_answer("I cannot solve this problem.") is None
    assert extract_answer("") is None


@pytest.mark.parametrize("raw, canon", [
    ("18.0", "18"), ("-0.0", "0"), ("0.0", "0"), ("1,080", "1080"), ("1,234,567.50", "1234567.5"),
    ("1.20", "1.2"), ("$5", "5"), ("25%", "25"), ("+3", "3"), ("1e-05", "0.00001"), ("2.5E3", "2500"),
    ("3/4", "0.75"), ("-3/8", "-0.375"), ("1/3", "0.3333333333333333"), ("2/3", "0.6666666666666667"),
    ("12 3/4", "12.75"), ("0.6666666666666666", "0.6666666666666666"), ("39.", "39"),
])
def test_normalize_number(raw, canon):
    assert normalize_number(raw) == canon


@pytest.mark.parametrize("raw", ["nan", "inf", "abc", "1 2", "3 6/2", "1/0", "1e400", "Fraction(3, 4)", ""])
def test_normalize_number_rejects(raw):
    assert normalize_number(raw) is None


def test_canonical_form_is_exact_without_exponent():
    assert canonical(Fraction(1, 10**12)) == "0.000000000001"
    assert canonical(Fraction(10**20)) == "100000000000000000000"
    assert canonical(Fraction(-1, 8)) == "-0.125"
    assert canonical(Fraction(100, 3)) == "33.33333333333333"  # 16 significant digits, like float repr


def test_tolerance_absorbs_float_golds_only():
    # AddSub/SingleEq golds are binary-float decimals.
    assert answers_match("0.6666666666666667", "0.6666666666666666")
    assert answers_match(normalize_number("11/6"), "1.8333333333333335")
    assert answers_match("0.8333333333333333", "0.8333333333333334")
    assert answers_match("0.0000004", "0")  # absolute 1e-6
    assert not answers_match("0.000002", "0")
    assert answers_match("100005", "100000")  # relative 1e-4
    assert not answers_match("100011", "100000")
    assert not answers_match("0.67", "0.6666666666666666")  # rounding is an error, not noise
    assert answers_match("1,080", "1080") and answers_match("18.00", "18")
    assert not answers_match(None, "3") and not answers_match("3", None)
    assert answers_match("b", "B") and not answers_match("3", "C")  # AQuA letters


def test_cot_fixture_agreement():
    rows = read_jsonl(FIXTURES / "cot.jsonl")
    assert len(rows) >= 100
    agree = sum(extract_answer(r["text"]) == normalize_number(r["expected"]) for r in rows)
    assert agree / len(rows) >= 0.99, [r["id"] for r in rows if extract_answer(r["text"]) != r["expected"]]


def test_gold_answers_of_the_shared_data_are_canonical(data_dir):
    for name in ("gsm8k/test.jsonl", "addsub/test.jsonl", "singleeq/test.jsonl"):
        for row in read_jsonl(data_dir / name):
            gold = row["answer"]
            assert normalize_number(gold) == gold


def test_gsm8k_human_solutions(data_dir):
    """Every GSM8K train solution (`#### 1,080`-style endings, `<<a*b=c>>` annotations) yields its gold."""
    rows = read_jsonl(data_dir / "gsm8k" / "train.jsonl")
    wrong = [r["id"] for r in rows if extract_answer(r["solution"]) != r["answer"]]
    assert not wrong, wrong[:10]
