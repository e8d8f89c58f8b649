"""`evaluate(cfg)`: score checkpoints on benchmarks per style, with voting, incrementally.

For each (step, benchmark, style, decoding) the student decodes every problem (jitted KV-cache decoding from
the model package, length-bucketed, batch sharded over all devices), the answer is read per style by the
reasoning package (sandboxed PoT, sympy EoT, parsed CoT) and compared with gold. Results and when they are
still valid: evaluate/results.py; a combination already scored is skipped, so `--step all` after more training
only does the new work. A checkpoint that fails to load is reported and the other steps are still evaluated;
the run then ends in `EvalFailed` (exit code 1).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape  # error texts hold [brackets] that rich would read as markup

from distill_jax.config import ConfigError
from distill_jax.evaluate.config import EvalConfig
from distill_jax.evaluate.report import write_report
from distill_jax.evaluate.results import (Benchmark, fingerprint, is_scored, load_benchmarks, model_identity,
                                          result_dir, stored, write_result)
from distill_jax.evaluate.student import Student, decode_mesh, decode_outputs, load_student
from distill_jax.evaluate.voting import majority_vote
from distill_jax.model.tokenizer import SpellingError
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.sandbox import configure_sandbox
from distill_jax.reasoning.styles import get_style, student_input
from distill_jax.train.checkpoint import Checkpointer, ckpt_dir


def available_steps(cfg: EvalConfig) -> list[int | str]:
    if cfg.model is not None:
        if not (Path(cfg.model) / "config.json").is_file():
            raise ConfigError(f"model: {cfg.model} is not a Hugging Face model directory (no config.json)")
        return ["hf"]
    if not ckpt_dir(cfg.run_dir).is_dir():
        raise ConfigError(f"{cfg.run_dir}: no checkpoints (no ckpt/ directory)")
    ckpt = Checkpointer(cfg.run_dir, read_only=True, async_save=False)
    try:
        steps = ckpt.all_steps()
    finally:
        ckpt.close()
    if not steps:
        raise ConfigError(f"{cfg.run_dir}: no checkpoints under ckpt/")
    if cfg.steps == "all":
        return list(steps)
    if cfg.steps == "latest":
        return [steps[-1]]
    try:
        wanted = [int(s) for s in cfg.steps.split(",")]
    except ValueError as e:
        raise ConfigError(f"steps: {cfg.steps!r} is not 'latest', 'all' or step numbers") from e
    missing = [s for s in wanted if s not in steps]
    if missing:
        raise ConfigError(f"steps {missing} not in {cfg.run_dir}/ckpt (available: {steps})")
    return wanted


def score_style(cfg: EvalConfig, student: Student, bench: Benchmark, style: str, mesh: Any, model: dict) -> dict:
    """Decode, read answers, compare; write predictions.jsonl and metrics.json; return the metrics."""
    directory = result_dir(cfg, student.step, bench.name, style)
    fp = fingerprint(cfg, bench, style, model)
    if is_scored(directory, fp):
        return stored(directory)
    inputs = [student_input(p.question, style) for p in bench.problems]
    try:  # a character without a token would be read as <unk>: refuse before decoding, naming the problem
        student.tokenizer.check_inputs(inputs, [f"{bench.name}, problem {p.id}" for p in bench.problems])
    except SpellingError as e:
        raise ConfigError(str(e)) from e
    start = time.perf_counter()
    outputs = decode_outputs(student, inputs, cfg.decoding, mesh, cfg.progress)
    seconds = time.perf_counter() - start
    flat = [o for outs in outputs for o in outs]
    answers = get_style(style).answers(flat)
    new_tokens = sum(len(ids) for ids in student.tokenizer.encode_batch(flat, add_eos=False))
    rows, errors, pos = [], {}, 0
    first_correct = no_answer = 0
    for problem, inp, outs in zip(bench.problems, inputs, outputs):
        ans = answers[pos: pos + len(outs)]
        pos += len(outs)
        vote = majority_vote([a.answer for a in ans])
        ok = answers_match(vote.answer, problem.answer)
        first_correct += answers_match(ans[0].answer, problem.answer)
        no_answer += vote.answer is None
        for a in ans:
            if a.error:
                kind = a.error.split(":")[0]
                errors[kind] = errors.get(kind, 0) + 1
        row = {"id": problem.id, "input": inp, "output": outs[0] if len(outs) == 1 else outs,
               "prediction": vote.answer, "gold": problem.answer, "correct": ok,
               "error": ans[0].error if len(outs) == 1 else [a.error for a in ans]}
        if len(outs) > 1:
            row["predictions"] = [a.answer for a in ans]
        rows.append(row)
    n = len(bench.problems)
    extra = {"no_answer": no_answer, "errors": dict(sorted(errors.items())), "decode_seconds": round(seconds, 3),
             "decode_tokens_per_s": round(new_tokens / seconds, 1) if seconds > 0 else None, "fingerprint": fp}
    if cfg.decoding.samples > 1 and cfg.decoding.mode == "sample":
        extra["first_sample_accuracy"] = first_correct / n if n else 0.0
    return write_result(cfg, student.step, bench, style, rows, **extra)


def vote_styles(cfg: EvalConfig, step: int | str, bench: Benchmark, fp: dict | None = None) -> dict:
    """Majority over every style's (and sample's) answers, styles in config order (the tie-break order).
    `fp` (the voters' fingerprints) is stored so that an unchanged vote is not redone."""
    per_style = []
    for style in cfg.styles:
        path = result_dir(cfg, step, bench.name, style) / "predictions.jsonl"
        rows = {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
        per_style.append(rows)
    rows = []
    for p in bench.problems:
        votes = []
        for rows_by_id in per_style:
            r = rows_by_id[p.id]
            votes += r.get("predictions", [r["prediction"]])
        vote = majority_vote(votes)
        rows.append({"id": p.id, "votes": votes, "prediction": vote.answer, "agree": vote.votes,
                     "gold": p.answer, "correct": answers_match(vote.answer, p.answer)})
    return write_result(cfg, step, bench, "vote", rows, voters=list(cfg.styles),
                        tie_break="first vote in style order " + ",".join(cfg.styles), fingerprint=fp)


class EvalFailed(RuntimeError):
    """Some checkpoints could not be loaded; every other step was evaluated (`results`) and written."""

    def __init__(self, failures: list[tuple[int | str, str]], results: list[dict]):
        self.failures, self.results = failures, results
        listed = "; ".join(f"step {s}: {why}" for s, why in failures)
        super().__init__(f"{len(failures)} checkpoint(s) could not be evaluated: {listed}")


def evaluate(cfg: EvalConfig, console: Any = None) -> list[dict]:
    """Run the whole evaluation; returns every metrics dict (skipped ones included, flagged).

    Raises EvalFailed at the end when a checkpoint could not be loaded (after scoring all the others)."""
    configure_sandbox(cfg.sandbox)
    console = console or Console(soft_wrap=True)
    benchmarks = load_benchmarks(cfg)  # bad benchmark names fail before any checkpoint is loaded
    mesh = decode_mesh(cfg.decoding.batch_size)
    voting = cfg.vote and (len(cfg.styles) > 1 or cfg.decoding.samples > 1)
    results, failures = [], []
    for step in available_steps(cfg):
        model = model_identity(cfg, step)
        fps = {(b.name, s): fingerprint(cfg, b, s, model) for b in benchmarks for s in cfg.styles}
        todo = [k for k, fp in fps.items() if not is_scored(result_dir(cfg, step, k[0], k[1]), fp)]
        student = None
        if todo:
            try:
                student = load_student(cfg.model or cfg.run_dir, step)
            except Exception as e:  # one bad checkpoint must not stop the others being scored
                failures.append((step, f"{type(e).__name__}: {e}"))
                console.print(f"[red]step {step}: cannot load checkpoint: {escape(f'{type(e).__name__}: {e}')}[/red]")
                continue
        for bench in benchmarks:
            scored = []
            for style in cfg.styles:
                if (bench.name, style) in todo:
                    m = score_style(cfg, student, bench, style, mesh, model)
                else:
                    m = stored(result_dir(cfg, step, bench.name, style))
                scored.append(m)
                note = " (already scored)" if m.get("skipped") else ""
                console.print(f"step {step} {bench.name} {style}: {100 * m['accuracy']:.1f}% "
                              f"({m['correct']}/{m['n']}){note}")
            results += scored
            if voting:
                vote_fp = {"voters": [fps[(bench.name, s)] for s in cfg.styles]}
                vote_dir = result_dir(cfg, step, bench.name, "vote")
                m = stored(vote_dir) if is_scored(vote_dir, vote_fp) else vote_styles(cfg, step, bench, vote_fp)
                results.append(m)
                note = " (already scored)" if m.get("skipped") else ""
                console.print(f"step {step} {bench.name} vote: {100 * m['accuracy']:.1f}% "
                              f"({m['correct']}/{m['n']}){note}")
    if cfg.report and cfg.run_dir is not None:
        console.print(f"report: {write_report(cfg.run_dir)}")
    if failures:
        error = EvalFailed(failures, results)
        console.print(f"[red]{escape(str(error))}[/red]")
        raise error
    return results
