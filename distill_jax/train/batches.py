"""Rationale records -> tokenised, fixed-shape, deterministic global batches.

Why length buckets rather than packing: a seq2seq example has two lengths (input, target); a few fixed
(input_len, target_len) shapes keep compiles to one per bucket, waste little padding when the buckets
follow the data, and keep each example in its own row so per-example loss weights (DSS tasks, ETD style
mixture) stay trivial. Packing would need segment ids through T5's relative-position attention.

Order: each epoch, the examples of every bucket are shuffled by (seed, epoch), cut into global batches,
and the batch list shuffled again. The position (epoch, index of the next batch) is all a resume needs
to see exactly the batches it would have seen. The last partial batch of a bucket is filled with
zero-weight rows, so no example is dropped and shapes stay fixed.

Style mixture (ETD) and DSS task weights act on the loss (a weight per example, see step.py), not on
sampling: every record is seen once per epoch and the order stays a pure function of (seed, epoch).

Multi-host: every process computes the same plan (it is cheap) but builds only the rows its own devices
hold, and the global array is assembled with `jax.make_array_from_process_local_data`.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol, Sequence

import jax
import numpy as np

from distill_jax.config import ConfigError
from distill_jax.data.records import DataError, check_rationale_record, iter_jsonl
from distill_jax.reasoning.styles import student_input


LABEL_PAD = -100  # ignored by the loss, as in HF


class TokenizerLike(Protocol):
    pad_id: int

    def encode_batch(self, texts: Sequence[str], add_eos: bool = True) -> list[list[int]]: ...


@dataclasses.dataclass(frozen=True)
class DataConfig:
    rationales: tuple[str, ...] = ()  # JSONL files, directories (all *.jsonl below) or glob patterns
    styles: tuple[str, ...] = ()  # keep only these styles; empty = every style found
    only_correct: bool = True  # skip records whose `correct` is false
    style_weights: dict[str, float] = dataclasses.field(default_factory=dict)  # loss weight per style (ETD)
    task_weights: dict[str, float] = dataclasses.field(default_factory=dict)  # per meta.task (DSS label/rationale)
    buckets: tuple[tuple[int, int], ...] = ((64, 64), (128, 128), (256, 256))  # (input_len, target_len)
    auto_buckets: int = 0  # > 0: that many buckets fitted to the training data's lengths instead of `buckets`
    overflow: Literal["truncate", "drop"] = "truncate"  # records longer than the largest bucket
    eval_fraction: float = 0.05  # problems held out for eval loss (split by problem id: all styles together)
    eval_max_examples: int = 256

    def __post_init__(self) -> None:
        if not self.buckets:
            raise ValueError("buckets must list at least one (input_len, target_len)")
        for b in self.buckets:
            if len(b) != 2 or min(b) < 2:
                raise ValueError(f"bucket {b} must be (input_len, target_len) with both >= 2")
        if self.auto_buckets < 0:
            raise ValueError(f"auto_buckets must be >= 0, got {self.auto_buckets}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        for name, table in (("style_weights", self.style_weights), ("task_weights", self.task_weights)):
            bad = {k: v for k, v in table.items() if v < 0}
            if bad:
                raise ValueError(f"{name} must be >= 0, got {bad}")


@dataclasses.dataclass
class Example:
    input_ids: list[int]
    target_ids: list[int]
    weight: float
    bucket: int
    style: str


def input_text(record: dict) -> str:
    """The student's input for a record: `meta.input` verbatim when a method built it (PaD refine,
    Divide-or-Conquer decomposer/solver), else `styles.student_input` with the DSS task from `meta.task`."""
    meta = record.get("meta") or {}
    if isinstance(meta.get("input"), str) and meta["input"].strip():
        return meta["input"]
    task = meta.get("task")
    try:
        return student_input(record["question"], record["style"], task=task)
    except (KeyError, ValueError) as e:
        raise DataError(f"{record.get('_where', 'rationale record')}: {e.args[0] if e.args else e}") from e


def resolve_files(specs: Sequence[str]) -> list[Path]:
    """Files named by paths, directories (recursive *.jsonl) or globs; a spec matching nothing is an error."""
    if not specs:
        raise ConfigError("data.rationales: no rationale files given")
    files: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_file():
            found = [p]
        elif p.is_dir():
            found = sorted(p.rglob("*.jsonl"))
        else:
            found = sorted(Path(f) for f in glob.glob(spec, recursive=True) if Path(f).is_file())
        if not found:
            raise ConfigError(f"data.rationales: {spec!r} matches no JSONL file")
        files.extend(found)
    return files


def read_records(cfg: DataConfig) -> list[dict]:
    """All usable records, in file order, checked; each gets `_where` (file:line) for error messages."""
    records = []
    for path in resolve_files(cfg.rationales):
        for lineno, row in iter_jsonl(path):
            where = f"{path}:{lineno}"
            check_rationale_record(row, where)
            if cfg.styles and row["style"] not in cfg.styles:
                continue
            if cfg.only_correct and row.get("correct") is False:
                continue
            records.append({**row, "_where": where})
    if not records:
        raise ConfigError(f"data.rationales: no usable records in {list(cfg.rationales)} (styles={list(cfg.styles)})")
    return records


def is_eval(problem_id: str, fraction: float) -> bool:
    """Stable split by problem id, so every style of a problem lands on the same side."""
    h = int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def encode(records: Sequence[dict], tokenizer: TokenizerLike) -> list[tuple[list[int], list[int]]]:
    """(input ids, target ids), both ending in EOS, per record."""
    inputs = tokenizer.encode_batch([input_text(rec) for rec in records], add_eos=True)
    targets = tokenizer.encode_batch([rec["rationale"] for rec in records], add_eos=True)
    return list(zip(inputs, targets))


def suggest_buckets(encoded: Sequence[tuple[Sequence[int], Sequence[int]]], n: int,
                    multiple: int = 8) -> list[tuple[int, int]]:
    """n shapes fitted to the data: examples sorted by input + target length, cut into n equal groups, each
    group's bucket its longest input and target (rounded up to `multiple`). On GSM8K CoT 4 buckets pad
    to 1.5x the real tokens where random batches padded to their longest row pad to 2.25x."""
    if not encoded:
        raise ConfigError("data: no examples to fit buckets to")
    up = lambda v: int(-(-v // multiple) * multiple)  # noqa: E731
    li = np.array([len(i) for i, _ in encoded])
    lt = np.array([len(t) for _, t in encoded])
    groups = np.array_split(np.argsort(li + lt, kind="stable"), min(n, len(encoded)))
    return sorted({(up(li[g].max()), up(lt[g].max())) for g in groups}, key=lambda b: (b[0] + b[1], b))


def example_weight(record: dict, cfg: DataConfig) -> float:
    """The record's own `meta.weight` (DSS's label/rationale balance) x its style's x its DSS task's weight."""
    meta = record.get("meta") or {}
    own = meta.get("weight", 1.0)
    if isinstance(own, bool) or not isinstance(own, (int, float)) or not own >= 0:
        raise DataError(f"{record.get('_where', 'rationale record')}: meta.weight must be a number >= 0, got {own!r}")
    task = meta.get("task")
    return float(own) * cfg.style_weights.get(record["style"], 1.0) * (cfg.task_weights.get(task, 1.0) if task else 1.0)


def tokenize(records: Sequence[dict], tokenizer: TokenizerLike, cfg: DataConfig,
             buckets: Sequence[tuple[int, int]] | None = None,
             encoded: Sequence[tuple[list[int], list[int]]] | None = None) -> tuple[list[Example], dict]:
    """Encode (unless `encoded` is given) and bucket; records beyond the largest bucket are truncated or
    dropped and counted. Each example goes to the first bucket (in order) that holds it."""
    buckets = list(buckets or cfg.buckets)
    encoded = encode(records, tokenizer) if encoded is None else encoded
    stats = {"records": len(records), "truncated": 0, "dropped": 0, "per_bucket": [0] * len(buckets)}
    max_in = max(b[0] for b in buckets)
    max_tgt = max(b[1] for b in buckets)
    out = []
    for rec, (inp, tgt) in zip(records, encoded):
        weight = example_weight(rec, cfg)
        if len(inp) > max_in or len(tgt) > max_tgt:
            if cfg.overflow == "drop":
                stats["dropped"] += 1
                continue
            stats["truncated"] += 1
            inp, tgt = inp[:max_in], tgt[:max_tgt]
        bucket = next(i for i, (bi, bt) in enumerate(buckets) if len(inp) <= bi and len(tgt) <= bt)
        stats["per_bucket"][bucket] += 1
        out.append(Example(list(inp), list(tgt), weight, bucket, rec["style"]))
    return out, stats


def epoch_plan(examples: Sequence[Example], n_buckets: int, batch_size: int, seed: int, epoch: int,
               shuffle: bool = True) -> list[tuple[int, np.ndarray]]:
    """[(bucket, example indices (-1 = zero-weight filler))] for one epoch; a pure function of its inputs."""
    rng = np.random.default_rng([seed, epoch])
    by_bucket = [[] for _ in range(n_buckets)]
    for i, ex in enumerate(examples):
        by_bucket[ex.bucket].append(i)
    plan = []
    for b, idx in enumerate(by_bucket):
        idx = np.asarray(idx, dtype=np.int64)
        if shuffle:
            idx = rng.permutation(idx)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            plan.append((b, np.pad(chunk, (0, batch_size - len(chunk)), constant_values=-1)))
    if shuffle:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    return plan


def local_rows(sharding: jax.sharding.Sharding, batch_size: int) -> tuple[int, int]:
    """[lo, hi) of the global batch rows that this process's devices hold (contiguous by construction)."""
    idx = sharding.addressable_devices_indices_map((batch_size,))
    starts = [s[0].start or 0 for s in idx.values()]
    stops = [s[0].stop if s[0].stop is not None else batch_size for s in idx.values()]
    return min(starts), max(stops)


