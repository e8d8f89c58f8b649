"""Style registry: answers per style, program extraction, student inputs (distill_jax/reasoning/styles.py)."""
from __future__ import annotations

import contextlib
import io
import re
from fractions import Fraction
from pathlib import Path

import pytest

from distill_jax.data.records import read_jsonl
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import STYLES, StyleAnswer, extract_program, get_style, student_input

FIXTURES = Path(__file__).parent / "fixtures" / "teacher_outputs"


def test_registry_and_student_input():
    assert {"cot", "pot", "eot", "kp_cot", "kp_pot", "decomp", "dss"} <= set(STYLES)
    assert student_input("  How many apples? ", "pot") == "[pot] How many apples?"
    assert student_input("Q", "dss") == "[dss] Q"
    assert student_input("Q", "dss", task="rationale") == "[dss:rationale] Q"
    with pytest.raises(KeyError, match="unknown style 'poem'"):
        get_style("poem")
    with pytest.raises(ValueError):
        student_input("Q", "cot", task="rationale")


def test_text_styles():
    assert get_style("cot").answer("3 + 4 = 7. The answer is 7.").answer == "7"
    assert get_style("cot").answer("No idea.").error == "no number"
    assert get_style("dss").answer("The answer is 1,200.").answer == "1200"
    assert get_style("dss").answer("45").answer == "45"
    decomp = get_style("decomp")
    text = "Q1: How many pens in 3 packs?\nA1: 3 * 12 = 36.\nQ2: How many are left after 10?\nA2: 36 - 10 = 26."
    assert decomp.answer(text).answer == "26"
    assert decomp.answer(text + "\nThe answer is 26.").answer == "26"
    assert decomp.answer("Q1: What is asked?").error == "no sub-answer"


def test_knowledge_prompt_styles():
    kp = ("Core question: How much does she spend?\nKey information: 3 books at $12; a $5 bookmark.\n"
          "Solution: 3 * 12 = 36 and 36 + 5 = 41. The answer is 41.")
    assert get_style("kp_cot").answer(kp).answer == "41"
    one_line = "Core question: total? Key information: 2 and 3. Solution: 2 + 3 = 5. The answer is 5."
    assert get_style("kp_cot").answer(one_line).answer == "5"
    assert get_style("kp_cot").answer("The answer is 5.").error == "no Solution: section"
    program = ("**Core question:** How many left?\n**Key information:** 20 cakes, 7 eaten.\n"
               "**Solution:**\n```python\ncakes = 20\neaten = 7\nans = cakes - eaten\n```")
    results = get_style("kp_pot").answers([program, "Solution: ans = 2 ** 5", "Core question: x"], workers=1)
    assert [r.answer for r in results] == ["13", "32", None]
    assert results[2].error == "no Solution: section"


def test_extract_program_strips_fences_and_chatter():
    assert extract_program("Here you go:\n```python\nx = 1\nans = x\n```\nDone.") == "x = 1\nans = x\n"
    bare = "Sure! Here is the program:\nx = 4\nans = x * 2\nThe answer is 8."
    assert extract_program(bare) == "x = 4\nans = x * 2\n"
    assert extract_program("ans = 3\n") == "ans = 3\n"


def test_pot_errors_are_reasons():
    results = get_style("pot").answers(["import os\nans = 1", "ans = 1 / 0", "x = 3", "print('hi')"], workers=1)
    assert [r.answer for r in results] == [None] * 4
    assert "forbidden" in results[0].error and "ZeroDivisionError" in results[1].error
    assert results[2].error == "no ans" and results[3].error == "no ans"


def test_eot_style():
    results = get_style("eot").answers(["```\n% cost\nx = 3\nans = 4x\n```", "ans = y"])
    assert results[0].answer == "12" and results[1].error == "underdetermined"


def _trusted_exec(code: str) -> Fraction:
    """The fixture program's value by plain exec in this process: `ans`, else `solution()`, else last print."""
    namespace: dict = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, namespace)  # noqa: S102 - our own fixture programs
        value = namespace["ans"] if "ans" in namespace else namespace["solution"]() if "solution" in namespace else None
    if value is None:
        value = re.findall(r"-?\d+(?:\.\d+)?", out.getvalue())[-1]
    return Fraction(str(value)) if isinstance(value, (float, str)) else Fraction(value)


def test_pot_fixture_agreement():
    rows = read_jsonl(FIXTURES / "pot.jsonl")
    assert len(rows) >= 100
    results = get_style("pot").answers([r["text"] for r in rows], timeout_s=5.0)
    agree = 0
    for row, result in zip(rows, results):
        expected = _trusted_exec(row["code"])
        agree += result.answer is not None and answers_match(result.answer, str(float(expected)))
    assert agree / len(rows) >= 0.99, [(r["id"], res) for r, res in zip(rows, results) if res.answer is None]


def test_handwritten_teacher_outputs():
    """Hand-written outputs in the messiest shapes real teachers produce; expected answers written by hand."""
    rows = read_jsonl(FIXTURES / "handwritten.jsonl")
    for style in ("cot", "pot", "eot"):
        mine = [r for r in rows if r["style"] == style]
        assert len(mine) >= 6
        results = get_style(style).answers([r["text"] for r in mine], timeout_s=5.0)
        assert [r.answer for r in results] == [r["expected"] for r in mine]


