"""The gold teacher on the real GSM8K train split: coverage as FACTS.md measured it, and verified targets."""
from __future__ import annotations

from collections import Counter

import pytest

from distill_jax.data.problems import Problem, load_problems
from distill_jax.reasoning.answers import answers_match, extract_answer
from distill_jax.reasoning.equations import solve_equations
from distill_jax.reasoning.sandbox import run_programs
from distill_jax.teacher.gold import GoldTeacher, build_steps, cot_from_solution, eot_from_steps, pot_from_steps

# Verifying every kept target costs minutes (7k sandboxed programs, 7k sympy systems); fixed strides over the
# whole split check 1 in 12 programs and 1 in 96 equation systems within the test budget.
STRIDE = 12


@pytest.fixture(scope="module")
def train(data_dir) -> list[Problem]:
    return load_problems("gsm8k_train", data_dir)


@pytest.fixture(scope="module")
def built(train) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    """(style, id) -> (target, reject reason) for PoT and EoT, which share one annotation chain."""
    out = {}
    for p in train:
        steps, reason = build_steps(p)
        out[("pot", p.id)] = (pot_from_steps(steps) if steps else None, reason)
        out[("eot", p.id)] = (eot_from_steps(steps) if steps else None, reason)
    return out


def test_the_teacher_gives_the_same_targets(train, built):
    teacher = GoldTeacher()
    for p in train[::STRIDE]:
        for style in ("pot", "eot"):
            r = teacher.rationale(p, style)
            assert (r.text, r.reason) == built[(style, p.id)]


def test_coverage_matches_the_measured_annotation_facts(train, built):
    assert len(train) == 7473
    reasons = Counter((built[("pot", p.id)][1] or "kept").split(":")[0] for p in train)
    # FACTS.md: 95 solutions have no annotation; the last annotation equals the gold answer in 7001.
    assert reasons["no annotation"] == 95
    assert 6930 <= reasons["kept"] <= 7001
    assert sum(reasons.values()) == 7473
    assert set(reasons) <= {"kept", "no annotation", "last annotation not gold", "annotation mismatch",
                            "bad annotation"}


def test_sampled_programs_run_to_the_gold_answer(train, built):
    sample = [p for p in train[::STRIDE] if built[("pot", p.id)][0] is not None]
    results = run_programs([built[("pot", p.id)][0] for p in sample])
    wrong = [(p.id, r.answer, r.error) for p, r in zip(sample, results) if not answers_match(r.answer, p.answer)]
    assert len(sample) > 550 and wrong == []


def test_sampled_equations_solve_to_the_gold_answer(train, built):
    sample = [p for p in train[1::STRIDE * 8] if built[("eot", p.id)][0] is not None]
    wrong = []
    for p in sample:
        r = solve_equations(built[("eot", p.id)][0])
        if not answers_match(r.answer, p.answer):
            wrong.append((p.id, r.answer, r.error))
    assert len(sample) > 65 and wrong == []


def test_cot_targets_for_the_whole_split(train):
    teacher = GoldTeacher()
    for p in train:
        text = teacher.rationale(p, "cot").text
        assert "<<" not in text and "####" not in text, p.id
        assert text.endswith(f"The answer is {p.answer}.") and extract_answer(text) == p.answer, p.id


def test_first_problem_reads_as_named_steps(train):
    p = train[0]  # Natalia: 48/2 = 24 clips in May, 48 + 24 = 72
    assert cot_from_solution(p.extra["solution"], p.answer) == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n"
        "The answer is 72.")
    teacher = GoldTeacher()
    assert teacher.rationale(p, "pot").text == "clips_may = 48 / 2\nans = 48 + clips_may"
    eot = teacher.rationale(p, "eot").text
    assert eot.splitlines()[0].startswith("% Natalia sold") and eot.endswith("ans = 48 + clips_may")


def _problem(solution: str, answer: str, question: str = "How many?") -> Problem:
    return Problem("t-1", question, answer, "gsm8k", {"solution": solution})


def test_unfaithful_solutions_are_rejected_with_a_reason():
    teacher = GoldTeacher()
    wrong_value = _problem("He has 2+2 = <<2+2=5>>5 apples.\n#### 5", "5")
    assert teacher.rationale(wrong_value, "pot").reason.startswith("annotation mismatch: #1 2+2 = 4, written 5")
    not_gold = _problem("He has 2+2 = <<2+2=4>>4 apples, then 4*3 = 12.\n#### 12", "12")
    assert teacher.rationale(not_gold, "pot").reason == "last annotation not gold: 4 vs gold 12"
    bare = _problem("He has 4 apples.\n#### 4", "4")
    assert teacher.rationale(bare, "eot").reason.startswith("no annotation")
    assert teacher.rationale(Problem("t-2", "q", "1", "svamp"), "cot").reason.startswith("no solution")
    assert teacher.rationale(bare, "kp_pot").reason.startswith("unsupported style")


def test_an_earlier_result_is_referenced_unless_the_question_states_that_number():
    solution = ("Each box costs 3*4 = <<3*4=12>>12 dollars.\nTwo boxes cost 12*2 = <<12*2=24>>24 dollars.\n"
                "With the 12 dollar tip that is 24+12 = <<24+12=36>>36.\n#### 36")
    question = "A box has 3 rows of 4 cakes at $1 each. What do 2 boxes cost?"
    steps, reason = build_steps(_problem(solution, "36", question))
    assert reason is None
    assert [(s.name, s.expr) for s in steps] == [
        ("box_costs", "3 * 4"), ("boxes_cost", "box_costs * 2"), ("ans", "boxes_cost + box_costs")]
    # When the question itself says 12, a literal 12 is that number, not the earlier result.
    steps, _ = build_steps(_problem(solution, "36", "A box has 12 cakes. There is a 12 dollar tip."))
    assert steps[1].expr == "12 * 2"
