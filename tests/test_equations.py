"""EoT solving with sympy in deadline-bound workers (distill_jax/reasoning/equations.py)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import sympy

from distill_jax.data.records import read_jsonl
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.equations import SolverPool, solve_equations, solve_many

FIXTURES = Path(__file__).parent / "fixtures" / "teacher_outputs"

# (text, answer or None, error substring or None); one batch through the pool keeps the test fast.
CASES = [
    ("% apples per box\napples = 12\nboxes = 3\nans = apples * boxes", "36", None),
    ("2x + 5 = 17\nans = x", "6", None),
    ("ans = 3x\nx = 2(1 + 1)", "12", None),  # implicit multiplication, order does not matter
    ("total = 1,080\nans = total / 4", "270", None),
    ("price = 80\nans = price - 25% * price", "60", None),
    ("a = 2\nb = a^3\nans = b", "8", None),  # ^ is a power
    ("a = b = 3\nans = a + b", "6", None),
    ("cost = 0.1 + 0.2\nans = cost", "0.3", None),  # decimals are exact
    ("speed = 160 / 2  % km per hour\nans = speed * 3", "240", None),
    ("ans = 10 / 3", "3.333333333333333", None),
    ("x = 3, y = 1,200; z = 2\nans = x + y + z", "1205", None),
    ("ans = 3, 4", None, "not an equation"),
    ("# hours worked\nh = 6  # per day\nans = 5h", "30", None),
    ("side^2 = 49\nans = side", "7", None),  # the unique positive root (documented)
    ("x^2 = 2\nans = x", "1.414213562373095", None),
    ("```\nx = 4\nans = 2 × x − 1\n```", "7", None),
    ("ans * 4 = 10", "2.5", None),
    ("ans = x + y\nx = 3", None, "underdetermined"),
    ("x = 1\nx = 2\nans = x", None, "inconsistent"),
    ("(x - 2)(x - 3) = 0\nans = x", None, "several solutions"),
    ("x^2 = -4\nans = x", None, "no real solution"),
    ("x = 5\ny = x", None, "no ans"),
    ("Let x be the number of apples\nans = x", None, "not an equation"),
    ("total cost = price per item * 3\nans = total", None, "words side by side"),
    ("ans = __import__('os')", None, "not an equation"),
    ("ans = __class__", None, "not allowed"),
    ("ans = lambda", None, "not allowed"),
    ("import os\nans = 1", None, "not an equation"),
    ("ans = 10^400", None, "too large"),
    ("", None, "no equations"),
]


def test_cases_in_one_batch():
    results = solve_many([c[0] for c in CASES], timeout_s=5.0, workers=2)
    for (text, answer, error), result in zip(CASES, results):
        assert result.answer == answer, (text, result)
        if error is None:
            assert result.error is None, (text, result)
        else:
            assert error in result.error, (text, result)


def test_adversarial_input_times_out_and_the_pool_recovers():
    start = time.monotonic()
    slow = solve_equations("ans = 7^7^7^7", timeout_s=0.5)
    assert slow.answer is None and slow.error == "timeout"
    assert solve_equations("ans = 6 * 7", timeout_s=10.0).answer == "42"
    assert time.monotonic() - start < 20


def _straightforward_sympy(plain: list[str]) -> sympy.Expr:
    eqs = [sympy.sympify(p, locals={"Rational": sympy.Rational}) for p in plain]
    unknowns = sorted(set().union(*(e.free_symbols for e in eqs)), key=str)
    solutions = sympy.solve(eqs, unknowns, dict=True)
    values = {s[sympy.Symbol("ans")] for s in solutions if s[sympy.Symbol("ans")].is_positive}
    assert len(values) == 1, plain
    return values.pop()


def test_eot_fixture_agreement():
    rows = read_jsonl(FIXTURES / "eot.jsonl")
    assert len(rows) >= 60
    results = solve_many([r["text"] for r in rows], timeout_s=5.0, workers=2)
    agree = 0
    for row, result in zip(rows, results):
        expected = _straightforward_sympy(row["plain"])
        agree += result.answer is not None and answers_match(result.answer, str(sympy.N(expected, 20)))
    assert agree / len(rows) >= 0.98


def test_solve_many_empty_and_progress():
    assert solve_many([]) == []
    seen = []
    solve_many(["ans = 1", "ans = 2"], workers=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]


def test_interrupted_batch_leaves_no_stale_reply():
    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    pool = SolverPool(workers=2)
    try:
        assert len(pool.solve(["ans = 0"] * 40, timeout_s=10.0)) == 40  # both workers started and idle
        with pytest.raises(KeyboardInterrupt):
            pool.solve(["ans = 1", "ans = 2", "ans = 3"], timeout_s=10.0, progress=stop)
        time.sleep(0.5)  # an unkilled busy worker's late reply would be waiting in its pipe by now
        assert [r.answer for r in pool.solve(["ans = 5", "ans = 6"], timeout_s=10.0)] == ["5", "6"]
    finally:
        pool.close()
