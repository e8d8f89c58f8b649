"""The symbolic teacher: the synthetic world's own solver, writing every rationale style from a problem's graph.

It stands in for an LLM teacher offline. With probability `error_rate` a rationale carries one realistic
mistake (a wrong operation, a miscopied number, a dropped step, a wrong final result) so that verification
has something to reject. Everything is deterministic given (seed, problem id, style, sample).

Formats are those the reasoning package reads (reasoning/styles.py): cot ends "The answer is N.", pot sets
`ans`, eot is `%` comments and equations ending in `ans = ...`, kp_* prefix the key points, decomp writes
sub-questions and their answers, dss a rationale and a label.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction

from distill_jax.data.problems import Problem
from distill_jax.data.synthetic import harder_variant, similar_problem
from distill_jax.data.synthetic_graph import apply_op, render_expr

MISTAKES = ("wrong_op", "off_by_one", "dropped_step", "wrong_final")
# A plausible confusion for each op; pct -> mul is "forgot to divide by 100".
_WRONG_OP = {"add": "sub", "sub": "add", "mul": "add", "div": "mul", "pct": "mul", "frac": "div"}


@dataclass
class Trace:
    """A solution path through a problem's graph: the facts used, the steps, and what is written as results."""

    givens: dict[str, Fraction]  # used facts only (distractors left out), in graph order
    facts: list[str]  # the story sentences holding those facts, in story order
    steps: list[dict]  # computed nodes: var, op, inputs, ask, claim
    question: str  # the final question (the last step's ask)
    written: dict[str, Fraction] = field(default_factory=dict)  # results written wrong (text styles)
    answer_var: str | None = None  # a program's `ans` pointing at the wrong quantity

    @classmethod
    def from_problem(cls, problem: Problem) -> "Trace":
        graph = problem.extra.get("graph")
        if not graph:
            raise ValueError(f"{problem.id}: the symbolic teacher needs a synthetic problem with a graph")
        used = {x for n in graph for x in n["inputs"] if isinstance(x, str)}
        givens = {n["var"]: Fraction(n["value"]) for n in graph if n["op"] == "given" and n["var"] in used}
        sentences = {n["sentence"] for n in graph if n["var"] in givens}
        facts = [s for s in problem.extra["story"] if s in sentences]
        steps = [dict(n) for n in graph if n["op"] != "given"]
        return cls(givens, facts, steps, steps[-1]["ask"])

    def values(self) -> dict[str, Fraction]:
        vals = dict(self.givens)
        for s in self.steps:
            args = [vals[x] if isinstance(x, str) else Fraction(x) for x in s["inputs"]]
            try:
                vals[s["var"]] = apply_op(s["op"], args)
            except ZeroDivisionError:
                vals[s["var"]] = Fraction(0)
            vals[s["var"]] = self.written.get(s["var"], vals[s["var"]])
        return vals

    @property
    def target(self) -> str:
        return self.answer_var or self.steps[-1]["var"]

    def copy(self) -> "Trace":
        return Trace(dict(self.givens), list(self.facts), [dict(s) for s in self.steps], self.question,
                     dict(self.written), self.answer_var)


def fmt(v: Fraction) -> str:
    """A number as a person writes it: whole numbers plain, others to at most two decimals."""
    if v.denominator == 1:
        return str(v.numerator)
    return f"{float(v):.2f}".rstrip("0").rstrip(".")


def mistake(trace: Trace, kind: str, rng: random.Random, program: bool) -> Trace:
    """A copy of `trace` with one mistake of `kind`; programs cannot write a wrong result, they answer wrongly."""
    t = trace.copy()
    if kind == "dropped_step" and len(t.steps) < 2:
        kind = "wrong_final"
    if kind == "wrong_final" and program and len(t.steps) < 2:
        kind = "off_by_one"  # a one-step program has no other quantity to answer with
    if kind == "wrong_op":
        s = rng.choice(t.steps)
        if s["op"] == "frac":
            s["inputs"] = [s["inputs"][0], s["inputs"][2], s["inputs"][1]]  # the fraction upside down
        else:
            s["op"] = _WRONG_OP[s["op"]]
    elif kind == "off_by_one":
        var = rng.choice(list(t.givens))
        t.givens[var] += 1 if t.givens[var] <= 1 or rng.random() < 0.5 else -1
    elif kind == "dropped_step":
        i = rng.randrange(len(t.steps) - 1)
        dropped = t.steps.pop(i)
        for s in t.steps[i:]:
            s["inputs"] = [dropped["inputs"][0] if x == dropped["var"] else x for x in s["inputs"]]
        t.givens = {k: v for k, v in t.givens.items() if any(k in s["inputs"] for s in t.steps)}
    elif program:  # wrong_final: answer with an earlier quantity
        t.answer_var = rng.choice(t.steps[:-1])["var"]
    else:  # wrong_final: a slip in the last result
        last = t.steps[-1]["var"]
        right = t.values()[last]
        t.written[last] = right + rng.choice((-10, -2, -1, 1, 2, 10)) if right > 10 else right + rng.randint(1, 3)
    return t


