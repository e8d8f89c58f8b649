"""`distill-jax train --config FILE.yaml [key=value ...]` and `train(cfg) -> TrainResult` for pipelines.

Order of work: every config value, file and directory is checked, the tokenizer and the data are ready
and the mesh divides the batch BEFORE anything compiles, so a typo costs seconds, not a compile.
Then: state created sharded (or restored from RUN/ckpt into the current mesh), one jitted step per
bucket shape, and the loop: periodic eval loss on the held-out slice, checkpoints, metrics to
RUN/logs/metrics.jsonl (+ TensorBoard), a NaN/inf loss stops with the last good checkpoint kept, and
SIGTERM (spot/preemptible machines) saves a checkpoint and returns cleanly.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from distill_jax.config import ConfigError, save_resolved
from distill_jax.data.records import DataError
from distill_jax.model.hf import load_hf, read_config
from distill_jax.model.t5 import T5Config, init_params
from distill_jax.model.tokenizer import META_FILE, Tokenizer, train_tokenizer
from distill_jax.model.vocab import grow_for_tokenizer, grown_config
from distill_jax.progress import progress_bar
from distill_jax.train import batches as B
from distill_jax.train import sharding as S
from distill_jax.train.checkpoint import Checkpointer, model_meta
from distill_jax.train.config import TrainConfig, check_devices
from distill_jax.train.optim import make_optimizer
from distill_jax.train.state import create_state, init_state, state_layout
from distill_jax.train.step import jit_eval_step, jit_train_step
from distill_jax.train.tracker import Tracker

log = logging.getLogger(__name__)

ENV_COORDINATOR = "DISTILL_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "DISTILL_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "DISTILL_JAX_PROCESS_ID"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


@dataclasses.dataclass
class TrainResult:
    run_dir: str
    step: int  # optimizer steps done
    stopped: str  # "done" | "preempted"
    last_checkpoint: int | None
    eval_loss: float | None
    final_metrics: dict[str, float]
    tokens_per_second: float  # non-pad target tokens / wall time of the loop, compile included
    data_stats: dict[str, Any]


def maybe_initialize_distributed(flag: bool | None) -> None:
    """jax.distributed.initialize from DISTILL_JAX_* env vars, or JAX's auto-detection when flag is True."""
    if jax.distributed.is_initialized():
        return
    if os.environ.get(ENV_COORDINATOR):
        try:
            n, pid = int(os.environ[ENV_NUM_PROCESSES]), int(os.environ[ENV_PROCESS_ID])
        except (KeyError, ValueError) as e:
            raise ConfigError(f"{ENV_COORDINATOR} is set, so {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID} must be "
                              f"integers: {e}") from e
        jax.distributed.initialize(coordinator_address=os.environ[ENV_COORDINATOR], num_processes=n,
                                   process_id=pid)
    elif flag:
        jax.distributed.initialize()  # TPU pods, SLURM, Open MPI: JAX finds the cluster itself


# ----------------------------------------------------------------------------------------------- setup
def _check_paths(cfg: TrainConfig) -> None:
    B.resolve_files(cfg.data.rationales)
    if cfg.model.init != "scratch":
        d = Path(cfg.model.init)
        if not (d / "config.json").is_file():
            raise ConfigError(f"model.init: {d} is neither 'scratch' nor a Hugging Face model dir (no config.json)")
    if cfg.model.tokenizer and not Path(cfg.model.tokenizer).is_dir():
        raise ConfigError(f"model.tokenizer: directory not found: {cfg.model.tokenizer}")


def _tokenizer(cfg: TrainConfig, records: list[dict]):
    """The given tokenizer when it writes every text verbatim, else RUN/tokenizer: that one with the symbols
    the texts need added (model/tokenizer.py), or a vocab trained on the texts when none is given."""
    run = Path(cfg.run_dir)
    source = cfg.model.tokenizer or (cfg.model.init if cfg.model.init != "scratch" else None)
    texts = [B.input_text(r) for r in records] + [r["rationale"] for r in records]
    target = run / "tokenizer"
    try:
        if source:
            tok = Tokenizer.load(source)
            grown = tok.spelling(texts)
            if grown is tok:
                return tok, Path(source)
            if jax.process_index() == 0 and not (target / META_FILE).is_file():
                grown.save(target)
        elif jax.process_index() == 0 and not (target / META_FILE).is_file():
            train_tokenizer(texts, target, cfg.model.tokenizer_vocab_size)
        _barrier("tokenizer")
        tok = Tokenizer.load(target)
        tok.check_targets([r["rationale"] for r in records], [r["_where"] for r in records])
        return tok, target
    except ValueError as e:  # TokenizerError, sentencepiece's vocab-size complaints
        raise ConfigError(f"model.tokenizer: {e}") from e


