"""Raw teacher completions -> the student's target text for a style.

LLMs wrap what was asked for in chatter ("Sure! Here is the program:"), markdown fences, bold headings and
trailing explanations. Parsing keeps exactly the part the style's verifier and the student need, in the
format reasoning/styles.py reads, or says why it cannot (a reason, never a guess). It does not check
answers: that is verification's job, after parsing.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from distill_jax.reasoning.styles import extract_program

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)
_CHATTER = re.compile(
    r"^(sure|certainly|of course|okay|ok|absolutely|great|here(?:'s| is| are)|below is|let(?:'s| us| me)|"
    r"i (?:will|can|'ll)|to solve (?:this|the)|we can)\b", re.I)
_ANSWER_LINE = re.compile(r"the (?:final )?answer is:?\s*\$?\s*(-?[\d,]*\.?\d+)", re.I)
_OTHER_ANSWER = re.compile(  # `#### N`, `Final answer: N`, `Answer: \boxed{N}`, a bare `\boxed{N}`
    r"(?:^|\n)\s*(?:####|final answer:?|answer:)\s*\$?\s*(?:\\boxed\{)?\s*(-?[\d,]*\.?\d+)"
    r"|\\boxed\{\s*(-?[\d,]*\.?\d+)\s*\}", re.I)
_CODE_START = re.compile(  # the first line that looks like code: an assignment, a comment or a statement
    r"^\s*(?:[A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*\s*[-+*/]?=|#|def |for |while |if |import |from )")
_PROSE = re.compile(r"[A-Za-z]{3,}\s+[A-Za-z]{3,}\s+[A-Za-z]{3,}")  # three words in a row: not an equation
_KP_HEAD = re.compile(r"^[\s*#_>-]*(core question|key information|solution)[\s*_]*:[\s*_]*", re.I | re.M)
_NUMBERED = re.compile(r"^\s*(?:(?:sub-?question|step|q)\s*)?(\d+)\s*[.):]\s*(.*)$", re.I)
_QUESTION_HEAD = re.compile(r"^\s*(?:q|sub-?question)\s*(\d+)\s*[.):]\s*(.*)$", re.I)
_ANSWER_HEAD = re.compile(r"^\s*(?:a|answer)\s*(\d+)\s*[.):]\s*(.*)$", re.I)


@dataclass(frozen=True)
class Parsed:
    text: str | None  # the student target; None when nothing usable was found
    error: str | None = None  # "parse: <why>" when text is None


def _fail(why: str) -> Parsed:
    return Parsed(None, f"parse: {why}")


def _normalise_lines(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    return [line.rstrip() for line in text.split("\n")]


def unfence(text: str, prefer: tuple[str, ...] = ()) -> str:
    """The content of the best fenced block (a preferred language first, else the longest), else the text."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text.replace("\r\n", "\n"))]
    if not blocks:
        return text
    preferred = [b for lang, b in blocks if lang in prefer]
    return max(preferred or [b for _, b in blocks], key=len)


def _strip_markdown(line: str) -> str:
    line = re.sub(r"\*\*(.+?)\*\*|__(.+?)__", lambda m: m.group(1) or m.group(2), line)
    line = re.sub(r"^\s*#{1,6}\s+", "", line)
    line = re.sub(r"^\s*[-*•]\s+", "", line)
    line = line.replace("\\(", "").replace("\\)", "").replace("\\[", "").replace("\\]", "")
    line = re.sub(r"\\times|×", "*", line)
    line = re.sub(r"\\div|÷", "/", line)
    line = re.sub(r"\\text\{([^}]*)\}", r"\1", line)
    line = re.sub(r"\\frac\{([^}]*)\}\{([^}]*)\}", r"\1/\2", line)
    return re.sub(r"[ \t]+", " ", line).strip()


def _is_chatter(line: str) -> bool:
    # "Let's compute 3 * 4 = 12." is reasoning, "Let's solve this step by step." is not: chatter has no numbers.
    return bool(_CHATTER.match(line.strip())) and not re.search(r"\d", line)


def _drop_leading_chatter(lines: list[str]) -> list[str]:
    while len(lines) > 1 and (not lines[0].strip() or _is_chatter(lines[0])):
        lines = lines[1:]
    return lines


