"""Teacher rationale records for the tests/test_methods_*.py modules: the symbolic teacher's output, verified
the way the teach pipeline verifies (the style's answer reader against the gold answer)."""
from __future__ import annotations

from distill_jax.data.problems import Problem
from distill_jax.data.records import rationale_record
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import get_style
from distill_jax.teacher.symbolic import SymbolicTeacher


def teacher_records(problems: list[Problem], style: str, error_rate: float = 0.0, seed: int = 0) -> list[dict]:
    teacher = SymbolicTeacher(error_rate=error_rate, seed=seed)
    texts = [teacher.rationale(p, style) for p in problems]
    read = get_style(style).answers(texts)
    return [rationale_record(problem_id=p.id, question=p.question, answer=p.answer, style=style, rationale=text,
                             prediction=r.answer, correct=answers_match(r.answer, p.answer),
                             teacher={"model": "symbolic", "sample": 0},
                             meta={"mistake": teacher.trace(p, style)[1]})
            for p, text, r in zip(problems, texts, read)]
