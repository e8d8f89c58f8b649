"""KPDD (Key-Point-Driven Distillation, arXiv 2407.10167): check the key-point structure, and an ablation.

A `kp_cot` / `kp_pot` rationale (reasoning/styles.py) is

    Core question: <what is asked, restated>
    Key information: <only the facts needed>
    Solution: <a CoT, or a program setting `ans`>

`check_key_points` verifies, per record:
- core question: present, non-empty, and about the problem (it shares a content word with the question);
- key information: present, non-empty, carries a number when the question has any, and every number in
  it is one the question states (no invented facts); with the problem's distractor facts known (synthetic
  problems), it must not repeat a number that only a distractor states;
- solution: its answer (read as cot / pot) matches the gold answer.
`kp_records` keeps the records that pass, and returns the others as rejects with the reasons.

`strip_key_points` is the ablation: the same solution as a plain `cot` / `pot` record, so a demo can train
with and without key points on the same solutions (and see what key points do when distractors are present).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

from distill_jax.data.problems import Problem
from distill_jax.methods.records_ops import NUMBER, derive, question_numbers, require_style
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import get_style

KP_STYLES = {"kp_cot": "cot", "kp_pot": "pot"}
_HEAD = re.compile(r"^\s*(?:\*\*)?(core question|key information|solution)\s*(?:\*\*)?\s*:\s*(?:\*\*)?",
                   re.IGNORECASE | re.MULTILINE)
_STOPWORDS = frozenset("a an the of in on at to for and or is are was were does do did how many much what "
                       "which who when each every it its their they he she his her there this that by with "
                       "from as be".split())


@dataclass(frozen=True)
class KeyPoints:
    core_question: str | None
    key_information: str | None
    solution: str | None


def parse_key_points(text: str) -> KeyPoints:
    """The three sections of a key-point rationale (None for a missing one); a section ends at the next head."""
    heads = list(_HEAD.finditer(text))
    parts: dict[str, str] = {}
    for h, nxt in zip(heads, heads[1:] + [None]):
        name = h.group(1).lower()
        if name not in parts:
            parts[name] = text[h.end():nxt.start() if nxt else len(text)].strip()
    return KeyPoints(parts.get("core question"), parts.get("key information"), parts.get("solution"))


@dataclass
class KpCheck:
    ok: bool
    answer: str | None  # the solution's answer
    reasons: list[str] = field(default_factory=list)


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOPWORDS and len(w) > 2}


def distractor_numbers(problem: Problem) -> set[float]:
    """Numbers only distractor facts of a synthetic problem state (empty for other problems)."""
    graph = problem.extra.get("graph") or []
    distract = " ".join(n["sentence"] for n in graph if n.get("distractor"))
    used = " ".join(n["sentence"] for n in graph if not n.get("distractor"))
    return question_numbers(distract) - question_numbers(used) if distract else set()


def check_key_points(records: Sequence[dict], problems: Mapping[str, Problem] | None = None,
                     timeout_s: float = 2.0, workers: int | None = None) -> list[KpCheck]:
    """The structure and solution checks of the module doc, for many records (programs in one sandbox batch)."""
    require_style(records, KP_STYLES, "kpdd")
    parsed = [parse_key_points(r["rationale"]) for r in records]
    checks = [KpCheck(False, None) for _ in records]
    for inner in set(KP_STYLES.values()):
        idx = [i for i, r in enumerate(records) if KP_STYLES[r["style"]] == inner and parsed[i].solution]
        found = get_style(inner).answers([parsed[i].solution for i in idx], timeout_s=timeout_s, workers=workers)
        for i, a in zip(idx, found):
            checks[i].answer = a.answer
    for rec, kp, check in zip(records, parsed, checks):
        question = rec["question"]
        if not kp.core_question:
            check.reasons.append("no core question")
        elif not _content_words(kp.core_question) & _content_words(question):
            check.reasons.append("core question shares no content word with the question")
        if not kp.key_information:
            check.reasons.append("no key information")
        else:
            stated = question_numbers(question)
            info = {float(m.group().replace(",", "")) for m in NUMBER.finditer(kp.key_information)}
            if stated and not info:
                check.reasons.append("key information has no number")
            invented = sorted(info - stated)
            if invented:
                check.reasons.append(f"key information states numbers not in the question: {invented}")
            problem = (problems or {}).get(str(rec["problem_id"]))
            leaked = sorted(info & distractor_numbers(problem)) if problem is not None else []
            if leaked:
                check.reasons.append(f"key information repeats distractor numbers: {leaked}")
        if kp.solution is None:
            check.reasons.append("no solution")
        elif check.answer is None:
            check.reasons.append("solution gives no answer")
        elif rec.get("answer") is not None and not answers_match(check.answer, rec["answer"]):
            check.reasons.append(f"solution answer {check.answer} != gold {rec['answer']}")
        check.ok = not check.reasons
    return checks


def kp_records(records: Sequence[dict], problems: Mapping[str, Problem] | None = None,
               timeout_s: float = 2.0) -> tuple[list[dict], list[dict]]:
    """(kept, rejects): records that pass `check_key_points`, with the verdict in `meta.kp_check`."""
    kept, rejects = [], []
    for rec, check in zip(records, check_key_points(records, problems, timeout_s)):
        row = {**rec, "meta": {**(rec.get("meta") or {}), "kp_check": asdict(check)}}
        if check.ok:
            kept.append(row)
        else:
            rejects.append({**row, "correct": False, "reason": "kpdd: " + "; ".join(check.reasons)})
    return kept, rejects


def strip_key_points(record: dict) -> dict:
    """The ablation: the record's solution alone, as a plain `cot` / `pot` record."""
    require_style([record], KP_STYLES, "kpdd")
    solution = parse_key_points(record["rationale"]).solution
    if not solution:
        raise ValueError(f"kpdd: record for problem {record['problem_id']!r} has no Solution: section")
    return derive(record, style=KP_STYLES[record["style"]], rationale=solution, method="kpdd",
                  correct=record.get("correct"), extra_meta={"ablation": "no_key_points"})
