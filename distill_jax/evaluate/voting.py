"""Majority voting over answers from several styles and/or samples (ETD voting, self-consistency).

The rule, so every number that depends on it can be reproduced by hand:
1. Null predictions (no answer could be read) do not vote.
2. Answers vote by numeric equality under `answers_match` (so `0.5` and `0.50000001` are one candidate);
   a candidate is represented by the first answer that created it.
3. The candidate with the most votes wins.
4. Ties go to the candidate whose earliest vote comes first in the given order. Callers order the votes by
   style priority (the order styles are listed in the eval config, e.g. pot, eot, cot: executed answers before
   parsed ones) and then by sample index, so a tie is broken by the most trusted style's first sample.
5. No votes at all -> None.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from distill_jax.reasoning.answers import answers_match


@dataclass(frozen=True)
class Vote:
    answer: str | None
    votes: int
    total: int  # non-null votes cast


def majority_vote(answers: Sequence[str | None]) -> Vote:
    """Vote over `answers` in priority order (see the module docstring for the rule)."""
    candidates: list[list] = []  # [answer, count, first_position]
    cast = 0
    for position, answer in enumerate(answers):
        if answer is None:
            continue
        cast += 1
        for cand in candidates:
            if answers_match(answer, cand[0]):
                cand[1] += 1
                break
        else:
            candidates.append([answer, 1, position])
    if not candidates:
        return Vote(None, 0, 0)
    best = max(candidates, key=lambda c: (c[1], -c[2]))
    return Vote(best[0], best[1], cast)
