"""Divide-or-Conquer: the solver filter keeps usable decompositions and drops the others; record formats."""
from __future__ import annotations

import pytest

from distill_jax.data.records import check_rationale_record
from distill_jax.data.synthetic import generate
from distill_jax.methods import decompose
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import get_style
from distill_jax.teacher.symbolic import SymbolicTeacher
from helpers_methods import teacher_records


@pytest.fixture(scope="module")
def problems():
    return generate(40, seed=9, min_steps=2, max_steps=4, distractor_rate=0.3)


@pytest.fixture(scope="module")
def solver(problems):
    return decompose.SymbolicSolver(problems)


def _plan(problem) -> list[str]:
    return decompose.subquestions(SymbolicTeacher().rationale(problem, "decomposer"))


def _with_plan(record: dict, plan: list[str]) -> dict:
    return dict(record, rationale="\n".join(f"Q{i}: {q}\nA{i}: ..." for i, q in enumerate(plan, 1)))


def _earlier_step_hits_gold(problem) -> bool:
    """An intermediate equal to the answer ("sells them for $1 each"): a short plan then reaches gold too."""
    steps = [n for n in problem.extra["graph"] if n["op"] != "given"]
    return any(answers_match(n["value"], problem.answer) for n in steps[:-1])


def test_teacher_decompositions_pass_and_broken_ones_are_dropped(problems, solver):
    good = teacher_records(problems, "decomp")
    assert all(decompose.subquestions(r["rationale"]) == _plan(p) for r, p in zip(good, problems))
    verdicts = decompose.filter_decompositions(good, solver)
    assert all(v.kept and answers_match(v.solver_answer, v.gold) and v.reason is None for v in verdicts)
    plain = [(r, p) for r, p in zip(good, problems) if not _earlier_step_hits_gold(p)]
    assert len(plain) >= len(problems) // 2
    truncated = [_with_plan(r, _plan(p)[:-1]) for r, p in plain]  # stops before the question
    reordered = [_with_plan(r, _plan(p)[::-1]) for r, p in plain]  # final question asked first
    broken = decompose.filter_decompositions(truncated + reordered, solver)
    assert not any(v.kept for v in broken)
    assert all(v.reason and not answers_match(v.solver_answer, v.gold) for v in broken)


def test_filter_judges_the_plan_not_the_teachers_arithmetic(problems, solver):
    """With mistakes in the teacher's output: a wrong result keeps a good plan; a dropped step needed later
    breaks it."""
    noisy = teacher_records(problems, "decomp", error_rate=1.0, seed=3)
    verdicts = decompose.filter_decompositions(noisy, solver)
    same_plan = [v.kept for r, v, p in zip(noisy, verdicts, problems)
                 if decompose.subquestions(r["rationale"]) == _plan(p)]
    dropped = [v.kept for r, v in zip(noisy, verdicts) if r["meta"]["mistake"] == "dropped_step"]
    assert same_plan and all(same_plan)
    assert dropped and not any(dropped)
    assert not any(r["correct"] for r in noisy if r["meta"]["mistake"] is not None)


def test_records_follow_the_decomp_format(problems, solver):
    records = teacher_records(problems, "decomp", error_rate=0.3, seed=1)
    sets = decompose.decomp_records(records, solver)
    assert len(sets.decomposer) + len(sets.rejects) == len(records)
    assert sets.decomposer and sets.rejects
    by_id = {p.id: p for p in problems}
    for i, rec in enumerate(sets.decomposer + sets.solver):
        check_rationale_record(rec, f"decomp[{i}]")
        assert rec["style"] == "decomp"
    for rec in sets.decomposer:
        assert rec["meta"]["task"] == "decompose" and rec["meta"]["decomp_filter"]["kept"] is True
        assert rec["meta"]["input"] == f"[decomp:decompose] {rec['question']}"
        assert decompose.subquestions(rec["rationale"]) == _plan(by_id[rec["problem_id"]])
        assert all(line.startswith("Q") for line in rec["rationale"].splitlines())
    for rec in sets.rejects:
        assert rec["reason"].startswith("decomp filter: ") and rec["meta"]["decomp_filter"]["kept"] is False
    # solver records: question + sub-questions -> the teacher's answers, only where the teacher was right
    assert len(sets.solver) == sum(r["correct"] for r in records)
    read = get_style("decomp").answers([r["rationale"] for r in sets.solver])
    for rec, ans in zip(sets.solver, read):
        plan = decompose.subquestions(rec["rationale"])
        assert rec["meta"]["task"] == "solve"
        assert rec["meta"]["input"] == decompose.solver_input(rec["question"], plan)
        assert rec["meta"]["input"].splitlines()[1:] == [f"Q{i}: {q}" for i, q in enumerate(plan, 1)]
        assert answers_match(ans.answer, rec["answer"])


def test_solver_output_is_read_by_the_decomp_style(problems, solver):
    p = problems[0]
    text = solver([(p.question, _plan(p))])[0]
    assert get_style("decomp").answer(text).answer == p.answer
    assert decompose.subquestions(text) == _plan(p)
    stuck = solver([(p.question, ["How many stars are in the sky?"])])[0]
    assert get_style("decomp").answer(stuck).answer is None


def test_solve_fn_with_the_wrong_number_of_outputs_is_an_error(problems):
    records = teacher_records(problems[:2], "decomp")
    with pytest.raises(ValueError, match="solve_fn returned 1 outputs for 2"):
        decompose.filter_decompositions(records, lambda items: ["The answer is 1."])