def clean_cot(raw: str) -> Parsed:
    """Sentences ending `The answer is N.`; anything after the answer sentence is dropped."""
    text = "\n".join(line for line in raw.replace("\r\n", "\n").split("\n") if not line.strip().startswith("```"))
    lines = [_strip_markdown(line) for line in _normalise_lines(text)]
    lines = _drop_leading_chatter([line for line in lines if line])
    if not lines:
        return _fail("empty completion")
    body = "\n".join(lines)
    match = _ANSWER_LINE.search(body)
    if match:
        number = match.group(1).replace(",", "")
        steps = body[: match.start()].rstrip()
    else:
        other = list(_OTHER_ANSWER.finditer(body))
        if not other:
            return _fail("no final answer (expected 'The answer is N.')")
        last = other[-1]
        number = (last.group(1) or last.group(2)).replace(",", "")
        steps = body[: last.start()].rstrip()
    steps = re.sub(r"(?:so|therefore|thus|hence),?\s*$", "", steps, flags=re.I).rstrip(" ,;:")
    final = f"The answer is {number}."
    return Parsed(f"{steps}\n{final}" if steps else final)


def _has_ans(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        for t in targets:
            if any(isinstance(n, ast.Name) and n.id == "ans" for n in ast.walk(t)):
                return True
    return False


def _defines_solution(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == "solution" for n in tree.body)


def _is_print(stmt: str) -> bool:
    return bool(re.match(r"^print\(.*\)$", stmt.strip()))


def clean_program(raw: str) -> Parsed:
    """The program as written, prose before and after it dropped (reasoning.styles.extract_program): a line
    that does not parse rejects the whole completion (a reply cut off at max_tokens must not become a shorter,
    wrong target). It must assign `ans` or define PAL's `solution()`, which then gets `ans = solution()`;
    top-level prints and comment lines are dropped."""
    body = unfence(raw, prefer=("python", "py", "python3"))
    lines = _normalise_lines(body)
    if not any(_CODE_START.match(line) for line in lines):
        return _fail("no program (no assignment found)")
    program = extract_program("\n".join(lines))
    try:
        tree = ast.parse(program)
    except SyntaxError as e:
        bad = program.splitlines()[e.lineno - 1] if e.lineno and e.lineno <= len(program.splitlines()) else ""
        return _fail(f"syntax error: {e.msg} (line {e.lineno}: {bad.strip()!r})")
    has_ans, pal = _has_ans(tree), _defines_solution(tree)
    if not (has_ans or pal):
        return _fail("no program that parses and assigns ans")
    # Only top-level prints go: one inside a block may be all of its body.
    kept = [line for line in program.splitlines() if line.strip() and not (line[0] != " " and _is_print(line))]
    if not has_ans:  # PAL style `def solution(): ... return x`: the target still sets `ans`
        calls = re.compile(r"^(?!def\s)\S.*\bsolution\(\)")  # a top-level `x = solution()` or print
        kept = [line for line in kept if not calls.match(line)] + ["ans = solution()"]
    # Comment-only lines teach the student nothing the names do not say; they only lengthen targets.
    kept = [line for line in kept if not line.lstrip().startswith("#")]
    return Parsed("\n".join(kept))


def clean_equations(raw: str) -> Parsed:
    """Equation lines (`lhs = rhs`) and `%` comments, ending with the equations; prose lines dropped."""
    body = unfence(raw)
    out: list[str] = []
    for line in _normalise_lines(body):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith(("%", "#")):
            out.append("% " + stripped.lstrip("%# ").strip())
            continue
        stripped = _strip_markdown(stripped).rstrip(".;,")
        if "=" in stripped and not _is_chatter(stripped) and not _PROSE.search(stripped):
            out.append(stripped)
    while out and out[-1].startswith("%"):
        out.pop()
    if not any(re.match(r"^ans\s*=", line) for line in out):
        return _fail("no 'ans = ...' equation")
    return Parsed("\n".join(out))


def _kp_parts(raw: str) -> dict[str, str] | Parsed:
    text = unfence(raw, prefer=("text", "")) if raw.count("```") >= 2 and not _KP_HEAD.search(raw) else raw
    heads = list(_KP_HEAD.finditer(text))
    parts: dict[str, str] = {}
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        parts.setdefault(m.group(1).lower(), text[m.end():end].strip())
    for need in ("core question", "key information", "solution"):
        if not parts.get(need):
            return _fail(f"missing '{need.capitalize()}:' part")
    return parts


def clean_kp(raw: str, solution_style: str) -> Parsed:
    """`Core question: ...` / `Key information: ...` / `Solution: ...`, the solution cleaned as CoT or PoT."""
    parts = _kp_parts(raw)
    if isinstance(parts, Parsed):
        return parts
    core = " ".join(_strip_markdown(line) for line in parts["core question"].splitlines() if line.strip())
    info_lines = [_strip_markdown(line).rstrip(";") for line in parts["key information"].splitlines()]
    info = "; ".join(line for line in info_lines if line)
    solved = clean_program(parts["solution"]) if solution_style == "pot" else clean_cot(parts["solution"])
    if solved.text is None:
        return solved
    sep = "\n" if solution_style == "pot" else " "
    return Parsed(f"Core question: {core}\nKey information: {info}\nSolution:{sep}{solved.text}")


def clean_subquestions(raw: str, max_questions: int = 4) -> Parsed:
    """The decomposer's sub-questions as `Q1: ...` lines (numbered `Q1:`, `1.`, `1)` or `Sub-question 1:`)."""
    questions = []
    for line in _normalise_lines(unfence(raw)):
        m = _NUMBERED.match(_strip_markdown(line))
        if m and m.group(2).strip().endswith("?"):
            questions.append(m.group(2).strip())
    if not questions:
        return _fail("no numbered sub-questions")
    if len(questions) > max_questions:
        return _fail(f"{len(questions)} sub-questions, more than {max_questions}")
    return Parsed("\n".join(f"Q{i}: {q}" for i, q in enumerate(questions, 1)))


def clean_subanswers(raw: str, plan: str) -> Parsed:
    """The solver's answers to the planned sub-questions, in order, as the decomp target:
    `Q1: ...` / `A1: ...` lines for every planned question, then `The answer is N.`."""
    questions = [line.split(":", 1)[1].strip() for line in plan.splitlines() if line.strip()]
    answers: dict[int, str] = {}
    current: int | None = None
    lines = [_strip_markdown(line) for line in _normalise_lines(unfence(raw))]
    for line in _drop_leading_chatter([line for line in lines if line]):
        a = _ANSWER_HEAD.match(line)
        if a:
            current = int(a.group(1))
            answers.setdefault(current, "")
            line = a.group(2)
        elif _QUESTION_HEAD.match(line):
            current = None
            continue
        if current is not None and not _ANSWER_LINE.match(line):
            answers[current] = f"{answers[current]} {line}".strip()
    missing = [i for i in range(1, len(questions) + 1) if not answers.get(i)]
    if missing:
        return _fail(f"sub-question(s) {', '.join(map(str, missing))} not answered")
    finals = list(_ANSWER_LINE.finditer("\n".join(lines)))
    if not finals:
        return _fail("no final answer (expected 'The answer is N.')")
    number = finals[-1].group(1).replace(",", "")
    body = [f"Q{i}: {q}\nA{i}: {answers[i]}" for i, q in enumerate(questions, 1)]
    return Parsed("\n".join(body) + f"\nThe answer is {number}.")


@dataclass(frozen=True)
class NewProblem:
    question: str
    answer: str | None  # the generator's own answer; None when it gave none


def parse_new_problem(raw: str) -> NewProblem | Parsed:
    """FDD generation: `New problem: ...`, optional `Solution: ...`, `Answer: N`."""
    text = "\n".join(_strip_markdown(line) for line in _normalise_lines(unfence(raw)))
    m = re.search(r"(?:new )?problem\s*:\s*(.+?)(?=\n\s*(?:solution|answer)\s*:|\Z)", text, re.I | re.S)
    if not m or not m.group(1).strip():
        return _fail("no 'New problem:' line")
    question = " ".join(m.group(1).split())
    a = re.search(r"\banswer\s*:\s*\$?\s*(-?[\d,]*\.?\d+)", text[m.end():], re.I)
    return NewProblem(question, a.group(1).replace(",", "") if a else None)


def parse_completion(raw: str | None, style: str) -> Parsed:
    """The student target for `style` from a raw completion (decomposition goes through its two cleaners)."""
    if raw is None or not raw.strip():
        return _fail("empty completion")
    if style in ("cot", "dss"):
        return clean_cot(raw)
    if style == "pot":
        return clean_program(raw)
    if style == "eot":
        return clean_equations(raw)
    if style in ("kp_cot", "kp_pot"):
        return clean_kp(raw, style.split("_", 1)[1])
    raise ValueError(f"parse_completion: no single-completion parser for style {style!r}")
