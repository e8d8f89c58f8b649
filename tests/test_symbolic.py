"""The symbolic teacher: every style read back by the reasoning package to the gold answer; errors at a set rate."""
from __future__ import annotations

import pytest

from distill_jax.data.synthetic import generate
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import get_style
from distill_jax.teacher.symbolic import ANSWER_STYLES, MISTAKES, SymbolicTeacher

N = 300


@pytest.fixture(scope="module")
def problems():
    return generate(N, seed=21, min_steps=1, max_steps=5, distractor_rate=0.3)


def _read_back(problems, teacher: SymbolicTeacher, style: str) -> tuple[list[bool], list]:
    outputs = [teacher.rationale(p, style) for p in problems]
    read = get_style(style).answers(outputs)
    right = [answers_match(r.answer, p.answer) for r, p in zip(read, problems)]
    failures = [(p.question, out, r) for p, out, r, ok in zip(problems, outputs, read, right) if not ok]
    return right, failures


@pytest.mark.parametrize("style", ANSWER_STYLES)
def test_every_style_reads_back_to_gold(problems, style):
    right, failures = _read_back(problems, SymbolicTeacher(error_rate=0.0, seed=0), style)
    assert all(right), failures[:3]


@pytest.mark.parametrize("style", ["cot", "pot", "eot", "decomp"])
def test_error_rate_is_respected(problems, style):
    teacher = SymbolicTeacher(error_rate=0.2, seed=1)
    right, _ = _read_back(problems, teacher, style)
    assert abs(right.count(False) / len(right) - 0.2) <= 0.06
    kinds = [teacher.trace(p, style)[1] for p in problems]
    assert set(kinds) - {None} == set(MISTAKES)
    # exactly the rationales with a mistake read back wrong
    assert [k is None for k in kinds] == right


def test_key_information_leaves_distractors_out(problems):
    teacher = SymbolicTeacher()
    with_distractor = [p for p in problems if p.extra["has_distractor"]]
    assert with_distractor
    for p in with_distractor:
        text = teacher.rationale(p, "kp_cot")
        key = text.split("Key information:", 1)[1].split("Solution:", 1)[0]
        distractors = [n["sentence"] for n in p.extra["graph"] if n.get("distractor")]
        assert text.startswith(f"Core question: {p.extra['graph'][-1]['ask']}")
        assert all(d not in key for d in distractors)


def test_decomposer_target_lists_the_sub_questions(problems):
    teacher = SymbolicTeacher()
    for p in problems[:50]:
        target = teacher.rationale(p, "decomposer")
        asks = [n["ask"] for n in p.extra["graph"] if n["op"] != "given"]
        assert all(a in target for a in asks) and target.count("?") == len(asks)


def test_deterministic_given_seed():
    ps = generate(40, seed=2, max_steps=4)
    a, b, c = SymbolicTeacher(0.5, seed=3), SymbolicTeacher(0.5, seed=3), SymbolicTeacher(0.5, seed=4)
    for style in ("cot", "pot"):
        assert [a.rationale(p, style) for p in ps] == [b.rationale(p, style) for p in ps]
        assert [a.rationale(p, style) for p in ps] != [c.rationale(p, style) for p in ps]
    assert a.rationale(ps[0], "cot", sample=0) == b.rationale(ps[0], "cot", sample=0)


def test_new_problems(problems):
    teacher = SymbolicTeacher(seed=5)
    p = problems[0]
    harder = teacher.new_problem(p, "harder", sample=1)
    assert harder.extra["steps"] == p.extra["steps"] + 1 and harder.answer != p.answer
    assert harder == teacher.new_problem(p, "harder", sample=1)
    similar = teacher.new_problem(p, "similar")
    assert similar.extra["steps"] == p.extra["steps"] and similar.id != harder.id
    for q in (harder, similar):  # the teacher solves what it makes
        assert get_style("cot").answer(teacher.rationale(q, "cot")).answer == q.answer
    with pytest.raises(ValueError, match="unknown kind"):
        teacher.new_problem(p, "easier")
    with pytest.raises(ValueError, match="unknown style"):
        teacher.rationale(p, "haiku")


def test_calculator_annotations_are_exact(problems):
    from distill_jax.reasoning.calculator import first_correction

    teacher = SymbolicTeacher(calculator=True)
    for p in problems[:100]:
        text = teacher.rationale(p, "cot")
        assert text.count("<<") == p.extra["steps"] and first_correction(text) is None
        assert get_style("cot").answer(text).answer == p.answer
