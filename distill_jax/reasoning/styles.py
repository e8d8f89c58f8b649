"""Rationale styles (DESIGN.md "Styles"): how each style's output text yields its answer, and the student input.

| style  | output text                                               | answer from                        |
|--------|-----------------------------------------------------------|------------------------------------|
| cot    | steps in words ending `The answer is N.`                  | answers.extract_answer (a text     |
|        |                                                           | answers.cut_off finds cut: reject) |
| pot    | a Python program setting `ans` (or `solution()`)          | sandbox.run_programs               |
| eot    | equations, one per line, `ans = ...`                      | equations.solve_many               |
| kp_cot | `Core question: ... Key information: ... Solution: <CoT>` | the Solution section, as cot       |
| kp_pot | `Core question: ... Key information: ... Solution: <PoT>` | the Solution section, as pot       |
| decomp | `Q1: ...` / `A1: ...` lines, then `The answer is N.`      | the final `The answer is N.`, else |
|        |                                                           | the number in the last `Ak:` line  |
| dss    | the label task's output: `The answer is N.` (or just `N`) | answers.extract_answer             |

Programs come from teachers as they write them: inside ```python fences (the first python fence is the
program) or bare with prose before/after (`Here is the code:` ... `The answer is 42.`); prose lines around a
bare program (see `_is_prose`: words, not broken code) are dropped from both ends. Programs run as written:
a line that does not parse (`ans = 30 +`, a program cut off at max_new_tokens) is a syntax error naming the
line, never dropped. A program that sets no `ans` but prints is read from its output: the last number printed
(`print(total)` is how many teachers end).

Distilling step-by-step trains two tasks on one input: `student_input(q, "dss")` is the label task
(`[dss] q`, the one evaluated) and `student_input(q, "dss", task="rationale")` the rationale task
(`[dss:rationale] q`).
"""
from __future__ import annotations

import keyword
import re
import warnings
from dataclasses import dataclass
from typing import Callable

from distill_jax.reasoning.answers import cut_off, extract_answer

_FENCE = re.compile(r"```")
# `Solution:` may start a line or follow the key information on the same line; markdown bold allowed.
_SOLUTION = re.compile(r"(?:\*\*)?\bsolution\s*(?:\*\*)?\s*:\s*(?:\*\*)?[ \t]*\n?", re.IGNORECASE)
_DECOMP_ANSWER = re.compile(r"^\s*A\d+\s*[:.)]", re.MULTILINE)
_FINAL = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s+is", re.IGNORECASE)

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class StyleAnswer:
    answer: str | None  # canonical number string
    error: str | None  # None when an answer was found


def _no_number() -> StyleAnswer:
    return StyleAnswer(None, "no number")


def _text_answer(text: str) -> StyleAnswer:
    """The answer of a free-text rationale; a text cut off before its answer is a reject (answers.cut_off)."""
    reason = cut_off(text)
    if reason is not None:
        return StyleAnswer(None, reason)
    answer = extract_answer(text)
    return StyleAnswer(answer, None) if answer is not None else _no_number()


def _compiles(code: str) -> bool:
    # Student programs are often sloppy (`x is 5`): their SyntaxWarnings would flood the user's terminal.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            compile(code, "<program>", "exec")  # parsing only; nothing runs here
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
            return False
    return True


# Markdown, list markers and symbols a prose line may start with (`**Answer:**`, `- Note`, `1. First`, `✅ Done`).
_LINE_LEAD = re.compile(r"(?:[*_>#`(\[-]+[ \t]*|\d+[.)][ \t]+|[^\x00-\x7f\w][ \t]*)*")
_NUMBER_THEN_WORD = re.compile(r"\d[\d,.]*[ \t]+(?!(?:if|else|for|and|or|in|not)\b)[^\W\d_]")  # `72 clips.`
_WORD = re.compile(r"[^\W\d_][\w'’]*(?:-[^\W\d_][\w'’]*)*")
# What follows a line's first word when the line is code: a call or index (no space before the bracket, as
# code is written: `Code (Python):` is prose), an attribute, an assignment or an operator.
_CODE_AFTER_WORD = re.compile(r"[(\[]|\.\w|[ \t]*(?:[=+\-*/%@&|^<>~]|:=)")
_STATEMENT_WORDS = frozenset(keyword.kwlist) | {"match", "case"}


def _is_prose(line: str) -> bool:
    """A top-level line of natural language around a bare program (`Here is the code:`, `Sure!`, `The answer
    is 8.`, `**Output:**`, `---`): it does not compile and starts with a word that starts no statement and is
    not followed by code. A broken line of code is not prose (`ans = 30 +`, `= 20`, `print(ans`,
    `for i in range`): it stays in the program, which then fails to parse."""
    if not line.strip():
        return True
    if line[0].isspace() or _compiles(line):
        return False
    body = line[_LINE_LEAD.match(line).end():]
    if not body.strip():  # only markdown (`---`, `**`), unless a bracket may open a cut-off expression
        return not re.search(r"[(\[]", line)
    if _NUMBER_THEN_WORD.match(body):  # a number then a word is no statement (`42 is the answer.`)
        return True
    word = _WORD.match(body)
    if word is None or word.group() in _STATEMENT_WORDS:
        return False
    return not _CODE_AFTER_WORD.match(body, word.end())


