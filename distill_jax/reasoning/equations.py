"""Solve an Equation-of-Thought (EoT) rationale with sympy; the answer is the value of the variable `ans`.

Format: one equation per line (`apples = 3 * boxes`, `2x + 5 = 17`; unknowns may sit on either side; a line
may also hold several, separated by `;` or `,`: `x = 3, y = 4`);
lines starting with `%` (or `#`, which some teachers use) are comments. A `%` written right after a number is
a percent (`20%` is 20/100); any other `%` or a `#` (`speed = 160 / 2  % km per hour`) starts a trailing
comment.
Markdown fences and blank lines are ignored. Implicit multiplication (`3x`, `2(x+1)`, `(a)(b)`) is read
through sympy's parser transformations; `^` is a power (LLM-written equations use it that way, never as
xor); thousands commas (`1,080`), `$`, `×`, `÷` and `−` are understood. Decimals are read
as exact rationals, so `0.1 + 0.2` is 3/10.

Text that is not arithmetic/equation text is rejected with a reason, never evaluated: every line must pass a
character whitelist (letters, digits, `_ . , + - * / ^ ( ) =` and spaces), names are identifiers without
`__` that are no Python keyword, two names may not stand side by side (`price per item` is prose, not a
product), and sympy's `parse_expr` runs with an empty builtins dict and only the constructors its own
transformations emit (so `sin`, `exp`, `Symbol` and friends are plain unknowns). Because sympy can still hang
or eat memory on adversarial input (`ans = 7^7^7^7`), every solve runs in a worker process with a wall
clock deadline and an address-space limit; a late worker is killed and replaced.

Outcomes other than a unique number are reasons, not guesses: "no ans", "inconsistent" (no solution),
"underdetermined" (ans not fixed by the equations), "several solutions" (e.g. a quadratic with two positive
roots). One documented exception: when the real solutions for `ans` include exactly one positive value,
that value is taken, because word-problem quantities (counts, lengths, prices) are positive and a quadratic
like `x^2 = 49` means 7. Non-real solutions are dropped.
"""
from __future__ import annotations

import json
import keyword
import os
import re
import sys
from dataclasses import dataclass

from distill_jax.reasoning.worker_pool import Lost, ProgressFn, SharedPool, WorkerPool, WorkerStartError

MAX_TEXT_CHARS = 5_000
MAX_EQUATIONS = 60
_LINE_SHOWN = 80  # characters of a rejected line, in its error
_MEMORY_LIMIT = 1 << 30  # bytes of address space per worker; sympy answers word problems in ~100 MB

