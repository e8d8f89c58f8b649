"""KPDD: key-point structure checks on the symbolic teacher's kp_cot / kp_pot output, and the ablation."""
from __future__ import annotations

import pytest

from distill_jax.data.records import check_rationale_record
from distill_jax.data.synthetic import generate
from distill_jax.methods import kpdd
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import get_style
from helpers_methods import teacher_records


@pytest.fixture(scope="module")
def problems():
    return generate(30, seed=13, min_steps=1, max_steps=3, distractor_rate=1.0)


@pytest.fixture(scope="module")
def by_id(problems):
    return {p.id: p for p in problems}


@pytest.mark.parametrize("style", ["kp_cot", "kp_pot"])
def test_teacher_key_points_pass(problems, by_id, style):
    records = teacher_records(problems, style)
    kept, rejects = kpdd.kp_records(records, by_id)
    assert rejects == [] and len(kept) == len(records)
    for rec in kept:
        kp = kpdd.parse_key_points(rec["rationale"])
        assert kp.core_question and kp.key_information and kp.solution
        assert rec["meta"]["kp_check"]["ok"] and answers_match(rec["meta"]["kp_check"]["answer"], rec["answer"])


def _replace(record: dict, old: str, new: str) -> dict:
    assert old in record["rationale"]
    return dict(record, rationale=record["rationale"].replace(old, new, 1))


def test_broken_key_points_are_rejected_with_reasons(problems, by_id):
    records = teacher_records(problems[:4], "kp_cot")
    p0 = problems[0]
    kp = kpdd.parse_key_points(records[0]["rationale"])
    distractor = next(n["sentence"] for n in p0.extra["graph"] if n.get("distractor"))
    broken = [
        _replace(records[0], f"Core question: {kp.core_question}\n", ""),
        _replace(records[1], "Key information: ", "Key information: It costs 98765 dollars. "),
        _replace(records[0], "Key information: ", f"Key information: {distractor} "),
        _replace(records[2], f"The answer is {records[2]['answer']}.", f"The answer is {int(records[2]['answer']) + 1}."),
        _replace(records[3], "Solution:", "Working:"),
    ]
    checks = kpdd.check_key_points(broken, by_id)
    expected = ["no core question", "not in the question: [98765.0]", "repeats distractor numbers",
                "!= gold", "no solution"]
    for check, want in zip(checks, expected):
        assert not check.ok and any(want in reason for reason in check.reasons), check.reasons
    kept, rejects = kpdd.kp_records(broken, by_id)
    assert kept == [] and all(r["reason"].startswith("kpdd: ") and r["correct"] is False for r in rejects)


def test_teacher_mistakes_fail_the_solution_check(problems, by_id):
    noisy = teacher_records(problems, "kp_pot", error_rate=1.0, seed=2)
    checks = kpdd.check_key_points(noisy, by_id)
    assert [c.ok for c in checks] == [r["correct"] for r in noisy]
    assert not any(c.ok for c in checks)


@pytest.mark.parametrize("style,plain", [("kp_cot", "cot"), ("kp_pot", "pot")])
def test_ablation_strips_key_points_and_keeps_the_solution(problems, style, plain):
    records = teacher_records(problems, style)
    stripped = [kpdd.strip_key_points(r) for r in records]
    read = get_style(plain).answers([r["rationale"] for r in stripped])
    for i, (rec, src, ans) in enumerate(zip(stripped, records, read)):
        check_rationale_record(rec, f"ablation[{i}]")
        assert rec["style"] == plain and rec["meta"]["ablation"] == "no_key_points"
        assert "Core question" not in rec["rationale"] and "Key information" not in rec["rationale"]
        assert src["rationale"].endswith(rec["rationale"])
        assert answers_match(ans.answer, rec["answer"])
    with pytest.raises(ValueError, match="kpdd"):
        kpdd.strip_key_points(dict(records[0], style="cot"))
