"""The method evals that `evaluate.evaluate` does not cover, written in its layout so the report shows them:
`<student run>/eval/<step>/<benchmark>/<label>/{predictions.jsonl,metrics.json}`.

- PaD's step-wise verified beam (`pot+stepwise`): the student proposes programs, by beam search (every beam) or
  by sampling; the step-wise beam walks their lines as a prefix tree (proposals at a prefix: the next lines of
  the programs that share it, each with the student's log-probability of that line given the prefix, or with
  its log-frequency among samples), and methods/pad_verify.stepwise_beam keeps the prefixes its sandbox
  verifier (plus `lm_weight` x log-probability) scores best. Proposing from one batched decode per test set
  costs far less than a decode per beam per step; the beams' lines are scored step by step all the same.
- Divide-or-Conquer (`decomp+<solver>`): the student decomposes each test question; the solver (symbolic
  offline, the teacher endpoint, or the student on its solver task) answers the sub-questions in order; the
  final answer is scored against gold.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from distill_jax.evaluate.config import EvalConfig
from distill_jax.evaluate.evaluate import available_steps
from distill_jax.evaluate.results import Benchmark, load_benchmarks, write_result
from distill_jax.evaluate.student import Student, decode_beams, decode_mesh, decode_outputs, load_student
from distill_jax.methods.decompose import decomposer_input, solver_input, subquestions
from distill_jax.methods.method_config import MethodConfig, PadSection
from distill_jax.methods.pad_verify import stepwise_beam
from distill_jax.methods.solvers import make_solver
from distill_jax.model.decode import BeamText
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import extract_program, get_style, student_input


def _students(cfg: EvalConfig):
    """(step, student, benchmarks, mesh) for every step the config names."""
    benchmarks = load_benchmarks(cfg)
    mesh = decode_mesh(cfg.decoding.batch_size)
    for step in available_steps(cfg):
        yield step, load_student(cfg.model or cfg.run_dir, step), benchmarks, mesh


def _first_outputs(student: Student, inputs: list[str], cfg: EvalConfig, mesh: Any) -> list[str]:
    return [outs[0] for outs in decode_outputs(student, inputs, cfg.decoding, mesh, cfg.progress)] if inputs else []


# ------------------------------------------------------------------------------------ PaD step-wise beam
def line_tree(outputs: list[str]) -> Callable[[str, list[str]], list[tuple[str, float]]]:
    """`stepwise_beam`'s proposer over sampled programs: the next lines after a prefix, most frequent first,
    each with its log-frequency among the programs that share the prefix."""
    programs = [[ln for ln in extract_program(t).splitlines() if ln.strip()] for t in outputs]

    def candidates(question: str, lines: list[str]) -> list[tuple[str, float]]:
        k = len(lines)
        nxt = Counter(p[k] for p in programs if len(p) > k and p[:k] == lines)
        total = sum(nxt.values())
        return [(line, math.log(c / total)) for line, c in nxt.most_common()]

    return candidates


def line_logprobs(tokenizer: Any, beam: BeamText) -> list[tuple[str, float]]:
    """The beam's text as (line, log-probability of its tokens given everything before), empty lines dropped
    (their tokens count toward the next line); EOS counts toward the last line."""
    lines = beam.text.split("\n")
    ids = [i for i in beam.tokens if i != tokenizer.eos_id]
    per_token = [tokenizer.decode([i]).count("\n") for i in ids]
    if sum(per_token) != len(lines) - 1:  # a newline spelled across tokens: find the boundaries by prefixes
        counts = [tokenizer.decode(ids[:n + 1]).count("\n") for n in range(len(ids))]
        per_token = [c - p for c, p in zip(counts, [0] + counts[:-1])]
    sums = [0.0] * len(lines)
    line = 0
    for lp, newlines in zip(beam.token_logprobs, per_token + [0]):  # the trailing 0 is EOS's
        sums[min(line, len(lines) - 1)] += lp
        line += newlines
    out, carry = [], 0.0
    for text, lp in zip(lines, sums):
        if text.strip():
            out.append((text, carry + lp))
            carry = 0.0
        else:
            carry += lp
    return out


def beam_line_tree(tokenizer: Any, beams: list[BeamText]) -> Callable[[str, list[str]], list[tuple[str, float]]]:
    """`stepwise_beam`'s proposer over the student's beams: the next lines after a prefix, each with the
    student's log-probability of it given the prefix (the best among beams that share both), most likely
    first."""
    programs = [line_logprobs(tokenizer, b) for b in beams]

    def candidates(question: str, lines: list[str]) -> list[tuple[str, float]]:
        k = len(lines)
        nxt: dict[str, float] = {}
        for p in programs:
            if len(p) > k and [text for text, _ in p[:k]] == lines:
                nxt[p[k][0]] = max(nxt.get(p[k][0], -math.inf), p[k][1])
        return sorted(nxt.items(), key=lambda item: -item[1])

    return candidates


def stepwise_eval(cfg: EvalConfig, pad: PadSection) -> list[dict]:
    """PoT accuracy with the step-wise verified beam over the programs the student proposes (label
    `pot+stepwise`)."""
    settings = {"stepwise": {"beam": pad.beam, "proposals": pad.proposals, "samples": pad.samples,
                             "temperature": pad.temperature, "max_steps": pad.max_steps, "lm_weight": pad.lm_weight}}
    out = []
    for step, student, benchmarks, mesh in _students(cfg):
        for bench in benchmarks:
            inputs = [student_input(p.question, "pot") for p in bench.problems]
            if pad.proposals == "beam":
                found = decode_beams(student, inputs, pad.samples, cfg.decoding, mesh, cfg.progress)
                proposers = [beam_line_tree(student.tokenizer, b) for b in found]
            else:
                sampling = dataclasses.replace(cfg.decoding, mode="sample", samples=pad.samples,
                                               temperature=pad.temperature, calculator=False)
                proposers = [line_tree(outs) for outs in decode_outputs(student, inputs, sampling, mesh, cfg.progress)]
            best = [stepwise_beam(propose, p.question, pad.beam, pad.max_steps, lm_weight=pad.lm_weight)[0]
                    for p, propose in zip(bench.problems, proposers)]
            answers = get_style("pot").answers([b.program for b in best])
            rows = [{"id": p.id, "input": inp, "output": b.program, "prediction": a.answer, "gold": p.answer,
                     "correct": answers_match(a.answer, p.answer), "error": a.error, "beam_score": b.score,
                     "finished": b.finished}
                    for p, inp, b, a in zip(bench.problems, inputs, best, answers)]
            out.append(write_result(cfg, step, bench, "pot+stepwise", rows, method_settings=settings,
                                    no_answer=sum(r["prediction"] is None for r in rows)))
    return out


# ---------------------------------------------------------------------------------- Divide-or-Conquer
def _score_plans(cfg: EvalConfig, step: int | str, bench: Benchmark, label: str, plans: list[list[str]],
                 plan_texts: list[str], solve_fn: Callable) -> dict:
    todo = [i for i, plan in enumerate(plans) if plan]
    solved = dict(zip(todo, solve_fn([(bench.problems[i].question, plans[i]) for i in todo]) if todo else []))
    answers = dict(zip(todo, get_style("decomp").answers([solved[i] for i in todo])))
    rows = []
    for i, p in enumerate(bench.problems):
        got = answers.get(i)
        prediction = got.answer if got else None
        rows.append({"id": p.id, "decomposition": plan_texts[i], "subquestions": plans[i],
                     "output": solved.get(i), "prediction": prediction, "gold": p.answer,
                     "correct": answers_match(prediction, p.answer),
                     "error": (got.error if got else "no sub-questions")})
    return write_result(cfg, step, bench, label, rows, no_answer=sum(r["prediction"] is None for r in rows),
                        method_settings={"solver": label.split("+", 1)[1]})


def decompose_eval(cfg: EvalConfig, method: MethodConfig, run: Path) -> list[dict]:
    """The student decomposes; each solver answers; label `decomp+<solver>` per solver."""
    out = []
    for step, student, benchmarks, mesh in _students(cfg):
        for bench in benchmarks:
            texts = _first_outputs(student, [decomposer_input(p.question) for p in bench.problems], cfg, mesh)
            plans = [subquestions(t) for t in texts]
            solvers: dict[str, Callable] = {method.decompose.solver: make_solver(method, run, bench.problems)}
            if method.decompose.student_solver:
                solvers["student"] = lambda items, s=student: _first_outputs(
                    s, [solver_input(q, subs) for q, subs in items], cfg, mesh)
            for name, fn in solvers.items():
                out.append(_score_plans(cfg, step, bench, f"decomp+{name}", plans, texts, fn))
    return out
