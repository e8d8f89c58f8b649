"""The `gold` offline teacher: GSM8K's human solutions turned into CoT, PoT and EoT targets.

CoT is the solution with its `<<expr=value>>` calculator annotations removed and `#### N` rewritten as
`The answer is N.`. PoT and EoT are built from the annotations alone: one assignment per annotation, named
from the words around it, where a literal that equals an earlier result (and is not a number of the question)
becomes a reference to that result, and the last annotation is `ans`. A program is only as faithful as its
annotations, so a problem is rejected with a reason (never guessed) when it has none, when an annotation does
not evaluate to its written value, or when the last one is not the gold answer.
"""
from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from distill_jax.data.problems import Problem
from distill_jax.reasoning.calculator import CalculatorError, evaluate_arithmetic

GOLD_VERSION = "gold@1"
GOLD_STYLES = ("cot", "pot", "eot")

_ANNOTATION = re.compile(r"<<([^<>]*)>>")
_FINAL = re.compile(r"^\s*####\s*(.*?)\s*$", re.M)
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|\.\d+)(?![\w.])")
_WORD = re.compile(r"[A-Za-z]+")
_STOP = frozenset(
    "a an the in on of for to per each is are was were be been and or so then that this it its he she they "
    "his her their them him we you i me my our your because which who from has have had will would can could "
    "as at by with into up out there now than more all also just only if when after before total totals "
    "makes make made does did do get gets got how many much what".split()
)
# Names that would shadow Python builtins or that sympy reads as constants or functions (EoT is solved by sympy).
_UNITS = frozenset(
    "dollar dollars cents cent hours hour minutes minute seconds days day weeks week months years miles mile "
    "pounds pound feet foot inches meters kilometers liters gallons ounces percent points".split()
)
_RESERVED = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(
    "ans pi e i oo nan zoo beta gamma zeta sin cos tan log ln exp sqrt re im sign floor ceiling factorial "
    "binomial rf ff li limit diff integrate solve symbols eq lambda".split()
)
_REL_TOL = Fraction(1, 10**6)
_OPS = ("+", "-", "*", "/", "**", "//", "%")
_TOKEN = re.compile(r"\*\*|//|[-+*/%()]|[^-+*/%()]+")


@dataclass(frozen=True)
class Annotation:
    expr: str
    value: Fraction
    written: str
    line: str  # the solution line it sits on, annotations removed
    name_hint: str


@dataclass(frozen=True)
class GoldResult:
    text: str | None
    reason: str | None  # why no faithful target could be built; None when `text` is set


def strip_annotations(solution: str) -> str:
    return _ANNOTATION.sub("", solution)


def cot_from_solution(solution: str, answer: str | None = None) -> str:
    """The human rationale without calculator annotations, ending `The answer is N.`."""
    body = strip_annotations(solution)
    match = _FINAL.search(body)
    final = answer if answer is not None else (match.group(1).replace(",", "") if match else None)
    steps = body[: match.start()] if match else body
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in steps.splitlines()]
    lines = [line for line in lines if line]
    if final is not None:
        lines.append(f"The answer is {final}.")
    return "\n".join(lines)


def _content(words: list[str]) -> list[str]:
    return [w.lower() for w in words if w.lower() not in _STOP and len(w) > 1]


def _name_hint(line: str, start: int, end: int) -> str:
    """A variable name: the words right after the written value ("24 clips in May" -> clips_may), unless
    they are only a unit ("12 dollars"), then the last words before the equation ("Each box costs")."""
    after = re.sub(r"^[\s$]*[\d,.]+", "", line[end:])  # the written value itself
    after_words = _content(_WORD.findall(re.split(r"[.,;:!?\n]", after, maxsplit=1)[0]))[:2]
    if after_words and not all(w in _UNITS for w in after_words):
        return "_".join(after_words)
    before = line[:start]
    before = before[: before.rfind("=")] if "=" in before else before
    before = re.split(r"[.;:!?]\s", before)[-1]  # the current sentence only
    before_words = _content([w for w in _WORD.findall(before) if w.lower() != "x"])[-2:]
    return "_".join(before_words or after_words)


def parse_annotations(solution: str) -> list[Annotation]:
    out: list[Annotation] = []
    for raw_line in solution.splitlines():
        clean_line = strip_annotations(raw_line).strip()
        for m in _ANNOTATION.finditer(raw_line):
            body = m.group(1)
            if "=" not in body:
                raise CalculatorError(f"annotation <<{body}>> has no '='")
            expr, written = body.rsplit("=", 1)
            written = written.strip().replace(",", "")
            try:
                value = _frac(written)
            except (ValueError, ZeroDivisionError):
                raise CalculatorError(f"annotation <<{body}>>: written value {written!r} is not a number")
            out.append(Annotation(expr.strip(), value, written, clean_line, _name_hint(raw_line, m.start(), m.end())))
    return out