def build_rows(examples: Sequence[Example], rows: np.ndarray, shape: tuple[int, int], pad_id: int) -> dict:
    """Host arrays for the given example indices in one bucket shape."""
    n, (s, t) = len(rows), shape
    batch = {
        "input_ids": np.full((n, s), pad_id, np.int32),
        "attention_mask": np.zeros((n, s), np.int32),
        "labels": np.full((n, t), LABEL_PAD, np.int32),
        "weights": np.zeros((n,), np.float32),
    }
    for r, i in enumerate(rows):
        if i < 0:
            continue
        ex = examples[i]
        batch["input_ids"][r, :len(ex.input_ids)] = ex.input_ids
        batch["attention_mask"][r, :len(ex.input_ids)] = 1
        batch["labels"][r, :len(ex.target_ids)] = ex.target_ids
        batch["weights"][r] = ex.weight
    return batch


def to_global(local: dict, sharding: jax.sharding.Sharding, batch_size: int) -> dict:
    return {k: jax.make_array_from_process_local_data(sharding, v, (batch_size,) + v.shape[1:])
            for k, v in local.items()}


class BatchIterator:
    """Endless global batches over epochs; `position` = (epoch, index of the next batch) is checkpointed."""

    def __init__(self, examples: Sequence[Example], buckets: Sequence[tuple[int, int]], batch_size: int,
                 seed: int, sharding: jax.sharding.Sharding, pad_id: int, epoch: int = 0, index: int = 0):
        if not examples:
            raise ConfigError("data: no training examples left after filtering / the eval split")
        self.examples, self.buckets, self.batch_size = examples, list(buckets), batch_size
        self.seed, self.sharding, self.pad_id = seed, sharding, pad_id
        self.lo, self.hi = local_rows(sharding, batch_size)
        self.epoch, self.index = epoch, index
        self._plan = epoch_plan(examples, len(self.buckets), batch_size, seed, epoch)

    @property
    def steps_per_epoch(self) -> int:
        return len(self._plan)

    @property
    def position(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        if self.index >= len(self._plan):
            self.epoch, self.index = self.epoch + 1, 0
            self._plan = epoch_plan(self.examples, len(self.buckets), self.batch_size, self.seed, self.epoch)
        bucket, rows = self._plan[self.index]
        self.index += 1
        local = build_rows(self.examples, rows[self.lo:self.hi], self.buckets[bucket], self.pad_id)
        return to_global(local, self.sharding, self.batch_size)


def eval_batches(examples: Sequence[Example], buckets: Sequence[tuple[int, int]], batch_size: int,
                 sharding: jax.sharding.Sharding, pad_id: int) -> list[dict]:
    """The held-out slice in a fixed order (no shuffling), built once."""
    lo, hi = local_rows(sharding, batch_size)
    plan = epoch_plan(examples, len(buckets), batch_size, seed=0, epoch=0, shuffle=False)
    return [to_global(build_rows(examples, rows[lo:hi], buckets[b], pad_id), sharding, batch_size)
            for b, rows in plan]


def split_records(records: Sequence[dict], cfg: DataConfig) -> tuple[list[dict], list[dict]]:
    """(train, eval) by problem id; eval capped at eval_max_examples."""
    train, held = [], []
    for rec in records:
        (held if is_eval(str(rec["problem_id"]), cfg.eval_fraction) else train).append(rec)
    return train, held[:cfg.eval_max_examples]


def token_stats(examples: Sequence[Example]) -> dict[str, Any]:
    tgt = np.asarray([len(e.target_ids) for e in examples]) if examples else np.zeros(1)
    return {"examples": len(examples), "target_tokens": int(tgt.sum()), "target_len_mean": float(tgt.mean()),
            "target_len_max": int(tgt.max())}


__all__ = [
    "DataConfig", "Example", "LABEL_PAD", "input_text", "resolve_files", "read_records", "split_records",
    "encode", "suggest_buckets", "example_weight", "tokenize", "epoch_plan", "local_rows", "build_rows", "to_global", "BatchIterator", "eval_batches",
    "token_stats",
]