_ALLOWED = re.compile(r"[A-Za-z0-9_.,+\-*/^()= \t]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ADJACENT_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s+[A-Za-z_]")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")
_FENCE_LINE = re.compile(r"^\s*```")
_REPLACE = {"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "$": "", "**": "^"}


@dataclass(frozen=True)
class EquationResult:
    answer: str | None  # canonical number string (answers.canonical)
    error: str | None  # None when `ans` has one value


class EquationError(ValueError):
    pass


def _at(lineno: int, raw: str, reason: str) -> str:
    """`line N: <reason>: '<the line as written>'`, so a rejected (e.g. truncated) rationale says where."""
    return f"line {lineno}: {reason}: {raw.strip()[:_LINE_SHOWN]!r}"


def _check(line: str) -> str:
    """`line` when it is arithmetic/equation text; EquationError with the reason otherwise."""
    if not _ALLOWED.fullmatch(line) or "," in line:
        bad = sorted(set(re.sub(r"[A-Za-z0-9_.+\-*/^()= \t]", "", line)))
        raise EquationError(f"not an equation (characters {''.join(bad)!r})")
    if "=" not in line:
        raise EquationError("not an equation (no '=')")
    for name in _NAME.findall(line):
        if "__" in name or keyword.iskeyword(name):
            raise EquationError(f"name {name!r} not allowed")
    if _ADJACENT_NAMES.search(line):
        raise EquationError("not an equation (words side by side)")
    return line


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, cleaned equation text) for each equation line; raises EquationError on prose."""
    if len(text) > MAX_TEXT_CHARS:
        raise EquationError(f"text longer than {MAX_TEXT_CHARS} characters")
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("%", "#")) or _FENCE_LINE.match(line):
            continue
        line = _PERCENT.sub(r"(\1/100)", line)
        line = re.split(r"[%#]", line, maxsplit=1)[0].strip().rstrip(".").strip()
        for old, new in _REPLACE.items():
            line = line.replace(old, new)
        line = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), line)
        # `x = 3, y = 4` / `x = 3; y = 4`: several equations on one line.
        parts = [p.strip() for p in re.split(r"[;,]", line) if p.strip()]
        if not (len(parts) > 1 and all("=" in p for p in parts)):
            parts = [line] if line else []
        try:
            out += [(lineno, _check(p)) for p in parts]
        except EquationError as e:
            raise EquationError(_at(lineno, raw, str(e))) from None
    if not out:
        raise EquationError("no equations")
    if len(out) > MAX_EQUATIONS:
        raise EquationError(f"more than {MAX_EQUATIONS} equations")
    return out


def _substitute_forward(exprs: list) -> tuple[dict | None, list]:
    """Solve, in any order, every equation that is linear in its one remaining unknown (`ans = a * b` once
    a and b are known): most EoT rationales are chains of definitions, and this is ~10x cheaper than a
    general solve. Returns (known values, equations left for the general solver); (None, []) when an
    equation with no unknown left is false."""
    known: dict = {}
    remaining = list(exprs)
    changed = True
    while changed and remaining:
        changed, left = False, []
        for expr in remaining:
            expr = expr.xreplace(known) if known else expr
            free = expr.free_symbols
            if not free:
                if expr.is_zero is False:
                    return None, []
                continue
            if len(free) == 1:
                (symbol,) = free
                slope = expr.diff(symbol)
                if not slope.free_symbols and slope.is_zero is False:
                    known[symbol] = -expr.xreplace({symbol: 0}) / slope
                    changed = True
                    continue
            left.append(expr)
        remaining = left
    return known, remaining


def _solve_in_process(text: str) -> EquationResult:
    """Parse and solve; runs inside a worker (sympy imported there only)."""
    import sympy
    from sympy.solvers.solveset import NonlinearError
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication,
        parse_expr,
        rationalize,
        standard_transformations,
    )

    from distill_jax.reasoning.answers import SIGNIFICANT_DIGITS, canonical

    transformations = standard_transformations + (implicit_multiplication, convert_xor, rationalize)
    # Only what the transformations' generated code calls; every other name becomes a Symbol.
    global_dict = {"__builtins__": {}, "Integer": sympy.Integer, "Float": sympy.Float,
                   "Rational": sympy.Rational, "Symbol": sympy.Symbol}
    try:
        lines = _lines(text)
    except EquationError as e:
        return EquationResult(None, str(e))
    raw_lines = text.splitlines()
    symbols: dict[str, sympy.Symbol] = {}
    equations = []
    for lineno, line in lines:
        for name in _NAME.findall(line):
            symbols.setdefault(name, sympy.Symbol(name))
        sides = line.split("=")
        try:
            exprs = [parse_expr(side, local_dict=dict(symbols), global_dict=dict(global_dict),
                                transformations=transformations) for side in sides]
        except Exception as e:  # noqa: BLE001 - any parser failure is the text's fault
            return EquationResult(None, _at(lineno, raw_lines[lineno - 1], f"cannot parse ({type(e).__name__})"))
        if any(not isinstance(x, sympy.Expr) for x in exprs):
            return EquationResult(None, _at(lineno, raw_lines[lineno - 1], "not an arithmetic expression"))
        # `a = b = 3` chains: every side equals the next; an equation is kept as `left - right` (= 0).
        equations += [exprs[i] - exprs[i + 1] for i in range(len(exprs) - 1)]
    if "ans" not in symbols:
        return EquationResult(None, "no ans")
    ans = symbols["ans"]
    known, rest = _substitute_forward(equations)
    if known is None:
        return EquationResult(None, "inconsistent")
    solutions = [known]
    if rest:
        unknowns = sorted({s for e in rest for s in e.free_symbols}, key=lambda s: s.name)
        try:
            system = sympy.linear_eq_to_matrix(rest, unknowns)
            general = [dict(zip(unknowns, sol)) for sol in sympy.linsolve(system, unknowns)]
        except (NonlinearError, ValueError):
            try:
                general = sympy.solve(rest, unknowns, dict=True)
            except NotImplementedError:
                return EquationResult(None, "cannot solve (unsupported equation)")
        solutions = [{**known, **sol} for sol in general]
    if not solutions:
        return EquationResult(None, "inconsistent")
    values = set()
    for sol in solutions:
        value = sol.get(ans, ans)
        if value.free_symbols:
            return EquationResult(None, "underdetermined")
        values.add(sympy.simplify(value))
    real = [v for v in values if v.is_real]
    if not real:
        return EquationResult(None, "no real solution")
    if len(real) > 1:
        positive = [v for v in real if v.is_positive]
        if len(positive) != 1:
            return EquationResult(None, f"several solutions ({len(real)})")
        real = positive
    value = real[0]
    if value.is_Rational:
        from fractions import Fraction

        answer = canonical(Fraction(int(value.p), int(value.q)))
    else:
        from decimal import Decimal

        answer = canonical(Decimal(str(sympy.N(value, SIGNIFICANT_DIGITS))))
    if answer is None:
        return EquationResult(None, "answer too large")
    return EquationResult(answer, None)


def _worker_main() -> None:
    """Worker loop: one JSON request line in (`{"text": ...}`), one JSON reply line out."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))
    import sympy  # noqa: F401 - paid once per worker, before the first deadline starts

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            result = _solve_in_process(json.loads(line)["text"])
        except MemoryError:
            result = EquationResult(None, "memory")
        except RecursionError:
            result = EquationResult(None, "too deeply nested")
        except Exception as e:  # noqa: BLE001 - report, keep serving
            result = EquationResult(None, f"solver error: {type(e).__name__}")
        print(json.dumps({"answer": result.answer, "error": result.error}), flush=True)


