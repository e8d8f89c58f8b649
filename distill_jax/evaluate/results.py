"""Where eval results live and when one is still valid.

`RUN/eval/<step>/<benchmark>/<style>[@<decoding>]/{predictions.jsonl,metrics.json}`: metrics.json carries a
fingerprint (data file hash, count, decoding settings, and the checkpoint's commit time or the HF weight files'
size and mtime), so a re-trained step or a re-exported model is scored again and an unchanged one is skipped.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill_jax.config import ConfigError
from distill_jax.data.problems import BENCHMARKS, Problem, load_problems, resolve_benchmark
from distill_jax.data.records import DataError, write_jsonl
from distill_jax.evaluate.config import DecodingConfig, EvalConfig
from distill_jax.fileio import sha256_file, write_json_atomic
from distill_jax.train.checkpoint import ckpt_dir


@dataclass
class Benchmark:
    name: str
    path: Path
    sha256: str
    problems: list[Problem]


def load_benchmarks(cfg: EvalConfig) -> list[Benchmark]:
    """Every test set the config names, each with at least one problem (after `limit`): an eval over none
    would write a 0/0 result row, which is no result."""
    unknown = [name for name in cfg.benchmarks if name not in BENCHMARKS]
    if unknown:
        raise ConfigError(f"benchmarks: unknown {unknown}; known: {sorted(BENCHMARKS)} (or pass --problems FILE)",
                          key="benchmarks")
    out = []
    try:
        specs = [(name, resolve_benchmark(name, cfg.data_dir), "benchmarks") for name in cfg.benchmarks]
    except DataError as e:
        raise ConfigError(f"benchmarks: {e}", key="benchmarks") from e
    specs += [(Path(p).stem, Path(p), "problems") for p in cfg.problems]
    if not specs:
        raise ConfigError("no test sets: give benchmarks or problems", key="benchmarks")
    for name, path, key in specs:
        if not path.is_file():
            raise ConfigError(f"benchmark {name!r}: no file at {path}", key=key)
        try:
            problems = load_problems(str(path))
        except DataError as e:
            raise ConfigError(f"benchmark {name!r}: {e}", key=key) from e
        if not problems:
            raise ConfigError(f"benchmark {name!r}: {path} holds no problems: nothing to evaluate", key=key)
        out.append(Benchmark(name, path, sha256_file(path), problems[: cfg.limit]))
    return out


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


def write_result(cfg: EvalConfig, step: int | str, bench: Benchmark, style: str, rows: list[dict],
                 **extra: Any) -> dict:
    """predictions.jsonl and metrics.json of one (step, benchmark, style), returning the metrics: the fields
    every result carries (the report and the pipelines read them), then `extra`. `rows` are one per problem."""
    n = len(bench.problems)
    if n == 0 or len(rows) != n:  # load_benchmarks refuses empty sets; this keeps a 0/0 row out of every report
        raise ValueError(f"{bench.name}: {len(rows)} result rows for {n} problems; nothing written")
    correct = sum(bool(r["correct"]) for r in rows)
    metrics = {
        "step": step, "benchmark": bench.name, "style": style, "decoding": cfg.decoding.tag(),
        "accuracy": correct / n, "n": n, "correct": correct,
        "data": {"file": str(bench.path), "sha256": bench.sha256, "count": n},
        "settings": dataclasses.asdict(cfg.decoding), **extra,
    }
    directory = result_dir(cfg, step, bench.name, style)
    directory.mkdir(parents=True, exist_ok=True)
    write_jsonl(directory / "predictions.jsonl", rows)
    write_json_atomic(directory / "metrics.json", metrics)
    return metrics


def stored(directory: Path) -> dict:
    return json.loads((directory / "metrics.json").read_text(encoding="utf-8")) | {"skipped": True}
