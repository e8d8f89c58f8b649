"""PaD (Program-aided Distillation, arXiv 2305.13888): error injection, self-refinement records, step-wise
verification.

1. Error injection. Correct PoT programs get one syntax-tree edit each: an operator swapped (+/-, * and /),
   a constant changed (off by one, or one digit changed), a variable read replaced by another variable
   assigned earlier, a statement dropped, or two neighbouring statements swapped. Only the edited statement's
   lines change (the rest of the program keeps its bytes). Every edited program runs in the sandbox and is
   kept only when it now fails: an error, or an answer that differs from the gold one. Which edits are tried
   is a pure function of (seed, problem id, program).

2. Self-refinement records. The student learns to repair a faulty program from the interpreter's feedback.
   A refine record has style `pot` (its output is a program, read as PoT), `meta.task = "refine"`, the
   correct program as the target, and its input in `meta.input` (styles.py has no refine style):

       [pot:refine] <question>
       Program:
       <the faulty program>
       Feedback: <Error: runtime error: NameError | Wrong answer: the program gives 21.>

3. Step-wise verification (the decoding side) is in pad_verify.py: `score_partial` and `stepwise_beam`.
"""
from __future__ import annotations

import ast
import copy
import random
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from distill_jax.methods.records_ops import derive, require_style
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import extract_program, get_style

EDIT_KINDS = ("swap_op", "change_const", "wrong_var", "drop_stmt", "swap_stmts")
REFINE_PREFIX = "[pot:refine]"
_SWAP_OP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult}
_SIMPLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Expr)


# --------------------------------------------------------------------------------------- error injection
@dataclass(frozen=True)
class Edit:
    kind: str  # one of EDIT_KINDS
    line: int  # 1-based line of the edited statement (the first of two for swap_stmts)
    before: str  # the edited lines before ...
    after: str  # ... and after the edit ("" when dropped)
    program: str  # the whole edited program


@dataclass(frozen=True)
class Injection:
    """A faulty program that the sandbox confirmed fails, with what it says."""

    edit: Edit
    error: str | None  # the sandbox's error kind, or None when the program ran and answered wrongly
    answer: str | None  # the wrong answer when it ran
    feedback: str  # the text the refine input shows


def _blocks(tree: ast.AST) -> list[list[ast.stmt]]:
    blocks = []
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                blocks.append(block)
    return blocks


def _owns_lines(stmt: ast.stmt, block: list[ast.stmt]) -> bool:
    """True when no sibling shares a line with `stmt` (`a = 1; b = 2` cannot be edited line-wise)."""
    return not any(o is not stmt and o.lineno <= stmt.end_lineno and stmt.lineno <= o.end_lineno for o in block)


