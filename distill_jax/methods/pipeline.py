"""The method pipelines as one resumable run each: `distill-jax distill --config configs/<method>_*.yaml`.

    kpdd       KPDD (arXiv 2407.10167): the teacher writes key-point rationales (core question, problem-solving
               information, a CoT or PoT solution); records whose key points fail the checks are dropped.
    etd        ETD / EoTD (arXiv 2401.11864): CoT, PoT and EoT rationales mixed by weight into one student that
               is asked for each style by a prefix; eval votes across the styles.
    pad        PaD (arXiv 2305.13888): verified PoT plus self-refinement records (a program broken by a syntax
               tree edit, with the interpreter's feedback -> the correct program); eval optionally decodes with
               the step-wise verified beam search.
    dss        Distilling step-by-step (arXiv 2305.02301): label and rationale tasks on one input, the loss
               label + lambda * rationale; eval scores the label task.
    decompose  Divide-or-Conquer (arXiv 2402.15000): the student learns the decomposer (question ->
               sub-questions) from decompositions that a solver turns into the gold answer; eval: the student
               decomposes, the solver (symbolic offline, the teacher endpoint, or the student) answers.

Stages (methods/stages.py; a rerun resumes at the first unfinished one):
  seed_problems -> teach -> records -> train -> eval -> report
Layout under RUN:
  problems/seed.jsonl            the seed problems (copied in, so the run is self-contained)
  rationales/r0/STYLE.jsonl      verified teacher rationales (teacher.generate; rejects/r0/ the others)
  records/*.jsonl                the method's training records; records/summary.json kept/rejected counts
  rejects/METHOD/*.jsonl         records the method dropped, each with its `reason`
  train/student/                 the training run (ckpt/, tokenizer/, logs/, eval/)
  results.json  report.md        accuracy per test set and style, with the record counts
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Callable

from rich.console import Console

from distill_jax.config import ConfigError
from distill_jax.data.problems import Problem, load_problems
from distill_jax.data.records import write_jsonl
from distill_jax.evaluate.config import EvalConfig
from distill_jax.evaluate.evaluate import evaluate
from distill_jax.evaluate.report import by_test_and_style, write_report
from distill_jax.fileio import write_json_atomic
from distill_jax.methods import pipeline_eval
from distill_jax.methods.decompose import decomp_records
from distill_jax.methods.dss import dss_records
from distill_jax.methods.etd import mix_files
from distill_jax.methods.kpdd import kp_records
from distill_jax.methods.method_config import MethodConfig
from distill_jax.methods.pad import refine_records
from distill_jax.methods.records_ops import load_records
from distill_jax.methods.solvers import make_solver
from distill_jax.methods import preflight
from distill_jax.methods.stages import (Stage, Stages, config_keys, copy_seed_problems, eval_files, prompt_files,
                                        seed_inputs, teach_keys, teach_outputs)
from distill_jax.reasoning.sandbox import configure_sandbox
from distill_jax.teacher.generate import teach
from distill_jax.train.config import TrainConfig
from distill_jax.train.loop import train


# ------------------------------------------------------------------------------------------- records
def _rationale_files(run: Path, style: str) -> list[Path]:
    path = run / "rationales" / "r0" / f"{style}.jsonl"
    return [path] if path.is_file() else []


def _teacher_records(run: Path, style: str) -> list[dict]:
    return load_records(_rationale_files(run, style), styles=[style])


def _write_sets(run: Path, method: str, kept: dict[str, list[dict]], rejects: dict[str, list[dict]]) -> dict:
    """RUN/records/NAME.jsonl and RUN/rejects/METHOD/NAME.jsonl; the counts for the summary."""
    for name, rows in kept.items():
        write_jsonl(run / "records" / f"{name}.jsonl", rows)
    for name, rows in rejects.items():
        write_jsonl(run / "rejects" / method / f"{name}.jsonl", rows)
    return {"kept": {k: len(v) for k, v in kept.items()}, "rejected": {k: len(v) for k, v in rejects.items()}}


def _records_kpdd(cfg: MethodConfig, run: Path, seeds: list[Problem]) -> dict:
    style = f"kp_{cfg.kpdd.solution}"
    records = _teacher_records(run, style)
    if not cfg.kpdd.check:
        return _write_sets(run, "kpdd", {style: records}, {})
    kept, rejects = kp_records(records, {p.id: p for p in seeds}, cfg.teach.verify_timeout_s)
    summary = _write_sets(run, "kpdd", {style: kept}, {style: rejects})
    reasons = Counter(reason.split(":")[0] for r in rejects
                      for reason in r["reason"].removeprefix("kpdd: ").split("; "))
    return {**summary, "reject_reasons": dict(reasons)}


def _records_etd(cfg: MethodConfig, run: Path, seeds: list[Problem]) -> dict:
    weights = {s: w for s, w in cfg.etd_weights.items() if w > 0}
    counts = mix_files({s: _rationale_files(run, s) for s in weights}, weights, run / "records" / "etd.jsonl",
                       total=cfg.etd.total, seed=cfg.etd.seed)
    available = {s: len(_teacher_records(run, s)) for s in weights}
    return {"kept": {"etd": sum(counts.values())}, "per_style": counts, "available": available, "rejected": {}}


def _records_pad(cfg: MethodConfig, run: Path, seeds: list[Problem]) -> dict:
    pot = _teacher_records(run, "pot")
    kept = {"pot": pot}
    if not cfg.pad.refine:
        return _write_sets(run, "pad", kept, {})
    refine, stats = refine_records(pot, seed=cfg.pad.seed, per_program=cfg.pad.per_program, tries=cfg.pad.tries,
                                   timeout_s=cfg.teach.verify_timeout_s)
    kept["refine"] = refine
    return {**_write_sets(run, "pad", kept, {}), "refine": dataclasses.asdict(stats)}


def _records_dss(cfg: MethodConfig, run: Path, seeds: list[Problem]) -> dict:
    source = _teacher_records(run, cfg.dss.source_style)
    rows = dss_records(source, label_weight=cfg.dss.label_weight, rationale_weight=cfg.dss.rationale_weight,
                       keep_label_in_rationale=cfg.dss.keep_label_in_rationale)
    summary = _write_sets(run, "dss", {"dss": rows}, {})
    tasks = {t: sum(r["meta"]["task"] == t for r in rows) for t in ("label", "rationale")}
    return {**summary, "tasks": tasks, "source_records": len(source)}


def _records_decompose(cfg: MethodConfig, run: Path, seeds: list[Problem]) -> dict:
    solve_fn = make_solver(cfg, run, seeds)
    sets = decomp_records(_teacher_records(run, "decomp"), solve_fn)
    kept = {"decomposer": sets.decomposer}
    if cfg.decompose.student_solver:
        kept["solver"] = sets.solver
    summary = _write_sets(run, "decompose", kept, {"decomposer": sets.rejects})
    reasons = Counter((v.reason or "").split(":")[0].split(" got ")[0] for v in sets.verdicts if not v.kept)
    return {**summary, "reject_reasons": dict(reasons), "solver": cfg.decompose.solver}


_RECORDS = {"kpdd": _records_kpdd, "etd": _records_etd, "pad": _records_pad, "dss": _records_dss,
            "decompose": _records_decompose}


# ------------------------------------------------------------------------------------------- the run
def student_dir(run: Path) -> Path:
    return run / "train" / "student"


def train_config(cfg: MethodConfig, run: Path) -> TrainConfig:
    data = dataclasses.replace(cfg.train.data, rationales=(str(run / "records"),))
    return dataclasses.replace(cfg.train, run_dir=str(student_dir(run)), data=data)


def _eval_config(cfg: MethodConfig, run: Path, progress: bool = True) -> EvalConfig:
    return EvalConfig(run_dir=str(student_dir(run)), benchmarks=cfg.eval.benchmarks, problems=cfg.eval.problems,
                      styles=cfg.eval_styles() or ("decomp",), vote=cfg.eval.vote, limit=cfg.eval.limit,
                      data_dir=cfg.eval.data_dir, report=False, decoding=cfg.eval.decoding, progress=progress)


def _evaluate(cfg: MethodConfig, run: Path, progress: bool) -> dict:
    base = _eval_config(cfg, run, progress)
    metrics = evaluate(base) if cfg.eval_styles() else []
    if cfg.method == "pad" and cfg.pad.stepwise:
        metrics += pipeline_eval.stepwise_eval(base, cfg.pad)
    if cfg.method == "decompose":
        metrics += pipeline_eval.decompose_eval(base, cfg, run)
    return by_test_and_style(metrics, ("accuracy", "n", "correct", "step"))


def _preamble(cfg: MethodConfig, records: dict, results: dict) -> str:
    lines = [f"Method: **{cfg.method}** (`distill-jax distill`, config in `config.yaml`).", "",
             f"Training records: kept {records['kept']}, rejected {records.get('rejected', {})}."]
    lines += [f"- {k}: {v}" for k, v in records.items() if k not in ("kept", "rejected")]
    lines += ["", "| test set / style | accuracy | n |", "|---|---|---|"]
    lines += [f"| {k} | {100 * v['accuracy']:.1f}% | {v['n']} |" for k, v in results.items()]
    return "\n".join(lines)


def check_method(cfg: MethodConfig) -> None:
    """Everything wrong with the config that can be known before any work (methods/preflight.py)."""
    if not cfg.eval.problems and not cfg.eval.benchmarks:
        raise ConfigError("eval.problems or eval.benchmarks must name at least one test set", key="eval.problems")
    preflight.teach_problems(cfg.teach)
    preflight.eval_sets(_eval_config(cfg, Path(cfg.run_dir)))
    preflight.train_devices(train_config(cfg, Path(cfg.run_dir)))


def method_stages(cfg: MethodConfig, run: Path, stages: Stages, progress: bool = True) -> list[Stage]:
    """seed_problems -> teach -> records -> train -> eval -> report, each with the keys and files it reads."""
    seed_file = run / "problems" / "seed.jsonl"
    seeds = lambda: load_problems(str(seed_file))  # noqa: E731  (read when a stage needs them, after the copy)
    teach_cfg = dataclasses.replace(cfg.teach, run_dir=str(run), round=0, limit=None, styles=cfg.teach_styles())
    teacher_calls = cfg.teach.teacher.kind == "openai"
    solver_calls = teacher_calls and cfg.method == "decompose" and cfg.decompose.solver == "teacher"

    def build_records() -> dict:
        summary = _RECORDS[cfg.method](cfg, run, seeds())
        write_json_atomic(run / "records" / "summary.json", summary)
        if not sum(summary["kept"].values()):
            raise ConfigError(f"{cfg.method}: no training records kept ({summary}); see {run / 'rejects'}")
        return summary

    def report() -> dict:
        records, accuracy = stages.result("records"), stages.result("eval")
        results = {"method": cfg.method, "records": records, "train": stages.result("train"), "eval": accuracy}
        write_json_atomic(run / "results.json", results)
        path = write_report(run, title=f"distill_jax {cfg.method}: {run.name}",
                            preamble=_preamble(cfg, records, accuracy))
        return {"results": str(run / "results.json"), "report": str(path)}

    method_keys = ("method", cfg.method)
    return [
        Stage("seed_problems", lambda: copy_seed_problems(cfg.teach.problems, cfg.teach.data_dir, cfg.teach.limit,
                                                          seed_file),
              **seed_inputs(cfg.teach), outputs=["problems/seed.jsonl"]),
        Stage("teach", lambda: teach(teach_cfg, seeds(), progress=progress).to_dict()["styles"],
              keys={**teach_keys(cfg), "teach.styles": list(teach_cfg.styles)}, files=prompt_files(cfg.teach),
              outputs=teach_outputs(0), paid=teacher_calls),
        Stage("records", build_records,
              keys={**config_keys(cfg, *method_keys, "teach.verify_timeout_s"),
                    **(teach_keys(cfg) if solver_calls else {})},
              outputs=["records", f"rejects/{cfg.method}"], paid=solver_calls),
        Stage("train", lambda: dataclasses.asdict(train(dataclasses.replace(train_config(cfg, run),
                                                                            progress=progress and cfg.train.progress))),
              keys=config_keys(cfg, "train", exclude=("train.run_dir", "train.data.rationales")),
              outputs=["train/student"]),
        Stage("eval", lambda: _evaluate(cfg, run, progress),
              keys=config_keys(cfg, "eval", *method_keys, exclude=("eval.problems", "eval.data_dir")),
              files=eval_files("eval", cfg.eval.benchmarks, cfg.eval.problems, cfg.eval.data_dir),
              outputs=["train/student/eval"], paid=solver_calls),
        Stage("report", report, outputs=["results.json", "report.md", "plots"]),
    ]


def run_method(cfg: MethodConfig, log: Callable[[str], None] | None = None, restart_from: str | None = None,
               progress: bool = True) -> dict:
    """Run (or resume) every stage; returns what RUN/results.json holds. A stage whose inputs changed since it
    ran reruns (with every later one); one that paid for teacher calls only with `restart_from` (stages.py)."""
    configure_sandbox(cfg.sandbox)
    check_method(cfg)
    log = log or Console().print
    run = Path(cfg.run_dir)
    if cfg.teach.teacher.dry_run:  # an estimate only: nothing is written, no stage runs
        teach_cfg = dataclasses.replace(cfg.teach, run_dir=str(run), round=0, styles=cfg.teach_styles())
        estimate = teach(teach_cfg).estimate
        log(f"dry run, nothing sent: {json.dumps(estimate, indent=2)}")
        return {"method": cfg.method, "dry_run": estimate}
    stages = Stages(run, log, restart_from)
    stages.run_all(method_stages(cfg, run, stages, progress), cfg)
    return json.loads((run / "results.json").read_text(encoding="utf-8"))