# ----------------------------------------------------------------------------------------------- styles
def _terms(t: Trace, step: dict, vals: dict[str, Fraction]) -> list[str]:
    return [fmt(vals[x]) if isinstance(x, str) else str(x) for x in step["inputs"]]


def cot_lines(t: Trace, calculator: bool = False) -> list[str]:
    """One claim per step with its arithmetic; `calculator` adds GSM8K's `<<expr=value>>` annotations, which
    calculator-aided decoding (evaluate/calculator.py) fills in with the true value."""
    vals = t.values()
    lines = []
    for s in t.steps:
        expr, result = render_expr(s["op"], _terms(t, s, vals)), fmt(vals[s["var"]])
        shown = f"{expr} = <<{expr.replace(' ', '')}={result}>>{result}" if calculator else f"{expr} = {result}"
        lines.append(s["claim"].replace("{}", shown))
    return lines + [f"The answer is {fmt(vals[t.target])}."]


def pot_lines(t: Trace) -> list[str]:
    lines = [f"{var} = {fmt(v)}" for var, v in t.givens.items()]
    lines += [f"{s['var']} = {render_expr(s['op'], [str(x) for x in s['inputs']])}" for s in t.steps]
    return lines + [f"ans = {t.target}"]


def eot_lines(t: Trace) -> list[str]:
    """One `% sub-question` comment and one equation per step; the question's numbers are written inline.

    Inlining keeps the system small: sympy solves it about ten times faster than with one unknown per fact,
    which is what verifying tens of thousands of rationales costs.
    """
    lines = []
    for s in t.steps:
        terms = [fmt(t.givens[x]) if x in t.givens else str(x) for x in s["inputs"]]
        lines += [f"% {s['ask']}", f"{s['var']} = {render_expr(s['op'], terms)}"]
    return lines + [f"ans = {t.target}"]


def key_points(t: Trace) -> str:
    return f"Core question: {t.question}\nKey information: {' '.join(t.facts)}\nSolution:"


def decomp_questions(t: Trace) -> list[str]:
    return [s["ask"] for s in t.steps]


ANSWER_STYLES = ("cot", "pot", "eot", "kp_cot", "kp_pot", "decomp", "dss")
STYLE_NAMES = ANSWER_STYLES + ("decomposer",)
_PROGRAM_STYLES = {"pot", "eot", "kp_pot"}


def render(t: Trace, style: str, calculator: bool = False) -> str:
    if style in ("cot", "dss"):
        return " ".join(cot_lines(t, calculator))
    if style == "pot":
        return "\n".join(pot_lines(t))
    if style == "eot":
        return "\n".join(eot_lines(t))
    if style == "kp_cot":
        return key_points(t) + " " + " ".join(cot_lines(t, calculator))
    if style == "kp_pot":
        return key_points(t) + "\n" + "\n".join(pot_lines(t))
    if style == "decomposer":
        return "\n".join(f"Q{i}: {q}" for i, q in enumerate(decomp_questions(t), 1))
    if style == "decomp":
        qs, ans = decomp_questions(t), cot_lines(t, calculator)
        lines = [f"{tag}{i}: {text}" for i, (q, a) in enumerate(zip(qs, ans), 1) for tag, text in (("Q", q), ("A", a))]
        return "\n".join(lines + [ans[-1]])
    raise ValueError(f"unknown style {style!r}; the symbolic teacher writes {', '.join(STYLE_NAMES)}")


class SymbolicTeacher:
    """Offline teacher for synthetic problems: rationales in every style, harder/similar new problems."""

    def __init__(self, error_rate: float = 0.0, seed: int = 0, calculator: bool = False):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        self.error_rate = error_rate
        self.seed = seed
        self.calculator = calculator  # text styles carry `<<expr=value>>` annotations

    def _rng(self, *parts: object) -> random.Random:
        return random.Random("|".join(str(p) for p in (self.seed, *parts)))

    def trace(self, problem: Problem, style: str, sample: int = 0) -> tuple[Trace, str | None]:
        """The solution path the rationale follows, and the mistake in it (None when it is right)."""
        rng = self._rng(problem.id, style, sample)
        right = Trace.from_problem(problem)
        if rng.random() >= self.error_rate:
            return right, None
        program = style in _PROGRAM_STYLES
        gold = right.values()[right.target]
        kinds = list(MISTAKES)
        rng.shuffle(kinds)
        for kind in kinds * 3:
            wrong = mistake(right, kind, rng, program)
            if wrong.values()[wrong.target] != gold:
                return wrong, kind
        return right, None

    def rationale(self, problem: Problem, style: str, sample: int = 0) -> str:
        t, _ = self.trace(problem, style, sample)
        return render(t, style, self.calculator)

    def new_problem(self, problem: Problem, kind: str = "harder", sample: int = 0) -> Problem:
        rng = self._rng(problem.id, kind, sample)
        new_id = f"{problem.id}-{kind}{sample}"
        if kind == "harder":
            return harder_variant(problem, rng, new_id)
        if kind == "similar":
            return similar_problem(problem, rng, new_id)
        raise ValueError(f"unknown kind {kind!r}: 'harder' or 'similar'")