def _is_docstring(stmt: ast.stmt) -> bool:
    """A bare string: editing it cannot change what the program computes."""
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _assigned_names(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every plain name bound by an assignment, in line order."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                out.extend((node.lineno, n.id) for n in ast.walk(t) if isinstance(n, ast.Name))
    return sorted(set(out))


def _const_variants(value: int | float) -> list[int | float]:
    """Off by one either way, and the leading digit changed (a miscopied number)."""
    out = [value + 1, value - 1]
    text = repr(value)
    i = next((k for k, c in enumerate(text) if c.isdigit()), None)
    int_digits = len(text.lstrip("-").split(".")[0])
    if i is not None and "e" not in text:
        digit = (int(text[i]) + 1) % 10
        if digit == 0 and int_digits > 1:  # no leading zero: 95 -> 15, not 05
            digit = 1
        out.append(type(value)(text[:i] + str(digit) + text[i + 1:]))
    uniq: list[int | float] = []
    for v in out:
        if v != value and v not in uniq:
            uniq.append(v)
    return uniq


class _Program:
    """A parsed program with line-preserving rewrites of single statements."""

    def __init__(self, code: str):
        self.code = code
        self.lines = code.splitlines()
        self.tree = ast.parse(code)
        self.names = _assigned_names(self.tree)
        self.blocks = [[s for s in b if isinstance(s, _SIMPLE) and _owns_lines(s, b) and not _is_docstring(s)]
                       for b in _blocks(self.tree)]

    def text(self, stmt: ast.stmt) -> str:
        return "\n".join(self.lines[stmt.lineno - 1:stmt.end_lineno])

    def replace(self, spans: list[tuple[ast.stmt, str | None]]) -> str:
        """The program with each statement's lines replaced by new text (None: dropped), rest untouched."""
        lines = list(self.lines)
        for stmt, new in sorted(spans, key=lambda s: -s[0].lineno):
            indent = self.lines[stmt.lineno - 1][:stmt.col_offset]
            lines[stmt.lineno - 1:stmt.end_lineno] = [] if new is None else [indent + ln for ln in new.splitlines()]
        return "\n".join(lines) + "\n"


def candidate_edits(code: str) -> list[Edit]:
    """Every single edit of the program, in a fixed order (the sampler picks among them)."""
    try:
        prog = _Program(code)
    except SyntaxError:
        return []
    edits: list[Edit] = []

    def add(kind: str, stmt: ast.stmt, new_stmt: ast.stmt | None) -> None:
        after = "" if new_stmt is None else ast.unparse(new_stmt)
        edits.append(Edit(kind, stmt.lineno, prog.text(stmt), after, prog.replace([(stmt, after or None)])))

    for block in prog.blocks:
        for stmt in block:
            nodes = list(ast.walk(stmt))
            for i, node in enumerate(nodes):
                op = getattr(node, "op", None)
                if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(op) in _SWAP_OP:
                    new = copy.deepcopy(stmt)
                    list(ast.walk(new))[i].op = _SWAP_OP[type(op)]()
                    add("swap_op", stmt, new)
                elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
                    for v in _const_variants(node.value):
                        new = copy.deepcopy(stmt)
                        list(ast.walk(new))[i].value = v
                        add("change_const", stmt, new)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                    earlier = sorted({n for line, n in prog.names if line < stmt.lineno and n != node.id})
                    if node.id in {n for _, n in prog.names}:
                        for other in earlier:
                            new = copy.deepcopy(stmt)
                            list(ast.walk(new))[i].id = other
                            add("wrong_var", stmt, new)
            if len(block) > 1:
                add("drop_stmt", stmt, None)
        for a, b in zip(block, block[1:]):
            if b.lineno == a.end_lineno + 1:  # neighbours with nothing between them
                swapped = prog.replace([(a, prog.text(b).strip()), (b, prog.text(a).strip())])
                edits.append(Edit("swap_stmts", a.lineno, prog.text(a) + "\n" + prog.text(b),
                                  prog.text(b).strip() + "\n" + prog.text(a).strip(), swapped))
    return edits


def sample_edits(code: str, rng: random.Random, n: int) -> list[Edit]:
    """Up to `n` distinct edits, spread over the kinds (round robin in a shuffled kind order)."""
    by_kind: dict[str, list[Edit]] = {}
    for e in candidate_edits(code):
        by_kind.setdefault(e.kind, []).append(e)
    for edits in by_kind.values():
        rng.shuffle(edits)
    kinds = [k for k in EDIT_KINDS if k in by_kind]
    rng.shuffle(kinds)
    picked, seen = [], {code}
    while len(picked) < n and any(by_kind[k] for k in kinds):
        for k in kinds:
            while by_kind[k]:
                e = by_kind[k].pop()
                if e.program not in seen:
                    seen.add(e.program)
                    picked.append(e)
                    break
            if len(picked) == n:
                break
    return picked


def feedback_text(error: str | None, answer: str | None) -> str:
    return f"Error: {error}" if error is not None else f"Wrong answer: the program gives {answer}."


def inject_errors(programs: Sequence[str], golds: Sequence[str | None], keys: Sequence[str], *, seed: int = 0,
                  per_program: int = 2, tries: int = 6, timeout_s: float = 2.0, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[list[Injection] | None]:
    """For each correct program, up to `per_program` edits that the sandbox shows to fail.

    `keys` (e.g. problem ids) seed each program's own generator, so adding programs changes nothing for
    the others. A gold of None means "the answer the unedited program gives". `tries` edits per program are
    run (all in one sandbox batch) and the first failing ones in sampling order are kept. A program that
    does not itself reach its gold answer gets None (nothing to learn a repair towards).
    """
    if not len(programs) == len(golds) == len(keys):
        raise ValueError("inject_errors: programs, golds and keys must have the same length")
    pot = get_style("pot")
    sampled = [sample_edits(code, random.Random(f"pad|{seed}|{key}"), tries) for code, key in zip(programs, keys)]
    flat = [e.program for edits in sampled for e in edits]
    results = pot.answers(list(programs) + flat, timeout_s=timeout_s, workers=workers, progress=progress)
    originals, edited = results[:len(programs)], iter(results[len(programs):])
    out = []
    for code, gold, orig, edits in zip(programs, golds, originals, sampled):
        ref = gold if gold is not None else orig.answer
        kept: list[Injection] = []
        usable = orig.answer is not None and answers_match(orig.answer, ref)
        for e in edits:
            r = next(edited)
            if usable and len(kept) < per_program and (r.error is not None or not answers_match(r.answer, ref)):
                kept.append(Injection(e, r.error, r.answer, feedback_text(r.error, r.answer)))
        out.append(kept if usable else None)
    return out


# -------------------------------------------------------------------------------- self-refinement records
def refine_input(question: str, program: str, feedback: str) -> str:
    """The student input of a refine record (format in the module doc)."""
    return f"{REFINE_PREFIX} {question.strip()}\nProgram:\n{program.rstrip()}\nFeedback: {feedback}"


@dataclass
class RefineStats:
    programs: int = 0
    unusable: int = 0  # the source program did not reproduce its gold answer: no edits made
    records: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_outcome: dict[str, int] = field(default_factory=dict)  # "error: <kind>" / "wrong answer"


def refine_records(records: Sequence[dict], *, seed: int = 0, per_program: int = 2, tries: int = 6,
                   timeout_s: float = 2.0, workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[list[dict], RefineStats]:
    """Refine records (faulty program + feedback -> correct program) from correct `pot` records."""
    records = [r for r in records if r.get("correct") is not False]
    require_style(records, ("pot",), "pad")
    programs = [extract_program(r["rationale"]) for r in records]
    found = inject_errors(programs, [r.get("answer") for r in records],
                          [f"{r['problem_id']}|{(r.get('teacher') or {}).get('sample', 0)}" for r in records],
                          seed=seed, per_program=per_program, tries=tries, timeout_s=timeout_s, workers=workers,
                          progress=progress)
    stats = RefineStats(programs=len(records))
    out = []
    for rec, injections in zip(records, found):
        if injections is None:
            stats.unusable += 1
            continue
        for inj in injections:
            outcome = "wrong answer" if inj.error is None else f"error: {inj.error.split(':', 1)[0]}"
            stats.by_kind[inj.edit.kind] = stats.by_kind.get(inj.edit.kind, 0) + 1
            stats.by_outcome[outcome] = stats.by_outcome.get(outcome, 0) + 1
            edit = {k: v for k, v in asdict(inj.edit).items() if k != "program"}
            out.append(derive(rec, style="pot", rationale=rec["rationale"], method="pad", task="refine",
                              input_text=refine_input(rec["question"], inj.edit.program, inj.feedback),
                              extra_meta={"pad": {"edit": edit, "faulty_program": inj.edit.program,
                                                  "error": inj.error, "faulty_answer": inj.answer,
                                                  "feedback": inj.feedback}}))
    stats.records = len(out)
    return out, stats
