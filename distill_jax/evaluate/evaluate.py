"""`distill-jax eval`: score checkpoints on benchmarks per style, with voting, incrementally.

For each (step, benchmark, style, decoding) the student decodes every problem (jitted KV-cache decoding from
the model package, length-bucketed, batch sharded over all devices), the answer is read per style by the
reasoning package (sandboxed PoT, sympy EoT, parsed CoT) and compared with gold. Results land in
`RUN/eval/<step>/<benchmark>/<style>[@<decoding>]/{predictions.jsonl,metrics.json}`; a combination whose
metrics.json carries the same fingerprint (data file hash, count, decoding settings, and the checkpoint's commit
time or the HF weight files' size and mtime, so a re-trained step or a re-exported model is scored again) is
skipped, so `--step all` after more training only does the new work. A checkpoint that fails to load is
reported and the other steps are still evaluated; the run then ends in `EvalFailed` (exit code 1).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill_jax import config as config_lib
from distill_jax.config import ConfigError
from distill_jax.data.problems import BENCHMARKS, Problem, load_problems, resolve_benchmark
from distill_jax.data.records import DataError, write_jsonl
from distill_jax.evaluate.voting import majority_vote
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import STYLES, get_style, student_input


@dataclass(frozen=True)
class DecodingConfig:
    mode: Literal["greedy", "sample", "beam"] = "greedy"
    max_new_tokens: int = 256
    batch_size: int = 32
    num_beams: int = 4
    length_penalty: float = 1.0
    samples: int = 1
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    calculator: bool = False  # force computed values into `<<expr=value>>` annotations (CoT)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if self.calculator and self.mode != "greedy":
            raise ValueError("calculator-aided decoding is greedy only")
        if self.mode == "sample" and self.temperature <= 0:
            raise ValueError("sampling needs temperature > 0")

    def tag(self) -> str:
        """A short, unique name for these settings; part of the output directory."""
        if self.mode == "greedy":
            base = "greedy"
        elif self.mode == "beam":
            base = f"beam{self.num_beams}-lp{self.length_penalty:g}"
        else:
            base = f"sample{self.samples}-t{self.temperature:g}-k{self.top_k}-p{self.top_p:g}-s{self.seed}"
        return base + ("+calc" if self.calculator else "") + f"-max{self.max_new_tokens}"


@dataclass(frozen=True)
class EvalConfig:
    run_dir: str | None = None  # a training run: checkpoints in RUN/ckpt, results in RUN/eval
    model: str | None = None  # or a bare Hugging Face directory (results in out_dir)
    out_dir: str | None = None  # where a bare model's results go (default: MODEL/eval)
    steps: str = "latest"  # "latest", "all", or comma-separated step numbers
    benchmarks: tuple[str, ...] = ("gsm8k_test",)
    problems: tuple[str, ...] = ()  # extra JSONL problem files, each scored as a benchmark named by its stem
    styles: tuple[str, ...] = ("cot",)
    vote: bool = True  # majority over styles (and samples) beside each single style
    limit: int = 0  # first N problems of each benchmark (0 = all)
    data_dir: str | None = None
    report: bool = True
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    def __post_init__(self) -> None:
        if (self.run_dir is None) == (self.model is None):
            raise ValueError("give exactly one of run_dir (a training run) or model (a HF directory)")
        unknown = [s for s in self.styles if s not in STYLES]
        if unknown:
            raise ValueError(f"unknown style(s) {unknown}; known: {sorted(STYLES)}")
        if not self.styles:
            raise ValueError("styles is empty")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Benchmark:
    name: str
    path: Path
    sha256: str
    problems: list[Problem]


def load_benchmarks(cfg: EvalConfig) -> list[Benchmark]:
    unknown = [name for name in cfg.benchmarks if name not in BENCHMARKS]
    if unknown:
        raise ConfigError(f"benchmarks: unknown {unknown}; known: {sorted(BENCHMARKS)} (or pass --problems FILE)")
    out = []
    try:
        specs = [(name, resolve_benchmark(name, cfg.data_dir)) for name in cfg.benchmarks]
    except DataError as e:
        raise ConfigError(f"benchmarks: {e}") from e
    specs += [(Path(p).stem, Path(p)) for p in cfg.problems]
    for name, path in specs:
        if not path.is_file():
            raise ConfigError(f"benchmark {name!r}: no file at {path}")
        try:
            problems = load_problems(str(path))
        except DataError as e:
            raise ConfigError(f"benchmark {name!r}: {e}") from e
        if cfg.limit:
            problems = problems[: cfg.limit]
        out.append(Benchmark(name, path, _sha256(path), problems))
    return out


@dataclass
class Student:
    """What decoding needs: params, model config, tokenizer; `step` names the checkpoint ("hf" for a bare dir)."""

    step: int | str
    params: Any
    config: Any
    tokenizer: Any


def available_steps(cfg: EvalConfig) -> list[int | str]:
    if cfg.model is not None:
        if not (Path(cfg.model) / "config.json").is_file():
            raise ConfigError(f"model: {cfg.model} is not a Hugging Face model directory (no config.json)")
        return ["hf"]
    from distill_jax.train.checkpoint import Checkpointer, ckpt_dir

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


def load_student(cfg: EvalConfig, step: int | str) -> Student:
    from distill_jax.model.tokenizer import Tokenizer

    if cfg.model is not None:
        from distill_jax.model.hf import load_hf

        config, params = load_hf(cfg.model)
        return Student(step, params, config, Tokenizer.load(cfg.model))
    from distill_jax.train.checkpoint import load_params

    config, params, tokenizer_dir = load_params(cfg.run_dir, step)
    return Student(step, params, config, Tokenizer.load(tokenizer_dir))


def eval_root(cfg: EvalConfig) -> Path:
    if cfg.run_dir is not None:
        return Path(cfg.run_dir) / "eval"
    return Path(cfg.out_dir) if cfg.out_dir else Path(cfg.model) / "eval"


def result_dir(cfg: EvalConfig, step: int | str, bench: str, style: str) -> Path:
    tag = cfg.decoding.tag()
    return eval_root(cfg) / str(step) / bench / (style if tag == DecodingConfig().tag() else f"{style}@{tag}")


def model_identity(cfg: EvalConfig, step: int | str) -> dict:
    """Cheap identity of the weights a step names, read without loading them (None parts when unreadable)."""
    if cfg.model is not None:
        model = Path(cfg.model)
        files = sorted(p for p in model.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
        return {"hf_files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}
    from distill_jax.train.checkpoint import ckpt_dir

    try:  # orbax writes the commit time into every finished step
        meta = json.loads((ckpt_dir(cfg.run_dir) / str(step) / "_CHECKPOINT_METADATA").read_text(encoding="utf-8"))
        return {"committed_ns": meta.get("commit_timestamp_nsecs")}
    except (OSError, ValueError):
        return {"committed_ns": None}


def fingerprint(cfg: EvalConfig, bench: Benchmark, style: str, model: dict) -> dict:
    return {
        "benchmark": bench.name, "sha256": bench.sha256, "count": len(bench.problems), "style": style,
        "decoding": dataclasses.asdict(cfg.decoding), "model": model,
    }


def is_scored(directory: Path, fp: dict) -> bool:
    path = directory / "metrics.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("fingerprint") == fp
    except ValueError:
        return False


def decode_outputs(student: Student, inputs: list[str], dec: DecodingConfig, mesh: Any) -> list[list[str]]:
    """Every input's outputs as a list (one per sample)."""
    import jax

    from distill_jax.model.decode import generate_texts

    if dec.calculator:
        from distill_jax.evaluate.calculator import generate_with_calculator

        texts = generate_with_calculator(student.params, student.config, student.tokenizer, inputs,
                                         dec.max_new_tokens, dec.batch_size, mesh=mesh)
        return [[t] for t in texts]
    kwargs: dict[str, Any] = {"mode": dec.mode, "mesh": mesh}
    if dec.mode == "beam":
        kwargs.update(num_beams=dec.num_beams, length_penalty=dec.length_penalty)
    if dec.mode == "sample":
        kwargs.update(rng=jax.random.PRNGKey(dec.seed), temperature=dec.temperature, top_k=dec.top_k,
                      top_p=dec.top_p, num_samples=dec.samples)
    texts = generate_texts(student.params, student.config, student.tokenizer, inputs, dec.max_new_tokens,
                           dec.batch_size, **kwargs)
    return [t if isinstance(t, list) else [t] for t in texts]


