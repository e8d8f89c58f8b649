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

3. Step-wise verification. `stepwise_beam` grows programs a line at a time, keeping the `beam` best
   prefixes by `score_partial`, a learned-free scorer of a program prefix (see its doc). The proposer of
   next lines is any callable (the student's sampler at eval time).
"""
from __future__ import annotations

import ast
import copy
import math
import random
import re
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from distill_jax.methods.records_ops import NUMBER, derive, question_number_counts, require_style
from distill_jax.reasoning.answers import answers_match, normalize_number

EDIT_KINDS = ("swap_op", "change_const", "wrong_var", "drop_stmt", "swap_stmts")
REFINE_PREFIX = "[pot:refine]"
_SWAP_OP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult}
_COMMON_CONSTANTS = {1.0, 100.0}  # used without being stated (e.g. `1 - pct / 100`)
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
        self.blocks = [[s for s in b if isinstance(s, _SIMPLE) and _owns_lines(s, b)] for b in _blocks(self.tree)]

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
    from distill_jax.reasoning.styles import get_style

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
    from distill_jax.reasoning.styles import extract_program

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


# ----------------------------------------------------------------------------- step-wise verification
_WINDOW = 4  # words either side of a number that count as its context


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def number_contexts(question: str) -> dict[float, list[set[str]]]:
    """For each number the question states (digits or words), the stemmed words around each mention."""
    tokens = re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?|[a-z]+|%", question.lower())
    out: dict[float, list[set[str]]] = {}
    for i, tok in enumerate(tokens):
        number = question_number_counts(tok)
        for v in number:
            context = tokens[max(0, i - _WINDOW):i] + tokens[i + 1:i + 1 + _WINDOW]
            out.setdefault(v, []).append({_stem(w) for w in context if not w[0].isdigit()})
    return out


def _binding(contexts: dict[float, list[set[str]]], name: str, value: float) -> float:
    """How well a given's name fits its number's context, relative to the best-fitting number (1 = best)."""
    words = {_stem(w) for w in name.lower().split("_") if len(w) > 2}
    fit = {v: max(len(words & c) for c in ctxs) for v, ctxs in contexts.items()}
    best = max(fit.values(), default=0)
    return 1.0 if best == 0 else fit.get(value, 0) / best


def _decimals(x: float) -> int:
    text = f"{x:.6f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def _instrumented(prefix: str) -> tuple[str, list[str]] | None:
    """The prefix plus prints of every assigned top-level name (in order) and a dummy `ans`; None if it
    does not parse (an unfinished line)."""
    try:
        tree = ast.parse(prefix)
    except SyntaxError:
        return None
    names: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    tail = "".join(f"print({n})\n" for n in names)
    return prefix.rstrip("\n") + "\n" + tail + "ans = 0\n", names


def _constants(tree: ast.AST) -> list[float]:
    return [float(n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) in (int, float)]


def _computed_names(tree: ast.Module) -> list[str]:
    """Names (other than `ans`) whose value comes from an expression over other values, in order."""
    out = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and not isinstance(stmt.value, (ast.Constant, ast.UnaryOp)):
            out += [t.id for t in stmt.targets if isinstance(t, ast.Name) and t.id != "ans" and t.id not in out]
    return out


def _named_constants(tree: ast.Module) -> list[tuple[str, float]]:
    """(assigned name, constant) for each number written in a top-level assignment, except 1 and 100."""
    out = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            out += [(stmt.targets[0].id, c) for c in _constants(stmt.value) if c not in _COMMON_CONSTANTS]
    return out


def _unused_share(tree: ast.Module, names: list[str]) -> float:
    """In a finished program (it sets `ans`): the share of assigned names never read afterwards."""
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assigned = [n for n in names if n != "ans"]
    return sum(n not in read for n in assigned) / len(assigned) if assigned else 0.0


def score_partials(question: str, prefixes: Sequence[str], reference_values: Iterable[float] | None = None,
                   timeout_s: float = 2.0, workers: int | None = None) -> list[float]:
    """`score_partial` for many prefixes of one question in one sandbox batch."""
    from distill_jax.reasoning.sandbox import run_programs

    stated = question_number_counts(question)
    contexts = number_contexts(question)
    numbers = set(stated)
    allowed = numbers | _COMMON_CONSTANTS
    max_dec = max([_decimals(x) for x in numbers] + [0]) + (2 if "$" in question else 0)
    reference = {round(float(v), 6) for v in reference_values} if reference_values is not None else None
    built = [_instrumented(p) for p in prefixes]
    runnable = [b[0] for b in built if b is not None]
    results = iter(run_programs(runnable, timeout_s=timeout_s, workers=workers)) if runnable else iter(())
    scores = []
    for prefix, b in zip(prefixes, built):
        if b is None:
            scores.append(0.0)
            continue
        r = next(results)
        if r.error is not None:
            scores.append(0.0)
            continue
        tree, names = ast.parse(prefix), b[1]
        printed = r.stdout.splitlines()[-len(names):] if names else []
        values = {}
        for name, text in zip(names, printed):
            num = normalize_number(text)
            values[name] = float(num) if num is not None else math.nan
        consts = _constants(tree)
        grounded = sum(c in allowed for c in consts) / len(consts) if consts else 1.0
        computed = [n for n in _computed_names(tree) if n in values]
        givens = set(names) - set(computed) - {"ans"}
        plausible = []
        for n in values:
            v = values[n]
            ok = math.isfinite(v) and v >= 0 and _decimals(v) <= max_dec
            same = [e for e in names[:names.index(n)] if values[e] == v]
            if n in computed:  # a step should add information: not a value some earlier name holds
                ok = ok and not same
            elif n in givens:  # a number the question states once is one quantity, not two
                ok = ok and len([e for e in same if e in givens]) < max(stated[v], 1)
            plausible.append(ok)
        parts = [grounded, sum(plausible) / len(plausible) if plausible else 1.0]
        bound = _named_constants(tree)
        if bound:
            parts.append(sum(_binding(contexts, n, v) for n, v in bound) / len(bound))
        if "ans" in values:
            parts.append(1.0 - _unused_share(tree, names))
        if reference is not None:
            parts.append(sum(round(values[n], 6) in reference for n in computed) / len(computed) if computed else 1.0)
        scores.append(sum(parts) / len(parts))
    return scores


def score_partial(question: str, program_prefix: str, reference_values: Iterable[float] | None = None,
                  timeout_s: float = 2.0) -> float:
    """A learned-free score in [0, 1] of a program prefix for a question (the prefix runs in the sandbox).

    0 when the prefix does not parse or fails to run (a name used before it is assigned, a division by
    zero). Otherwise the mean of:
      - grounding: the share of the prefix's numeric constants that the question states (digits or words
        like `twice`, `%`) or that are 0, 1 or 100: a miscopied number scores lower;
      - plausibility: the share of assigned values that are finite, non-negative, have no more decimals
        than the question's numbers (+2 for money) and, when computed, differ from every earlier value
        (`x * 1` adds nothing); a given number is held by no more names than the question states it
        (`bags = 8` next to `per_bag = 8` when 8 is stated once): `48 / 5` among whole counts scores lower;
      - binding (when it writes numbers other than 1 and 100): how well the name each number is assigned
        to fits the words around that number in the question, relative to the best-fitting number
        (`times_a_month = 3` when the question says "three times as many ... 4 times a month" scores
        lower, as does `aisha_money = sofia_money * 3` for "Aisha spends four times as much money");
      - once the prefix sets `ans` (a finished program): the share of assigned names read afterwards, so
        `ans = discount` that leaves the later steps unused scores lower;
      - with `reference_values` (numbers from a reference solution, e.g. the values in a teacher's CoT, or
        those most samples agree on): the share of computed values found among them, which also catches
        a swapped operator whose result is plausible.
    A wrong-but-plausible step with no reference (`19 - 3` for `19 + 3`) is invisible to it.
    """
    return score_partials(question, [program_prefix], reference_values, timeout_s)[0]


def reference_values_from_text(text: str) -> set[float]:
    """Every number written in a text (e.g. a CoT rationale), as a reference set for `score_partial`."""
    return {float(m.group().replace(",", "")) for m in NUMBER.finditer(text)}


@dataclass(frozen=True)
class BeamResult:
    program: str
    score: float  # score_partial of the program (+ lm_weight * summed log-probabilities)
    finished: bool  # the last line assigned `ans`


CandidatesFn = Callable[[str, list[str]], Sequence]


def _finishes(line: str) -> bool:
    return re.match(r"\s*ans\s*=", line) is not None


def stepwise_beam(candidates_fn: CandidatesFn, question: str, beam: int = 4, max_steps: int = 16, *,
                  reference_values: Iterable[float] | None = None, lm_weight: float = 0.0,
                  timeout_s: float = 2.0) -> list[BeamResult]:
    """Step-wise verified beam search over program lines; results best first.

    `candidates_fn(question, lines_so_far)` proposes next lines, each a string or (line, log-probability).
    Each step extends every live prefix with its proposals, scores all extensions in one sandbox batch, and
    keeps the `beam` best (score = score_partial + lm_weight * summed log-probability; ties keep proposal
    order). A prefix whose last line assigns `ans`, or with no proposals, is finished.
    """
    if beam < 1 or max_steps < 1:
        raise ValueError("stepwise_beam: beam and max_steps must be >= 1")
    reference = set(reference_values) if reference_values is not None else None
    live: list[tuple[list[str], float]] = [([], 0.0)]  # (lines, summed log-prob)
    done: list[BeamResult] = []
    for _ in range(max_steps):
        expansions: list[tuple[list[str], float]] = []
        seen: set[tuple[str, ...]] = set()
        for lines, lp in live:
            proposals = list(candidates_fn(question, list(lines)))
            if not proposals:
                done.append(BeamResult("\n".join(lines) + "\n", score_partial(question, "\n".join(lines), reference,
                                                                              timeout_s) + lm_weight * lp, False))
                continue
            for p in proposals:
                line, line_lp = (p, 0.0) if isinstance(p, str) else (p[0], float(p[1]))
                key = tuple(lines) + (line,)
                if key not in seen:
                    seen.add(key)
                    expansions.append((lines + [line], lp + line_lp))
        if not expansions:
            break
        scores = score_partials(question, ["\n".join(l) for l, _ in expansions], reference, timeout_s)
        ranked = sorted(range(len(expansions)), key=lambda i: -(scores[i] + lm_weight * expansions[i][1]))[:beam]
        live = []
        for i in ranked:
            lines, lp = expansions[i]
            if _finishes(lines[-1]):
                done.append(BeamResult("\n".join(lines) + "\n", scores[i] + lm_weight * lp, True))
            else:
                live.append((lines, lp))
        if not live:
            break
    if not done:  # out of steps: the live prefixes are the best there is
        scores = score_partials(question, ["\n".join(l) for l, _ in live], reference, timeout_s)
        done = [BeamResult("\n".join(l) + "\n", s + lm_weight * lp, False) for (l, lp), s in zip(live, scores)]
    return sorted(done, key=lambda r: (-r.finished, -r.score))