class SolverError(WorkerStartError):
    """The pool itself cannot work (a worker does not start); never raised for anything a text does."""


class SolverPool:
    """Persistent sympy workers on the shared worker pool (worker_pool.py: per-text deadlines, restarts)."""

    def __init__(self, workers: int = 1) -> None:
        self._pool = WorkerPool(
            [sys.executable, "-c", "from distill_jax.reasoning.equations import _worker_main; _worker_main()"],
            workers, name="equation", error=SolverError)
        self.size = self._pool.size

    def close(self) -> None:
        self._pool.close()

    def solve(self, texts: list[str], timeout_s: float = 2.0,
              progress: ProgressFn | None = None) -> list[EquationResult]:
        """Results in input order; timeout_s is wall-clock per text, from the moment a worker gets it."""
        replies = self._pool.run([{"text": t} for t in texts], timeout_s, progress)
        return [_result_from_reply(r) for r in replies]


def _result_from_reply(reply: dict | Lost) -> EquationResult:
    if isinstance(reply, Lost):  # a dead worker is one that hit its address-space limit
        return EquationResult(None, "timeout" if reply.timeout else "memory")
    answer, error = reply.get("answer"), reply.get("error")
    return EquationResult(None if answer is None else str(answer), None if error is None else str(error))


_shared = SharedPool(lambda size, _key: SolverPool(size), lambda: min(8, os.cpu_count() or 1))


def solve_equations(text: str, timeout_s: float = 2.0) -> EquationResult:
    """Solve one EoT rationale on the shared pool (started on first use) under a wall-clock deadline."""
    return _shared.get().solve([text], timeout_s)[0]


def solve_many(texts: list[str], timeout_s: float = 2.0, workers: int | None = None,
               progress: ProgressFn | None = None) -> list[EquationResult]:
    """Solve many rationales on the shared pool of `workers` processes (None: CPU count, at most 8)."""
    if not texts:
        return []
    return _shared.get(workers).solve(list(texts), timeout_s, progress)