def decode_mesh(batch_size: int) -> Any:
    """A 1-D `data` mesh over as many local devices as divide the batch (all of them on one host)."""
    import jax
    import numpy as np
    from jax.sharding import Mesh

    devices = jax.local_devices()
    n = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0 and len(devices) % d == 0)
    return Mesh(np.array(devices[:n]), ("data",))


def write_result(cfg: EvalConfig, step: int | str, bench: Benchmark, style: str, rows: list[dict],
                 **extra: Any) -> dict:
    """predictions.jsonl and metrics.json of one (step, benchmark, style), returning the metrics: the fields
    every result carries (the report and the pipelines read them), then `extra`. `rows` are one per problem."""
    n = len(bench.problems)
    correct = sum(bool(r["correct"]) for r in rows)
    metrics = {
        "step": step, "benchmark": bench.name, "style": style, "decoding": cfg.decoding.tag(),
        "accuracy": correct / n if n else 0.0, "n": n, "correct": correct,
        "data": {"file": str(bench.path), "sha256": bench.sha256, "count": n},
        "settings": dataclasses.asdict(cfg.decoding), **extra,
    }
    directory = result_dir(cfg, step, bench.name, style)
    directory.mkdir(parents=True, exist_ok=True)
    write_jsonl(directory / "predictions.jsonl", rows)
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def score_style(cfg: EvalConfig, student: Student, bench: Benchmark, style: str, mesh: Any, model: dict) -> dict:
    """Decode, read answers, compare; write predictions.jsonl and metrics.json; return the metrics."""
    directory = result_dir(cfg, student.step, bench.name, style)
    fp = fingerprint(cfg, bench, style, model)
    if is_scored(directory, fp):
        return json.loads((directory / "metrics.json").read_text(encoding="utf-8")) | {"skipped": True}
    inputs = [student_input(p.question, style) for p in bench.problems]
    start = time.perf_counter()
    outputs = decode_outputs(student, inputs, cfg.decoding, mesh)
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


