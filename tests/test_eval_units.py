"""Voting, the calculator's text side and the report, on hand-made inputs (no model needed)."""
from __future__ import annotations

import json
from fractions import Fraction

import pytest

from distill_jax.evaluate.report import write_report
from distill_jax.evaluate.voting import majority_vote
from distill_jax.reasoning.calculator import CalculatorError, evaluate_arithmetic, first_correction


def test_majority_wins():
    assert majority_vote(["3", "5", "5", None]).answer == "5"
    assert majority_vote(["3", "5", "5", None]).votes == 2
    assert majority_vote(["3", "5", "5", None]).total == 3


def test_tie_goes_to_first_vote_in_order():
    # styles listed pot, eot, cot: a 1-1-1 split goes to pot's answer; a 2-2 split to whichever came first
    assert majority_vote(["7", "8", "9"]).answer == "7"
    assert majority_vote(["8", "7", "7", "8"]).answer == "8"


def test_null_answers_do_not_vote_and_numeric_equality_merges():
    assert majority_vote([None, None]).answer is None
    assert majority_vote([None, "2", "2.0000000001", "3"]).answer == "2"
    assert majority_vote([None, "2", "2.0000000001", "3"]).votes == 2


@pytest.mark.parametrize("expr,value", [
    ("48/2", Fraction(24)), ("3*(4+5)", Fraction(27)), ("1,200-200", Fraction(1000)), ("$5*4", Fraction(20)),
    ("2**10", Fraction(1024)), ("-3+1", Fraction(-2)), ("7/2", Fraction(7, 2)), ("50%*20", Fraction(10)),
    ("7//2", Fraction(3)),
])
def test_evaluate_arithmetic(expr, value):
    assert evaluate_arithmetic(expr) == value


@pytest.mark.parametrize("expr", ["__import__('os')", "a+1", "2**10**10", "1/0", "", "open('x')"])
def test_evaluate_arithmetic_rejects(expr):
    with pytest.raises(CalculatorError):
        evaluate_arithmetic(expr)


def test_wrong_intermediate_is_replaced():
    text = "She sold 48/2 = <<48/2=25>>25 clips. Total <<48+24=72>>72. The answer is 72."
    fix = first_correction(text)
    assert fix is not None and fix.written == "25" and fix.forced == "24>>"
    assert text[: fix.cut] + fix.forced == "She sold 48/2 = <<48/2=24>>"


def test_correct_annotations_pass_and_open_ones_are_closed():
    assert first_correction("a <<2+3=5>>5 b <<5*2=10>>10. The answer is 10.") is None
    fix = first_correction("a <<2+3=5>>5 then <<5*2=")
    assert fix is not None and fix.forced == "10>>" and fix.written == ""
    assert first_correction("<<x*2=7>> cannot be computed") is None


def _metrics(step, style, acc, n=10):
    return {"step": step, "benchmark": "toy", "style": style, "decoding": "greedy-max64", "accuracy": acc,
            "n": n, "correct": int(acc * n), "data": {"file": "toy.jsonl", "sha256": "ab" * 32, "count": n},
            "settings": {"mode": "greedy"}}


def test_report_tables_and_plots(tmp_path):
    for step, style, acc in [(100, "pot", 0.3), (200, "pot", 0.6), (100, "cot", 0.1), (200, "cot", 0.2),
                             (200, "vote", 0.7)]:
        d = tmp_path / "eval" / str(step) / "toy" / style
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(_metrics(step, style, acc)))
    (tmp_path / "fdd").mkdir()
    (tmp_path / "fdd" / "rounds.json").write_text(json.dumps(
        [{"round": 0, "accuracy": {"hard": {"accuracy": 0.2, "n": 5}}},
         {"round": 1, "accuracy": {"hard": {"accuracy": 0.4, "n": 5}}}]))
    report = write_report(tmp_path).read_text()
    assert "| pot | greedy-max64 | 30.0 (3/10) | 60.0 (6/10) |" in report
    assert report.index("| cot |") < report.index("| vote |")  # votes listed after the single styles
    assert "| 1 | hard | 40.0 | 5 |" in report
    for name in ("accuracy_vs_step_toy.png", "accuracy_per_style_toy.png", "fdd_rounds.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in report