def extract_program(text: str) -> str:
    """The program in a teacher/student output: the fenced code, or a bare program with the prose lines before
    and after it stripped. Nothing else is dropped: a line that does not parse stays and fails the program."""
    from distill_jax.reasoning.sandbox import extract_code

    if _FENCE.search(text):
        return extract_code(text)
    if _compiles(text):
        return text
    # One pass from each end (linear: student outputs at eval can be long garbage).
    lines = text.splitlines()
    start, end = 0, len(lines)
    while start < end and _is_prose(lines[start]):
        start += 1
    while end > start and _is_prose(lines[end - 1]):
        end -= 1
    return "\n".join(lines[start:end]) + "\n" if start < end else text


def _solution_section(text: str) -> str | None:
    found = _SOLUTION.search(text)
    return text[found.end():] if found else None


class Style:
    """One style: `answer(text)` / batched `answers(texts)`; subclasses override `answers`."""

    def __init__(self, name: str, description: str):
        self.name = name
        self.description = description

    def answer(self, output_text: str, timeout_s: float = 2.0) -> StyleAnswer:
        return self.answers([output_text], timeout_s=timeout_s)[0]  # the shared pools keep their size

    def answers(self, outputs: list[str], timeout_s: float = 2.0, workers: int | None = None,
                progress: ProgressFn | None = None) -> list[StyleAnswer]:
        results = [self._one(text) for text in outputs]
        if progress:
            progress(len(outputs), len(outputs))
        return results

    def _one(self, text: str) -> StyleAnswer:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Style({self.name!r})"


class CotStyle(Style):
    def _one(self, text: str) -> StyleAnswer:
        return _text_answer(text)


class DecompStyle(Style):
    def _one(self, text: str) -> StyleAnswer:
        finals = list(_FINAL.finditer(text))
        if finals:
            return _text_answer(text[finals[-1].start():])
        subanswers = list(_DECOMP_ANSWER.finditer(text))
        if not subanswers:
            return StyleAnswer(None, "no sub-answer")
        last = text[subanswers[-1].end():].split("\n", 1)[0]
        return _text_answer(last)


class PotStyle(Style):
    def answers(self, outputs: list[str], timeout_s: float = 2.0, workers: int | None = None,
                progress: ProgressFn | None = None) -> list[StyleAnswer]:
        from distill_jax.reasoning.sandbox import run_programs

        results = run_programs([extract_program(t) for t in outputs], timeout_s=timeout_s, workers=workers,
                               progress=progress)
        out = []
        for r in results:
            if r.answer is None and r.error == "no ans" and r.stdout.strip():
                printed = extract_answer(r.stdout)
                out.append(StyleAnswer(printed, None if printed is not None else "no ans"))
            else:
                out.append(StyleAnswer(r.answer, r.error))
        return out


class EotStyle(Style):
    def answers(self, outputs: list[str], timeout_s: float = 2.0, workers: int | None = None,
                progress: ProgressFn | None = None) -> list[StyleAnswer]:
        from distill_jax.reasoning.equations import solve_many

        results = solve_many(list(outputs), timeout_s=timeout_s, workers=workers, progress=progress)
        return [StyleAnswer(r.answer, r.error) for r in results]


class KnowledgePromptStyle(Style):
    """`Core question: ... Key information: ... Solution: ...`; the Solution section is read by `inner`."""

    def __init__(self, name: str, description: str, inner: Style):
        super().__init__(name, description)
        self.inner = inner

    def answers(self, outputs: list[str], timeout_s: float = 2.0, workers: int | None = None,
                progress: ProgressFn | None = None) -> list[StyleAnswer]:
        sections = [_solution_section(t) for t in outputs]
        present = [i for i, s in enumerate(sections) if s is not None]
        inner = self.inner.answers([sections[i] for i in present], timeout_s=timeout_s, workers=workers,
                                   progress=progress)
        results = [StyleAnswer(None, "no Solution: section")] * len(outputs)
        for i, r in zip(present, inner):
            results[i] = r
        return results


_cot = CotStyle("cot", "steps in words, ending `The answer is N.`")
_pot = PotStyle("pot", "a Python program that sets `ans`")
STYLES: dict[str, Style] = {
    "cot": _cot,
    "pot": _pot,
    "eot": EotStyle("eot", "equations, one per line, `ans = ...`"),
    "kp_cot": KnowledgePromptStyle("kp_cot", "core question, key information, then a CoT solution", _cot),
    "kp_pot": KnowledgePromptStyle("kp_pot", "core question, key information, then a PoT solution", _pot),
    "decomp": DecompStyle("decomp", "sub-questions Qk with answers Ak, then `The answer is N.`"),
    "dss": CotStyle("dss", "distilling step-by-step label: `The answer is N.`"),
}
DSS_TASKS = ("label", "rationale")


def get_style(name: str) -> Style:
    try:
        return STYLES[name]
    except KeyError:
        raise KeyError(f"unknown style {name!r}; known: {', '.join(STYLES)}") from None


def student_input(question: str, style: str, task: str | None = None) -> str:
    """The student's input: `[style] question`; dss's rationale task is `[dss:rationale] question`."""
    get_style(style)
    if task is not None and (style != "dss" or task not in DSS_TASKS):
        raise ValueError(f"task {task!r} is only for dss ({', '.join(DSS_TASKS)})")
    prefix = style if task in (None, "label") else f"{style}:{task}"
    return f"[{prefix}] {question.strip()}"
