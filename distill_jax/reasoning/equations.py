"""Solve an Equation-of-Thought (EoT) rationale with sympy; the answer is the value of the variable `ans`.

Format: one equation per line (`apples = 3 * boxes`, `2x + 5 = 17`; unknowns may sit on either side);
lines starting with `%` are comments, and a `%` that does not follow a number starts a trailing comment.
Markdown fences and blank lines are ignored. Implicit multiplication (`3x`, `2(x+1)`, `(a)(b)`) is read
through sympy's parser transformations; `^` is a power (LLM-written equations use it that way, never as
xor); `20%` is 20/100; thousands commas (`1,080`), `$`, `×`, `÷` and `−` are understood. Decimals are read
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

import atexit
import keyword
import multiprocessing
import re
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Callable

MAX_TEXT_CHARS = 5_000
MAX_EQUATIONS = 60
_MEMORY_LIMIT = 1 << 30  # bytes of address space per worker; sympy answers word problems in ~100 MB
_START_TIMEOUT_S = 60.0

_ALLOWED = re.compile(r"[A-Za-z0-9_.,+\-*/^()= \t]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ADJACENT_NAMES = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s+[A-Za-z_]")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")
_FENCE_LINE = re.compile(r"^\s*```")
_REPLACE = {"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "$": "", "**": "^"}


@dataclass(frozen=True)
class EquationResult:
    answer: str | None  # canonical number string (answers.canonical)
    error: str | None  # None when `ans` has one value


class EquationError(ValueError):
    pass


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, cleaned equation text) for each equation line; raises EquationError on prose."""
    if len(text) > MAX_TEXT_CHARS:
        raise EquationError(f"text longer than {MAX_TEXT_CHARS} characters")
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("%") or _FENCE_LINE.match(line):
            continue
        line = _PERCENT.sub(r"(\1/100)", line)
        line = line.split("%", 1)[0].strip().rstrip(".").strip()
        for old, new in _REPLACE.items():
            line = line.replace(old, new)
        line = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), line)
        if not line:
            continue
        if not _ALLOWED.fullmatch(line) or "," in line:
            bad = sorted(set(re.sub(r"[A-Za-z0-9_.+\-*/^()= \t]", "", line)))
            raise EquationError(f"line {lineno}: not an equation (characters {''.join(bad)!r})")
        if "=" not in line:
            raise EquationError(f"line {lineno}: not an equation (no '=')")
        for name in _NAME.findall(line):
            if "__" in name or keyword.iskeyword(name):
                raise EquationError(f"line {lineno}: name {name!r} not allowed")
        if _ADJACENT_NAMES.search(line):
            raise EquationError(f"line {lineno}: not an equation (words side by side)")
        out.append((lineno, line))
    if not out:
        raise EquationError("no equations")
    if len(out) > MAX_EQUATIONS:
        raise EquationError(f"more than {MAX_EQUATIONS} equations")
    return out


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
            return EquationResult(None, f"line {lineno}: cannot parse ({type(e).__name__})")
        if any(not isinstance(x, sympy.Expr) for x in exprs):
            return EquationResult(None, f"line {lineno}: not an arithmetic expression")
        # `a = b = 3` chains: every side equals the next.
        equations += [sympy.Eq(exprs[i], exprs[i + 1], evaluate=False) for i in range(len(exprs) - 1)]
    if "ans" not in symbols:
        return EquationResult(None, "no ans")
    ans = symbols["ans"]
    exprs = [eq.lhs - eq.rhs for eq in equations]
    unknowns = sorted({s for e in exprs for s in e.free_symbols}, key=lambda s: s.name)
    try:
        system = sympy.linear_eq_to_matrix(exprs, unknowns)
        solutions = [dict(zip(unknowns, sol)) for sol in sympy.linsolve(system, unknowns)]
    except (NonlinearError, ValueError):
        try:
            solutions = sympy.solve(exprs, unknowns, dict=True)
        except NotImplementedError:
            return EquationResult(None, "cannot solve (unsupported equation)")
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


def _worker_main(conn: Connection) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))
    import sympy  # noqa: F401 - paid once per worker, before the first deadline starts

    conn.send("ready")
    while True:
        try:
            text = conn.recv()
        except EOFError:
            return
        try:
            result = _solve_in_process(text)
        except MemoryError:
            result = EquationResult(None, "memory")
        except RecursionError:
            result = EquationResult(None, "too deeply nested")
        except Exception as e:  # noqa: BLE001 - report, keep serving
            result = EquationResult(None, f"solver error: {type(e).__name__}")
        conn.send(result)


class _Worker:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.task: tuple[int, float] | None = None  # (index, deadline)

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class SolverPool:
    """Persistent sympy workers; `solve(texts)` keeps each under its own deadline, in parallel."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = [_Worker() for _ in range(max(1, workers))]

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers = []

    def solve(self, texts: list[str], timeout_s: float = 2.0,
              progress: Callable[[int, int], None] | None = None) -> list[EquationResult]:
        results: list[EquationResult | None] = [None] * len(texts)
        pending = list(range(len(texts)))[::-1]
        done = 0
        while done < len(texts):
            now = time.monotonic()
            for w in self.workers:
                if w.ready and w.task is None and pending:
                    i = pending.pop()
                    w.conn.send(texts[i])
                    w.task = (i, now + timeout_s)
            deadlines = [w.task[1] for w in self.workers if w.task] + [now + _START_TIMEOUT_S]
            ready = wait([w.conn for w in self.workers], timeout=max(0.0, min(deadlines) - now))
            now = time.monotonic()
            for k, w in enumerate(self.workers):
                if w.conn in ready:
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = EquationResult(None, "memory" if w.task else "worker failed")
                        self.workers[k] = self._replace(w)
                    if msg == "ready":
                        w.ready = True
                        continue
                    if w.task is not None:
                        results[w.task[0]] = msg
                        done += 1
                        w.task = None
                        if progress:
                            progress(done, len(texts))
                elif w.task is not None and now >= w.task[1]:
                    results[w.task[0]] = EquationResult(None, "timeout")
                    done += 1
                    self.workers[k] = self._replace(w)
                    if progress:
                        progress(done, len(texts))
        return results  # type: ignore[return-value]

    @staticmethod
    def _replace(worker: _Worker) -> _Worker:
        worker.kill()
        return _Worker()


_default_pool: SolverPool | None = None


def _pool() -> SolverPool:
    global _default_pool
    if _default_pool is None:
        _default_pool = SolverPool(1)
        atexit.register(_default_pool.close)
    return _default_pool


def solve_equations(text: str, timeout_s: float = 2.0) -> EquationResult:
    """Solve one EoT rationale in the shared worker (started on first use) under a wall-clock deadline."""
    return _pool().solve([text], timeout_s)[0]


def solve_many(texts: list[str], timeout_s: float = 2.0, workers: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> list[EquationResult]:
    """Solve many rationales in a pool of `workers` processes (default: CPU count, at most 8)."""
    if not texts:
        return []
    import os

    n = workers or min(8, os.cpu_count() or 1)
    if n == 1:
        return _pool().solve(texts, timeout_s, progress)
    pool = SolverPool(min(n, len(texts)))
    try:
        return pool.solve(texts, timeout_s, progress)
    finally:
        pool.close()
