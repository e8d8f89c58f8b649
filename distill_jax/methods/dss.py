"""Distilling step-by-step (arXiv 2305.02301): two tasks on one input, label and rationale.

From each CoT-like rationale record (style `cot` or `dss`) come two `dss` records on the same question:

- the label task:     input `[dss] <question>`,           target `The answer is N.`,  `meta.task = "label"`;
- the rationale task: input `[dss:rationale] <question>`, target the rationale,       `meta.task = "rationale"`.

The inputs are `styles.student_input(question, "dss", task)`, which the batches module builds from
`meta.task`. The paper's loss is label_loss + lambda * rationale_loss: each record carries its task's weight
in `meta.weight` (defaults 1.0 and 1.0), on top of the training config's per-task weights. The rationale
target drops the final answer sentence by default, so the answer is learned by the label task only
(as in the paper, where the rationale target is the teacher's explanation without the label).
"""
from __future__ import annotations

import re
from typing import Sequence

from distill_jax.methods.records_ops import derive, require_style
from distill_jax.reasoning.answers import extract_answer

SOURCE_STYLES = ("cot", "dss")
_FINAL_SENTENCE = re.compile(r"\s*(?:so\s+|therefore,?\s+)?the\s+(?:final\s+)?answer\s+is\b[^\n]*$", re.IGNORECASE)


def label_text(answer: str) -> str:
    return f"The answer is {answer}."


def split_rationale(text: str) -> tuple[str, str | None]:
    """(the rationale without its final `The answer is N.` sentence, that sentence's answer)."""
    found = _FINAL_SENTENCE.search(text.rstrip())
    if not found:
        return text.strip(), None
    return text[:found.start()].strip(), extract_answer(found.group())


def dss_records(records: Sequence[dict], *, label_weight: float = 1.0, rationale_weight: float = 1.0,
                keep_label_in_rationale: bool = False) -> list[dict]:
    """Two records (label, rationale) per usable source record, in source order.

    The label is the gold answer when the record has one, else the rationale's own answer; records
    marked incorrect, or whose rationale is nothing but the answer, are skipped.
    """
    require_style(records, SOURCE_STYLES, "dss")
    out = []
    for rec in records:
        if rec.get("correct") is False:
            continue
        rationale, stated = split_rationale(rec["rationale"])
        answer = rec.get("answer") or stated or extract_answer(rec["rationale"])
        if answer is None or not rationale:
            continue
        target = rec["rationale"].strip() if keep_label_in_rationale else rationale
        out.append(derive(rec, style="dss", rationale=label_text(answer), method="dss", task="label",
                          weight=label_weight, prediction=answer))
        out.append(derive(rec, style="dss", rationale=target, method="dss", task="rationale",
                          weight=rationale_weight, prediction=answer))
    return out