def quiet_checkpoint_logs() -> None:
    """orbax logs every save's thread hand-offs at INFO through absl (dozens of lines per checkpoint), and
    warns that a restore-only manager is read-only each time a checkpoint is loaded for evaluation."""
    logging.getLogger("absl").setLevel(logging.ERROR)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _model_config(cfg: TrainConfig, vocab_size: int):
    m = cfg.model
    if m.init == "scratch":
        unknown = set(m.overrides) - {f.name for f in dataclasses.fields(T5Config)}
        if unknown:
            raise ConfigError(f"model.overrides: unknown T5Config field(s) {sorted(unknown)}")
        config = T5Config.preset(m.preset, **{"vocab_size": vocab_size, **m.overrides})
    else:
        config = grown_config(read_config(m.init), vocab_size)
    config = dataclasses.replace(config, dtype=m.dtype, **(
        {"dropout_rate": m.dropout_rate} if m.dropout_rate is not None else {}))
    if config.vocab_size < vocab_size:
        raise ConfigError(f"model: vocab_size {config.vocab_size} < the tokenizer's {vocab_size} tokens")
    return config


# ----------------------------------------------------------------------------------------------- loop
class _Preemption:
    """SIGTERM sets a flag; the loop checkpoints at the next step boundary and returns."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_Preemption":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM: saving a checkpoint and stopping")
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _progress(enabled: bool, total: int, start: int):
    progress = progress_bar("train", "loss {task.fields[loss]}  {task.fields[tps]} tok/s", enabled=enabled)
    task = progress.add_task("train", total=total, completed=start, loss="-", tps="-")
    return progress, task


def _evaluate(eval_fn, params, eval_set: list[dict]) -> float | None:
    if not eval_set:
        return None
    sums = [jax.device_get(eval_fn(params, b)) for b in eval_set]
    return float(sum(s["loss_sum"] for s in sums) / max(sum(s["weight_sum"] for s in sums), 1e-9))


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) the run in cfg.run_dir. SIGTERM from here on ends in a checkpoint, not a lost run."""
    maybe_initialize_distributed(cfg.distributed)
    with _Preemption() as preemption:
        return _train(cfg, preemption)


