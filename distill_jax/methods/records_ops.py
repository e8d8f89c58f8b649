"""Helpers the method modules share to derive training records from teacher rationale records.

Derived records stay in the DESIGN.md schema (data/records.py `rationale_record`), so the batches module
reads them like any other, plus three optional `meta` fields that carry what a method needs:

- `meta.task`:   which task of a multi-task method the record trains ("label"/"rationale" for DSS,
                 "refine" for PaD, "decompose"/"solve" for Divide-or-Conquer);
- `meta.weight`: the record's loss weight (DSS's lambda), multiplied into the per-style/per-task weights;
- `meta.input`:  the exact student input text, for tasks whose input is more than `[style] question`
                 (PaD's refine input holds the faulty program and its error; the decomp solver's input the
                 sub-questions). Without it, the input is `styles.student_input(question, style, task)`.
- `meta.derived_from`: where the record came from (`problem_id`, style, sample of the source record).

No JAX here: these modules build records and scorers; the pipelines call train/eval.
"""
from __future__ import annotations

import copy
import re
from collections import Counter
from pathlib import Path
from typing import Iterable

from distill_jax.data.records import check_rationale_record, iter_jsonl, rationale_record


def source_ref(record: dict) -> dict:
    """A short reference to the record a derived one came from."""
    return {"problem_id": record["problem_id"], "style": record["style"],
            "sample": (record.get("teacher") or {}).get("sample")}


def derive(record: dict, *, style: str, rationale: str, method: str, task: str | None = None,
           weight: float | None = None, input_text: str | None = None, correct: bool | None = True,
           prediction: str | None = None, extra_meta: dict | None = None) -> dict:
    """A new rationale record for `style`/`rationale` that keeps the source's problem, round and teacher."""
    meta = {"method": method, "derived_from": source_ref(record)}
    if task is not None:
        meta["task"] = task
    if weight is not None:
        if weight < 0:
            raise ValueError(f"{method}: loss weight must be >= 0, got {weight}")
        meta["weight"] = float(weight)
    if input_text is not None:
        meta["input"] = input_text
    meta.update(extra_meta or {})
    return rationale_record(
        problem_id=str(record["problem_id"]), question=record["question"], answer=record.get("answer"),
        style=style, rationale=rationale, prediction=prediction if prediction is not None else record.get("prediction"),
        correct=correct, round=int(record.get("round", 0)), teacher=copy.deepcopy(record.get("teacher") or {}),
        meta=meta)


def load_records(paths: Iterable[str | Path], *, styles: Iterable[str] | None = None,
                 only_correct: bool = True) -> list[dict]:
    """Rationale records from JSONL files, checked (errors name file:line), optionally filtered."""
    wanted = set(styles) if styles is not None else None
    out = []
    for path in paths:
        for lineno, row in iter_jsonl(path):
            check_rationale_record(row, f"{path}:{lineno}")
            if wanted is not None and row["style"] not in wanted:
                continue
            if only_correct and row.get("correct") is False:
                continue
            out.append(row)
    return out


def require_style(records: Iterable[dict], allowed: Iterable[str], method: str) -> None:
    """Fail naming the first record whose style the method cannot use."""
    allowed = tuple(allowed)
    for i, rec in enumerate(records):
        if rec.get("style") not in allowed:
            raise ValueError(f"{method}: record {i} (problem {rec.get('problem_id')!r}) has style "
                             f"{rec.get('style')!r}; expected one of {', '.join(allowed)}")


NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?")
_WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "hundred": 100, "thousand": 1000, "twice": 2, "double": 2, "doubles": 2, "half": 2, "halves": 2,
    "triple": 3, "triples": 3, "thrice": 3, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4,
    "fourth": 4, "fifth": 5, "dozen": 12, "percent": 100, "%": 100,
}


def question_number_counts(question: str) -> Counter[float]:
    """How often a question states each number, in digits or words (`twice` = 2, `half` = 2, `%` = 100)."""
    counts = Counter(float(m.group().replace(",", "")) for m in NUMBER.finditer(question))
    counts.update(float(_WORD_NUMBERS[w]) for w in re.findall(r"[a-z]+|%", question.lower()) if w in _WORD_NUMBERS)
    return counts


def question_numbers(question: str) -> set[float]:
    """The numbers a question states (see `question_number_counts`)."""
    return set(question_number_counts(question))