# Programs run as written (issue 12): a line that does not parse fails the program, naming the line; the shapes
# real teachers write (fences, a line of prose around a bare program, `def solution()`, prints) still run.
TRUNCATED_PROGRAMS = [
    ("ans = 20\nans = 30 +", "(line 2: 'ans = 30 +')"),
    ("= 20\nans = 20\nans", "(line 1: '= 20')"),
    ("Here is the code:\nx = 4\nans = x *", "(line 2: 'ans = x *')"),
    ("x = 5\nans = x\nfor i in range", "(line 3: 'for i in range')"),
    ("x = 5\nans = x\ndef solution", "(line 3: 'def solution')"),
    ("ans = 5\nprint(ans", "(line 2: 'print(ans')"),
    ("ans = 5\nprint(f'The answer is", "(line 2: \"print(f'The answer is\")"),
    ("```python\nans = 20\nans = 30 +", "(line 2: 'ans = 30 +')"),  # a fence cut off with its program
]
WRITTEN_PROGRAMS = [
    ("Here is the code:\nx = 4\nans = x * 2\nThe answer is 8.", "8"),
    ("Sure!\nans = 3", "3"),
    ("Therefore, we compute:\nans = 4\n**Answer:** 4", "4"),
    ("Step-by-step solution:\nans = 5\n- Note: done.", "5"),
    ("x = 1\nans = x\n`ans` holds it.", "1"),
    ("def solution():\n    return 9\n\nprint(solution())", "9"),
    ("total = (1 +\n2)\nprint(total)", "3"),
    ("Sure! Let me write a program.\ndef solution():\n    return 7\nThe answer is printed above.", "7"),
    ("Code (Python):\nans = 6\n---\n(6 apples)\n42 is not the answer; 6 is.\n✅ Done", "6"),
    ("1. Define the variables\nx = 3\nans = x\n\nExplanation: x is 3.\nÜbrigens: fertig.", "3"),
]


def test_programs_run_as_written():
    texts = [t for t, _ in TRUNCATED_PROGRAMS] + [t for t, _ in WRITTEN_PROGRAMS]
    results = get_style("pot").answers(texts, timeout_s=5.0, workers=1)
    for (text, line), result in zip(TRUNCATED_PROGRAMS, results):
        assert result.answer is None and result.error.startswith("syntax error: "), (text, result)
        assert result.error.endswith(line), (text, result)
    for (text, answer), result in zip(WRITTEN_PROGRAMS, results[len(TRUNCATED_PROGRAMS):]):
        assert (result.answer, result.error) == (answer, None), (text, result)
    assert extract_program("ans = 20\nans = 30 +") == "ans = 20\nans = 30 +\n"
    assert extract_program("Sure!\nx = 1\nans = x +\nThe answer is 8.") == "x = 1\nans = x +\n"


def test_truncated_equations_are_rejected_with_the_line():
    texts = ["x = 20\nans = x +", "x = 3\nans", "x = 3, y =", "apples = 12\nans = (apples", "x = 3\nans = 2 *"]
    lines = ["'ans = x +'", "'ans'", "'x = 3, y ='", "'ans = (apples'", "'ans = 2 *'"]
    results = get_style("eot").answers(texts, timeout_s=5.0, workers=1)
    for text, line, result in zip(texts, lines, results):
        assert result.answer is None and result.error.startswith("line ") and result.error.endswith(line), result
    assert get_style("eot").answer("% apples\napples = 12\nans = apples * 3").answer == "36"


@pytest.mark.parametrize("text, reason", [
    ("48 + 24 = 72. The answer is", "cut off: after 'The answer is'"),
    ("Natalia sold 48 + 24 = 72 clips.\n**Answer:**", "cut off: after '**Answer:**'"),
    ("So she saves $\\boxed{72,", "cut off: inside \\boxed{"),
    ("The answer is 1,", "cut off: mid-sentence (ends with ',')"),
    ("She sold 48 and then 24, so the total is 48 + 24 =", "cut off: mid-equation (ends with '=')"),
    ("The answer is 72.\n\n(Check: 72 - 24 =", "cut off: mid-equation (ends with '=')"),
    ("In April she sold 48, in May half as many: 48 /", "cut off: mid-equation (ends with '/')"),
    ("So she sold 48 + 24", "cut off: mid-equation (an operation without its result)"),
    ("She sold 48 clips in April and 24 in", "cut off: mid-sentence (ends with 'in')"),
])
def test_cut_off_cot_is_a_reject(text, reason):
    assert get_style("cot").answer(text) == StyleAnswer(None, reason)


@pytest.mark.parametrize("text, answer", [
    ("48/2 = 24. 48 + 24 = 72", "72"),  # a final equation states its result
    ("Total: 72", "72"),
    ("The answer is 72 apples", "72"),  # with a marker, a last word is the unit
    ("So the answer is $\\boxed{18}$.", "18"),
    ("She needs 3/4", "0.75"),  # a fraction, not an open division
    ("The temperature is -7", "-7"),
    ("To find the total, we add.\n\n**Final answer: 72**", "72"),
    ("45", "45"),
])
def test_finished_cot_still_answers(text, answer):
    assert get_style("cot").answer(text) == StyleAnswer(answer, None)


def test_cut_off_decompositions_and_kp_solutions():
    decomp = "Q1: How many pens in 3 packs?\nA1: 3 * 12 = 36.\nQ2: How many are left after 10?\nA2: 36 - 10 ="
    assert get_style("decomp").answer(decomp).error == "cut off: mid-equation (ends with '=')"
    assert get_style("decomp").answer(decomp + " 26.").answer == "26"
    kp = "Core question: total?\nKey information: 2 and 3.\nSolution: 2 + 3 = 5. The answer is"
    assert get_style("kp_cot").answer(kp).error == "cut off: after 'The answer is'"