def _train(cfg: TrainConfig, preemption: _Preemption) -> TrainResult:
    _check_paths(cfg)
    check_devices(cfg, jax.device_count())  # before the run dir and the tokenizer exist
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    main = jax.process_index() == 0
    if main:
        save_resolved(cfg, run / "config.yaml")

    try:
        records = B.read_records(cfg.data)
        tokenizer, tok_dir = _tokenizer(cfg, records)
        train_recs, eval_recs = B.split_records(records, cfg.data)
        train_enc = B.encode(train_recs, tokenizer)
        buckets = (B.suggest_buckets(train_enc, cfg.data.auto_buckets) if cfg.data.auto_buckets
                   else list(cfg.data.buckets))
        train_ex, stats = B.tokenize(train_recs, tokenizer, cfg.data, buckets, train_enc)
        eval_ex, _ = B.tokenize(eval_recs, tokenizer, cfg.data, buckets)
    except DataError as e:  # a malformed rationale file: name file:line, no traceback
        raise ConfigError(f"data.rationales: {e}") from e
    config = _model_config(cfg, tokenizer.vocab_size)
    stats = {**stats, "train": B.token_stats(train_ex), "eval_examples": len(eval_ex)}
    stats["buckets"] = buckets
    log.info("data: %d train / %d eval examples; buckets %s hold %s", len(train_ex), len(eval_ex), buckets,
             stats["per_bucket"])
    if stats["truncated"] or stats["dropped"]:
        log.warning("%d records truncated, %d dropped: longer than the largest bucket %s",
                    stats["truncated"], stats["dropped"], buckets[-1])

    mesh = S.make_mesh(cfg.mesh)
    dp = S.data_parallel_size(mesh)
    if cfg.batch_size % (dp * cfg.optim.grad_accum):
        raise ConfigError(f"batch_size {cfg.batch_size} must be a multiple of data-parallel size {dp} x "
                          f"optim.grad_accum {cfg.optim.grad_accum}")
    batch_sh = S.batch_sharding(mesh)
    data = B.BatchIterator(train_ex, buckets, cfg.batch_size, cfg.seed, batch_sh, tokenizer.pad_id)
    total = cfg.steps if cfg.steps is not None else math.ceil(cfg.epochs * data.steps_per_epoch)
    tx, schedule = make_optimizer(cfg.optim, total)

    # state: restored into this mesh, or created in place on its shards
    init_fn = lambda key: init_state(init_params(config, key), tx, cfg.seed)  # noqa: E731
    abstract, state_sh = state_layout(mesh, init_fn, jax.random.PRNGKey(cfg.seed))
    ckpt = Checkpointer(run, keep=cfg.keep, keep_best=cfg.keep_best, async_save=cfg.async_checkpoint)
    meta = model_meta(config, tok_dir, run)
    if cfg.resume and ckpt.latest_step() is not None:
        target = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                        abstract, state_sh)
        state, position, _ = ckpt.restore(target)
        data = B.BatchIterator(train_ex, buckets, cfg.batch_size, cfg.seed, batch_sh, tokenizer.pad_id,
                               epoch=position["epoch"], index=position["index"])
        log.info("resumed from %s at step %d", ckpt.directory, int(state.step))
    elif cfg.model.init == "scratch":
        state = create_state(init_fn, state_sh, jax.random.PRNGKey(cfg.seed))
    else:
        _, params = load_hf(cfg.model.init)
        params = grow_for_tokenizer(params, config, cfg.model.init, tokenizer)
        params = jax.device_put(params, state_sh.params)
        state = create_state(lambda p: init_state(p, tx, cfg.seed), state_sh, params)

    log.info("state ready at step %d on mesh %s", int(jax.device_get(state.step)), dict(mesh.shape))
    step_fn = jit_train_step(config, tx, schedule, cfg.optim.grad_accum, state_sh, batch_sh)
    eval_fn = jit_eval_step(config, state_sh.params, batch_sh)
    eval_set = B.eval_batches(eval_ex, buckets, cfg.batch_size, batch_sh, tokenizer.pad_id)
    tracker = Tracker(run, enabled=main)
    start = int(jax.device_get(state.step))
    last_ckpt = ckpt.latest_step()
    eval_loss, metrics, stopped = None, {}, "done"
    window = {"tokens": 0.0, "time": time.perf_counter(), "loss": []}
    all_tokens, t_start = 0.0, time.perf_counter()
    progress, task = _progress(cfg.progress and main, total, start)

    def save(step: int, metrics: dict | None = None) -> None:
        nonlocal last_ckpt
        ckpt.save(state, data.position, meta, metrics if cfg.keep_best else None)
        last_ckpt = step

    try:
        with progress:
            step = start
            while step < total:
                state, m = step_fn(state, next(data))
                step += 1
                m = {k: float(v) for k, v in jax.device_get(m).items()}
                if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
                    tracker.log(step, {**m, "diverged": 1.0})
                    raise TrainingDiverged(
                        f"loss {m['loss']} / grad norm {m['grad_norm']} at step {step}: training stopped. "
                        f"Last good checkpoint: {ckpt.directory / str(last_ckpt) if last_ckpt else 'none'} "
                        f"(lower optim.learning_rate, raise warmup_steps or set optim.clip_norm)")
                metrics = m
                window["tokens"] += m["tokens"]
                window["loss"].append(m["loss"])
                all_tokens += m["tokens"]
                if step % cfg.log_every == 0 or step == total:
                    now = time.perf_counter()
                    tps = window["tokens"] / max(now - window["time"], 1e-9)
                    row = {**m, "loss": float(np.mean(window["loss"])), "tokens_per_second": tps,
                           "epoch": data.position["epoch"]}
                    tracker.log(step, row)
                    progress.update(task, completed=step, loss=f"{row['loss']:.4f}", tps=f"{tps:,.0f}")
                    window = {"tokens": 0.0, "time": now, "loss": []}
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total and eval_set:
                    eval_loss = _evaluate(eval_fn, state.params, eval_set)
                    tracker.log(step, {"eval_loss": eval_loss})
                if preemption.requested:
                    save(step)
                    stopped = "preempted"
                    break
                if step % cfg.checkpoint_every == 0 and step < total:
                    fresh = cfg.eval_every and step % cfg.eval_every == 0
                    if cfg.keep_best and eval_set and not fresh:  # best-N ranks checkpoints by eval loss
                        eval_loss = _evaluate(eval_fn, state.params, eval_set)
                        tracker.log(step, {"eval_loss": eval_loss})
                    save(step, {"eval_loss": eval_loss} if eval_loss is not None else None)
            else:
                if eval_set:
                    eval_loss = _evaluate(eval_fn, state.params, eval_set)
                    tracker.log(step, {"eval_loss": eval_loss})
                if last_ckpt != step:
                    save(step, {"eval_loss": eval_loss} if eval_loss is not None else None)
    finally:
        ckpt.close()
        tracker.close()
    elapsed = time.perf_counter() - t_start
    return TrainResult(run_dir=str(run), step=int(jax.device_get(state.step)), stopped=stopped,
                       last_checkpoint=last_ckpt, eval_loss=eval_loss, final_metrics=metrics,
                       tokens_per_second=all_tokens / max(elapsed, 1e-9), data_stats=stats)


__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "train", "maybe_initialize_distributed"]