def _stored(directory: Path) -> dict:
    return json.loads((directory / "metrics.json").read_text(encoding="utf-8")) | {"skipped": True}


def evaluate(cfg: EvalConfig, console: Any = None) -> list[dict]:
    """Run the whole evaluation; returns every metrics dict (skipped ones included, flagged).

    Raises EvalFailed at the end when a checkpoint could not be loaded (after scoring all the others)."""
    from rich.console import Console
    from rich.markup import escape  # error texts hold [brackets] that rich would read as markup

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
                student = load_student(cfg, step)
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
                    m = _stored(result_dir(cfg, step, bench.name, style))
                scored.append(m)
                note = " (already scored)" if m.get("skipped") else ""
                console.print(f"step {step} {bench.name} {style}: {100 * m['accuracy']:.1f}% "
                              f"({m['correct']}/{m['n']}){note}")
            results += scored
            if voting:
                vote_fp = {"voters": [fps[(bench.name, s)] for s in cfg.styles]}
                vote_dir = result_dir(cfg, step, bench.name, "vote")
                m = _stored(vote_dir) if is_scored(vote_dir, vote_fp) else vote_styles(cfg, step, bench, vote_fp)
                results.append(m)
                note = " (already scored)" if m.get("skipped") else ""
                console.print(f"step {step} {bench.name} vote: {100 * m['accuracy']:.1f}% "
                              f"({m['correct']}/{m['n']}){note}")
    if cfg.report and cfg.run_dir is not None:
        from distill_jax.evaluate.report import write_report

        console.print(f"report: {write_report(cfg.run_dir)}")
    if failures:
        error = EvalFailed(failures, results)
        console.print(f"[red]{escape(str(error))}[/red]")
        raise error
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", dest="run_dir", help="training run directory (checkpoints in RUN/ckpt)")
    src.add_argument("--model", help="a Hugging Face T5 directory")
    parser.add_argument("--step", default="latest", help="N, N,M, 'latest' (default) or 'all'")
    parser.add_argument("--benchmarks", help="comma-separated: gsm8k_test,svamp,asdiv,multiarith,addsub,singleeq")
    parser.add_argument("--problems", action="append", default=[], help="a JSONL problem file (repeatable)")
    parser.add_argument("--styles", help="comma-separated styles, e.g. pot,eot,cot (also the vote tie-break order)")
    parser.add_argument("--config", help="a YAML file with EvalConfig keys")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. decoding.max_new_tokens=128")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    overrides += [f"run_dir={args.run_dir}"] if args.run_dir else [f"model={args.model}"]
    overrides.append(f"steps={args.step}")
    if args.benchmarks:
        overrides.append(f"benchmarks=[{args.benchmarks}]")
    elif args.problems:
        overrides.append("benchmarks=[]")
    if args.problems:
        overrides.append("problems=[" + ",".join(args.problems) + "]")
    if args.styles:
        overrides.append(f"styles=[{args.styles}]")
    cfg = config_lib.load(EvalConfig, args.config, overrides)
    try:
        results = evaluate(cfg)
    except EvalFailed:
        return 1  # already printed, after the results of the steps that could be evaluated
    return 0 if results else 1
