"""PaD: injected programs really fail in the sandbox, refine records, and the step-wise verified beam."""
from __future__ import annotations

import pytest

from distill_jax.data.records import check_rationale_record
from distill_jax.data.synthetic import generate
from distill_jax.methods import pad, pad_verify
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.sandbox import run_programs
from distill_jax.reasoning.styles import get_style
from distill_jax.teacher.symbolic import SymbolicTeacher
from helpers_methods import teacher_records


@pytest.fixture(scope="module")
def problems():
    return generate(30, seed=5, min_steps=1, max_steps=3, distractor_rate=0.3)


@pytest.fixture(scope="module")
def pot_records(problems):
    return teacher_records(problems, "pot")


@pytest.fixture(scope="module")
def refined(pot_records):
    return pad.refine_records(pot_records, seed=0, per_program=2, tries=6)


def test_every_injected_program_fails_and_its_edit_is_recorded(pot_records, refined):
    records, stats = refined
    assert stats.programs == len(pot_records) and stats.unusable == 0
    assert len(records) == 2 * len(pot_records) == stats.records
    by_id = {r["problem_id"]: r for r in pot_records}
    rerun = run_programs([r["meta"]["pad"]["faulty_program"] for r in records])
    kinds = set()
    for rec, result in zip(records, rerun):
        info, gold = rec["meta"]["pad"], rec["answer"]
        assert result.error is not None or not answers_match(result.answer, gold), info
        assert info["error"] == result.error and (result.error is not None or info["faulty_answer"] == result.answer)
        assert info["feedback"] == pad.feedback_text(result.error, result.answer)
        edit = info["edit"]
        kinds.add(edit["kind"])
        correct_lines = by_id[rec["problem_id"]]["rationale"].splitlines()
        faulty_lines = info["faulty_program"].splitlines()
        assert edit["kind"] in pad.EDIT_KINDS
        # the edit's `before` lines are the correct program's lines at `line`; the rest is untouched
        n_before = len(edit["before"].splitlines())
        assert correct_lines[edit["line"] - 1:edit["line"] - 1 + n_before] == edit["before"].splitlines()
        n_after = len(edit["after"].splitlines())
        assert faulty_lines[:edit["line"] - 1] == correct_lines[:edit["line"] - 1]
        assert faulty_lines[edit["line"] - 1 + n_after:] == correct_lines[edit["line"] - 1 + n_before:]
        assert faulty_lines[edit["line"] - 1:edit["line"] - 1 + n_after] == edit["after"].splitlines()
    assert kinds == set(pad.EDIT_KINDS)
    assert sum(stats.by_outcome.values()) == len(records)
    assert any(k.startswith("error") for k in stats.by_outcome) and "wrong answer" in stats.by_outcome


def test_injection_is_deterministic_by_seed(pot_records, refined):
    again, _ = pad.refine_records(pot_records, seed=0, per_program=2, tries=6)
    assert again == refined[0]
    other, _ = pad.refine_records(pot_records, seed=1, per_program=2, tries=6)
    assert [r["meta"]["pad"]["faulty_program"] for r in other] != [r["meta"]["pad"]["faulty_program"] for r in again]


def test_refine_records_are_well_formed(pot_records, refined):
    records, _ = refined
    read = get_style("pot").answers([r["rationale"] for r in records])
    for i, (rec, ans) in enumerate(zip(records, read)):
        check_rationale_record(rec, f"refine[{i}]")
        assert rec["style"] == "pot" and rec["meta"]["task"] == "refine" and rec["correct"] is True
        assert answers_match(ans.answer, rec["answer"])  # the target is the correct program
        info = rec["meta"]["pad"]
        assert rec["meta"]["input"] == pad.refine_input(rec["question"], info["faulty_program"], info["feedback"])
        assert rec["meta"]["input"].startswith(f"[pot:refine] {rec['question']}\nProgram:\n")
        assert rec["meta"]["input"].endswith(f"\nFeedback: {info['feedback']}")


def test_a_program_that_misses_its_gold_answer_gets_no_edits(pot_records):
    wrong_gold = dict(pot_records[0], answer=str(int(pot_records[0]["answer"]) + 1))
    records, stats = pad.refine_records([wrong_gold], seed=0)
    assert records == [] and stats.unusable == 1


def test_edits_change_only_their_statement():
    code = "# apples\na = 3  # bought\nb = a + 12\nans = b * a\n"
    edits = pad.candidate_edits(code)
    afters = {(e.kind, e.after) for e in edits}
    assert ("swap_op", "b = a - 12") in afters and ("swap_op", "ans = b / a") in afters
    assert {("change_const", "a = 4"), ("change_const", "a = 2"), ("change_const", "b = a + 22")} <= afters
    assert ("wrong_var", "ans = a * a") in afters and ("wrong_var", "ans = b * b") in afters
    assert ("drop_stmt", "") in afters and ("swap_stmts", "b = a + 12\na = 3  # bought") in afters
    for e in edits:
        if e.kind != "swap_stmts" and e.line != 2:
            assert e.program.startswith("# apples\na = 3  # bought\n")


def _line_variants(reference: list[str], k: int, gold: str, kinds: tuple[str, ...]) -> list[str]:
    """Single-line faults of line k that make the whole program wrong."""
    code = "\n".join(reference) + "\n"
    edits = [e for e in pad.candidate_edits(code) if e.line == k + 1 and e.kind in kinds]
    read = get_style("pot").answers([e.program for e in edits])
    return [e.after for e, r in zip(edits, read) if r.error is not None or not answers_match(r.answer, gold)]


def _proposer(reference: list[str], faults: dict[int, list[str]]):
    """A model that prefers a faulty next line (higher log-probability) over the reference one."""
    def propose(question, lines):
        k = len(lines)
        if k >= len(reference):
            return []
        if lines != reference[:k]:
            return [(reference[k], -1.0)]
        return [(f, -0.1) for f in faults[k]] + [(reference[k], -1.0)]
    return propose


@pytest.mark.parametrize("use_reference", [True, False])
def test_stepwise_beam_steers_to_the_correct_program(problems, use_reference):
    teacher = SymbolicTeacher()
    steered = 0
    cases = [p for p in problems if p.extra["steps"] >= 2][:8]
    for p in cases:
        reference = teacher.rationale(p, "pot").splitlines()
        # Without a reference the scorer sees only what the question shows: miscopied numbers.
        kinds = ("swap_op", "change_const", "wrong_var") if use_reference else ("change_const",)
        faults = {k: _line_variants(reference, k, p.answer, kinds) for k in range(len(reference))}
        assert sum(map(len, faults.values())) > 0
        propose = _proposer(reference, faults)
        greedy = []
        while (step := propose(p.question, greedy)):
            greedy.append(max(step, key=lambda s: s[1])[0])
        assert not answers_match(get_style("pot").answer("\n".join(greedy)).answer, p.answer)
        ref_values = pad_verify.reference_values_from_text(teacher.rationale(p, "cot")) if use_reference else None
        best = pad_verify.stepwise_beam(propose, p.question, beam=3, max_steps=12, reference_values=ref_values)[0]
        assert best.finished
        steered += best.program.splitlines() == reference
    assert steered == len(cases)


def test_score_partial_zero_for_broken_prefixes(problems):
    q = problems[0].question
    assert pad_verify.score_partial(q, "x = (3 +") == 0.0
    assert pad_verify.score_partial(q, "x = y + 1") == 0.0
    assert pad_verify.score_partial(q, "x = 1 / 0") == 0.0