@lru_cache(maxsize=65536)
def _frac(text: str) -> Fraction:
    return Fraction(text)


def _close(a: Fraction, b: Fraction) -> bool:
    return a == b or abs(a - b) <= _REL_TOL * max(Fraction(1), abs(b))


def _literal(tok: str) -> str:
    if "." in tok:
        whole, frac = tok.split(".")
        return f"{int(whole or '0')}.{frac}"
    return str(int(tok))


def _question_numbers(question: str) -> set[Fraction]:
    return {_frac(n) for n in _NUMBER.findall(question.replace(",", ""))}


@dataclass(frozen=True)
class Step:
    name: str
    expr: str  # Python/sympy expression with references to earlier names
    comment: str  # the solution line this step comes from (first step of each line only)


def build_steps(problem: Problem) -> tuple[list[Step] | None, str | None]:
    """The annotation chain as named steps, or (None, reason) when no faithful one exists."""
    solution = str(problem.extra.get("solution") or "")
    if not solution:
        return None, "no solution: the problem has no human solution"
    try:
        anns = parse_annotations(solution)
    except CalculatorError as e:
        return None, f"bad annotation: {e}"
    if not anns:
        return None, "no annotation: the solution has no calculator annotation"
    for i, ann in enumerate(anns, 1):
        try:
            computed = evaluate_arithmetic(ann.expr)
        except (CalculatorError, SyntaxError, ValueError, ZeroDivisionError) as e:
            return None, f"bad annotation: #{i} <<{ann.expr}>> does not evaluate ({e})"
        if not _close(computed, ann.value):
            return None, f"annotation mismatch: #{i} {ann.expr} = {float(computed):g}, written {ann.written}"
    try:
        gold = _frac(str(problem.answer))
    except (ValueError, TypeError, ZeroDivisionError):
        return None, f"bad gold: answer {problem.answer!r} is not a number"
    if not _close(anns[-1].value, gold):
        return None, f"last annotation not gold: {anns[-1].written} vs gold {problem.answer}"

    given = _question_numbers(problem.question)
    steps: list[Step] = []
    latest: dict[Fraction, str] = {}  # value -> the most recent step holding it
    used: set[str] = set()
    seen_lines: set[str] = set()

    def refer(m: re.Match) -> str:
        value = _frac(m.group(1))
        if value not in given and value in latest:
            return latest[value]
        return _literal(m.group(1))

    for i, ann in enumerate(anns):
        expr = _spaced(_NUMBER.sub(refer, ann.expr.replace(",", "").replace(" ", "")))
        last = i == len(anns) - 1
        name = "ans" if last else _unique(ann.name_hint or f"step{i + 1}", used)
        used.add(name)
        comment = ann.line if ann.line not in seen_lines else ""
        seen_lines.add(ann.line)
        steps.append(Step(name, expr, comment))
        latest[ann.value] = name
    return steps, None


def _spaced(expr: str) -> str:
    """`a*(b-c)` -> `a * (b - c)`; a sign (at the start, after `(` or an operator) stays attached."""
    out: list[str] = []
    prev = None
    for tok in _TOKEN.findall(expr):
        if tok in _OPS and prev not in (None, "(") and prev not in _OPS:
            out.append(f" {tok} ")
        else:
            out.append(tok)
        prev = tok
    return "".join(out)


def _unique(hint: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z_]", "", hint.lower()) or "step"
    if base in _RESERVED:
        base = f"{base}_v"
    name, k = base, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    return name


def pot_from_steps(steps: list[Step]) -> str:
    return "\n".join(f"{s.name} = {s.expr}" for s in steps)


def eot_from_steps(steps: list[Step]) -> str:
    lines: list[str] = []
    for s in steps:
        if s.comment:
            lines.append(f"% {s.comment}")
        lines.append(f"{s.name} = {s.expr}")
    return "\n".join(lines)


class GoldTeacher:
    """Offline teacher behind the same interface as the symbolic one: a target text or a reason."""

    version = GOLD_VERSION

    def rationale(self, problem: Problem, style: str, sample: int = 0) -> GoldResult:
        del sample  # one human solution per problem: every sample is the same text (deduplicated later)
        if style not in GOLD_STYLES:
            return GoldResult(None, f"unsupported style: the gold teacher writes {', '.join(GOLD_STYLES)}, not {style}")
        solution = problem.extra.get("solution")
        if not solution:
            return GoldResult(None, "no solution: the problem has no human solution")
        if style == "cot":
            return GoldResult(cot_from_solution(str(solution), problem.answer), None)
        steps, reason = build_steps(problem)
        if steps is None:
            return GoldResult(None, reason)
        return GoldResult(pot_from_steps(steps) if style == "pot" else eot_from_steps(steps), None)
