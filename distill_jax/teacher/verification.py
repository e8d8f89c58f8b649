"""Checking a batch of targets of one style against gold answers (PoT programs run in the sandbox pool)."""
from __future__ import annotations

from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import get_style


def verify(style: str, targets: list[str], golds: list[str | None],
           timeout_s: float = 2.0) -> list[tuple[str | None, str | None]]:
    """(prediction, reject reason or None) per target, in one batch; a gold of None (a generated problem)
    only asks for the prediction."""
    out = []
    for answer, gold in zip(get_style(style).answers(targets, timeout_s=timeout_s), golds):
        if answer.answer is None:
            out.append((None, f"no answer: {answer.error or 'nothing to read'}"))
        elif gold is not None and not answers_match(answer.answer, gold):
            out.append((answer.answer, f"wrong answer: got {answer.answer}, gold {gold}"))
        else:
            out.append((answer.answer, None))
    return out
