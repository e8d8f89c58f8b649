"""Divide-or-Conquer (arXiv 2402.15000): distil the decomposer, keep only decompositions a solver can use.

The teacher's `decomp` records (reasoning/styles.py format) are sub-questions with their answers:

    Q1: How many tulips does Ivy have?
    A1: Ivy has 12 * 4 = 48 tulips.
    Q2: ...
    A2: ...
    The answer is 16.

From them this module makes two record kinds, both with style `decomp` (their outputs are read as decomp):

- decomposer records (`meta.task = "decompose"`): input `[decomp:decompose] <question>`, target the
  sub-question lines only (`Q1: ...` one per line, the teacher's `decomp_plan` format);
- solver records (`meta.task = "solve"`): input `[decomp:solve] <question>` followed by the sub-question
  lines, target the teacher's full Q/A text, from teacher records that reached the gold answer.

A decomposition becomes a decomposer record only when a solver, answering its sub-questions in order,
reaches the gold answer (the paper's filter); the verdict is recorded in `meta.decomp_filter`, and the
dropped ones come back as rejects with the same verdict. The solver is any callable
`solve_fn([(question, sub_questions), ...]) -> [decomp-format text, ...]`: the teacher endpoint (its
output cleaned with teacher.parse.clean_subanswers), a student, or offline `SymbolicSolver`.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Callable, Sequence

from distill_jax.data.problems import Problem
from distill_jax.data.synthetic_graph import render_expr
from distill_jax.methods.records_ops import derive, require_style
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import get_style
from distill_jax.teacher.symbolic import fmt

DECOMPOSE_PREFIX = "[decomp:decompose]"
SOLVE_PREFIX = "[decomp:solve]"
_QUESTION_LINE = re.compile(r"^\s*Q(\d+)\s*[:.)]\s*(.+?)\s*$", re.MULTILINE)

SolveFn = Callable[[list[tuple[str, list[str]]]], list[str]]


def subquestions(text: str) -> list[str]:
    """The `Qk: ...` sub-questions of a decomp or decomposer text, in order."""
    return [m.group(2) for m in _QUESTION_LINE.finditer(text)]


def decomposer_target(questions: Sequence[str]) -> str:
    return "\n".join(f"Q{i}: {q}" for i, q in enumerate(questions, 1))


def decomposer_input(question: str) -> str:
    return f"{DECOMPOSE_PREFIX} {question.strip()}"


def solver_input(question: str, questions: Sequence[str]) -> str:
    return f"{SOLVE_PREFIX} {question.strip()}\n{decomposer_target(questions)}"


# ------------------------------------------------------------------------------------- offline solver
def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class SymbolicSolver:
    """The synthetic world's solver for sub-questions: `solve_fn` for offline runs and tests.

    A sub-question is answered when it asks for a computed quantity of the problem's graph whose computed
    inputs earlier sub-questions have already answered (the story's facts are known); anything else gets
    "cannot answer". So an out-of-order, incomplete or off-topic decomposition leaves it short, and the
    final answer is the last sub-question's answer: a plan that stops early answers the wrong quantity.
    """

    def __init__(self, problems: Sequence[Problem]):
        self._graphs: dict[str, list[dict]] = {}
        for p in problems:
            graph = p.extra.get("graph")
            if not graph:
                raise ValueError(f"{p.id}: SymbolicSolver needs synthetic problems with a graph")
            self._graphs[_norm(p.question)] = graph

    def __call__(self, items: list[tuple[str, list[str]]]) -> list[str]:
        return [self.solve(q, subs) for q, subs in items]

    def solve(self, question: str, subs: Sequence[str]) -> str:
        graph = self._graphs.get(_norm(question))
        if graph is None:
            raise KeyError(f"SymbolicSolver: unknown question {question[:60]!r}")
        by_ask: dict[str, list[dict]] = {}
        for n in graph:
            if n["op"] != "given":  # one ask may name several nodes ("in total" after each purchase)
                by_ask.setdefault(_norm(n["ask"]), []).append(n)
        values = {n["var"]: Fraction(n["value"]) for n in graph}
        computed = {n["var"] for n in graph if n["op"] != "given"}
        known: set[str] = set()
        lines, last = [], None
        for k, sub in enumerate(subs, 1):
            lines.append(f"Q{k}: {sub}")
            node = next((n for n in by_ask.get(_norm(sub), []) if n["var"] not in known and all(
                x in known for x in n["inputs"] if isinstance(x, str) and x in computed)), None)
            if node is None:
                lines.append(f"A{k}: This cannot be answered from the question and the answers so far.")
                last = None
                continue
            terms = [fmt(values[x]) if isinstance(x, str) else str(x) for x in node["inputs"]]
            result = f"{render_expr(node['op'], terms)} = {fmt(values[node['var']])}"
            lines.append(f"A{k}: {node['claim'].replace('{}', result)}")
            known.add(node["var"])
            last = values[node["var"]]
        if last is not None:
            lines.append(f"The answer is {fmt(last)}.")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- filter
@dataclass(frozen=True)
class Verdict:
    problem_id: str
    kept: bool
    solver_answer: str | None
    gold: str | None
    reason: str | None  # why it was dropped


def filter_decompositions(records: Sequence[dict], solve_fn: SolveFn) -> list[Verdict]:
    """Run the solver on every record's sub-questions (one batch) and compare with the gold answer."""
    require_style(records, ("decomp",), "decompose")
    plans = [subquestions(r["rationale"]) for r in records]
    todo = [i for i, p in enumerate(plans) if p]
    outputs = solve_fn([(records[i]["question"], plans[i]) for i in todo]) if todo else []
    if len(outputs) != len(todo):
        raise ValueError(f"decompose: solve_fn returned {len(outputs)} outputs for {len(todo)} decompositions")
    answers = dict(zip(todo, get_style("decomp").answers(list(outputs))))
    verdicts = []
    for i, rec in enumerate(records):
        gold = rec.get("answer")
        pid = str(rec["problem_id"])
        if i not in answers:
            verdicts.append(Verdict(pid, False, None, gold, "no sub-questions"))
            continue
        got = answers[i]
        if gold is None:
            verdicts.append(Verdict(pid, False, got.answer, gold, "no gold answer to check against"))
        elif got.answer is None:
            verdicts.append(Verdict(pid, False, None, gold, f"solver gave no answer: {got.error}"))
        elif not answers_match(got.answer, gold):
            verdicts.append(Verdict(pid, False, got.answer, gold, f"solver got {got.answer}, gold {gold}"))
        else:
            verdicts.append(Verdict(pid, True, got.answer, gold, None))
    return verdicts


@dataclass
class DecompSets:
    decomposer: list[dict] = field(default_factory=list)  # decompositions that passed the filter
    solver: list[dict] = field(default_factory=list)  # question + sub-questions -> the teacher's answers
    rejects: list[dict] = field(default_factory=list)  # decomposer records that failed, with `reason`
    verdicts: list[Verdict] = field(default_factory=list)


def decomp_records(records: Sequence[dict], solve_fn: SolveFn) -> DecompSets:
    """Decomposer records filtered by `solve_fn`, and solver records from the teacher's correct answers."""
    verdicts = filter_decompositions(records, solve_fn)
    out = DecompSets(verdicts=verdicts)
    for rec, verdict in zip(records, verdicts):
        plan = subquestions(rec["rationale"])
        if not plan:
            continue
        decomposer = derive(rec, style="decomp", rationale=decomposer_target(plan), method="decompose",
                            task="decompose", input_text=decomposer_input(rec["question"]), correct=verdict.kept,
                            prediction=verdict.solver_answer, extra_meta={"decomp_filter": asdict(verdict)})
        if verdict.kept:
            out.decomposer.append(decomposer)
        else:
            out.rejects.append({**decomposer, "reason": f"decomp filter: {verdict.reason}"})
        if rec.get("correct") is not False and rec.get("prediction") is not None \
                and answers_match(rec.get("prediction"), rec.get("answer")):
            out.solver.append(derive(rec, style="decomp", rationale=rec["rationale"], method="decompose",
                                     task="solve", input_text=solver_input(rec["question"], plan)))
    return out
