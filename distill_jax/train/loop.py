"""`distill-jax train --config FILE.yaml [key=value ...]` and `train(cfg) -> TrainResult` for pipelines.

Order of work: the accelerator check and jax.distributed come first (train/runtime.py); then every config
value, file and directory is checked, the tokenizer and the data are ready and the mesh divides the batch
BEFORE anything compiles, so a typo costs seconds, not a compile. Then: state created sharded (or restored
from RUN/ckpt into the current mesh), one jitted step per bucket shape, and the loop: periodic eval loss on
the held-out slice, checkpoints, metrics to RUN/logs/metrics.jsonl (+ TensorBoard).

The host never waits for the device inside the loop: batches are built ahead on a thread (train/prefetch.py)
and each step's metrics stay on the device until a flush (every log_every steps, before a checkpoint, at the
end), where one transfer brings the window's metrics and the NaN/inf check runs over each of its steps. A
checkpoint is only written after that check, so "last good checkpoint" in a divergence message is true.
SIGTERM, Ctrl-C and a pod-wide preemption save the current step and raise TrainingStopped (train/preemption.py).
"""
from __future__ import annotations

import dataclasses
import logging
import math
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
from distill_jax.train.checkpoint import Checkpointer, check_layout, model_meta
from distill_jax.train.config import TrainConfig, check_devices
from distill_jax.train.optim import make_optimizer
from distill_jax.train.prefetch import Prefetcher
from distill_jax.train.preemption import StopSignals, TrainingStopped
from distill_jax.train.runtime import prepare_runtime, wait_for_processes
from distill_jax.train.state import create_state, init_state, state_layout
from distill_jax.train.step import jit_eval_step, jit_train_step
from distill_jax.train.tracker import Tracker

log = logging.getLogger(__name__)

TOKENIZER_TIMEOUT_S = 3600  # process 0 trains the vocabulary while the others wait
PREFETCH_DEPTH = 2


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


@dataclasses.dataclass
class TrainResult:
    run_dir: str
    step: int  # optimizer steps done
    last_checkpoint: int | None
    eval_loss: float | None
    final_metrics: dict[str, float]
    tokens_per_second: float  # non-pad target tokens / wall time of the loop, compile included
    startup_seconds: float  # from train() to the first step's result: setup, restore and compile (or cache load)
    data_stats: dict[str, Any]


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
        wait_for_processes(f"tokenizer {run.absolute()}", TOKENIZER_TIMEOUT_S)
        tok = Tokenizer.load(target)
        tok.check_targets([r["rationale"] for r in records], [r["_where"] for r in records])
        return tok, target
    except ValueError as e:  # TokenizerError, sentencepiece's vocab-size complaints
        raise ConfigError(f"model.tokenizer: {e}") from e


def quiet_checkpoint_logs() -> None:
    """orbax logs every save's thread hand-offs at INFO through absl (dozens of lines per checkpoint), and
    warns that a restore-only manager is read-only each time a checkpoint is loaded for evaluation."""
    logging.getLogger("absl").setLevel(logging.ERROR)


def _model_config(cfg: TrainConfig, vocab_size: int):
    m = cfg.model
    if m.init == "scratch":
        unknown = set(m.overrides) - {f.name for f in dataclasses.fields(T5Config)}
        if unknown:
            raise ConfigError(f"model.overrides: unknown T5Config field(s) {sorted(unknown)}")
        config = T5Config.preset(m.preset, **{"vocab_size": vocab_size, **m.overrides})
    else:
        config = grown_config(read_config(m.init), vocab_size)
    scan = m.scan_layers if m.scan_layers is not None else (
        config.scan_layers or max(config.num_layers, config.num_decoder_layers) >= 12)
    config = dataclasses.replace(config, dtype=m.dtype, scan_layers=scan, remat=m.remat, **(
        {"dropout_rate": m.dropout_rate} if m.dropout_rate is not None else {}))
    if config.vocab_size < vocab_size:
        raise ConfigError(f"model: vocab_size {config.vocab_size} < the tokenizer's {vocab_size} tokens")
    return config


# ----------------------------------------------------------------------------------------------- loop
class _MetricsWindow:
    """Step metrics kept as device arrays until `check` fetches them in one transfer."""

    def __init__(self) -> None:
        self.pending: list[tuple[int, dict]] = []  # (step, device metrics) not fetched yet
        self.fetched: list[tuple[int, dict]] = []  # fetched and finite, not yet in a logged row
        self.started = time.perf_counter()
        self.last: dict[str, float] = {}
        self.tokens = 0.0  # every fetched step's, for the run's tokens/s

    def add(self, step: int, metrics: dict) -> None:
        self.pending.append((step, metrics))

    def check(self, tracker: Tracker, last_good: str) -> None:
        """Fetch the pending steps; the first non-finite loss or grad norm stops training."""
        if not self.pending:
            return
        host = jax.device_get([m for _, m in self.pending])
        for (step, _), m in zip(self.pending, host):
            m = {k: float(v) for k, v in m.items()}
            if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
                tracker.log(step, {**m, "diverged": 1.0})
                raise TrainingDiverged(
                    f"loss {m['loss']} / grad norm {m['grad_norm']} at step {step}: training stopped. Last good "
                    f"checkpoint: {last_good} (lower optim.learning_rate, raise warmup_steps or set optim.clip_norm)")
            self.fetched.append((step, m))
            self.tokens += m["tokens"]
            self.last = m
        self.pending = []

    def row(self) -> dict[str, float]:
        """The logged row of the fetched steps: mean loss, the last step's other metrics, tokens/s; resets."""
        now = time.perf_counter()
        tokens = sum(m["tokens"] for _, m in self.fetched)
        row = {**self.last, "loss": float(np.mean([m["loss"] for _, m in self.fetched])),
               "tokens_per_second": tokens / max(now - self.started, 1e-9)}
        self.fetched, self.started = [], now
        return row


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
    """Train (or resume) the run in cfg.run_dir. From here on SIGTERM / Ctrl-C end in a checkpoint and
    TrainingStopped, not a lost run; `require_accelerator` fails before any work."""
    started = time.perf_counter()
    prepare_runtime(cfg)
    with StopSignals() as signals:
        return _train(cfg, signals, started)


def _train(cfg: TrainConfig, signals: StopSignals, started: float) -> TrainResult:
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
        check_layout(ckpt, config)
        target = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                        abstract, state_sh)
        state, position, _ = ckpt.restore(target)
        data = B.BatchIterator(train_ex, buckets, cfg.batch_size, cfg.seed, batch_sh, tokenizer.pad_id,
                               epoch=position["epoch"], index=position["index"])
        log.info("resumed from %s at step %d", ckpt.directory, int(state.step))
    elif cfg.model.init == "scratch":
        state = create_state(init_fn, state_sh, jax.random.PRNGKey(cfg.seed))
    else:
        _, params = load_hf(cfg.model.init, scan_layers=config.scan_layers)
        params = grow_for_tokenizer(params, config, cfg.model.init, tokenizer)
        params = jax.device_put(params, state_sh.params)
        state = create_state(lambda p: init_state(p, tx, cfg.seed), state_sh, params)

    start = int(jax.device_get(state.step))
    log.info("state ready at step %d on mesh %s", start, dict(mesh.shape))
    step_fn = jit_train_step(config, tx, schedule, cfg.optim.grad_accum, state_sh, batch_sh)
    eval_fn = jit_eval_step(config, state_sh.params, batch_sh)
    eval_set = B.eval_batches(eval_ex, buckets, cfg.batch_size, batch_sh, tokenizer.pad_id)
    tracker = Tracker(run, enabled=main, start_step=start)
    last_ckpt = ckpt.latest_step()
    eval_loss, startup = None, None
    window = _MetricsWindow()
    progress, task = _progress(cfg.progress and main, total, start)
    position = data.position  # where a checkpoint says to continue: the batches consumed, not those built ahead
    batches = Prefetcher(data, PREFETCH_DEPTH)

    def last_good() -> str:
        return str(ckpt.directory / str(last_ckpt)) if last_ckpt else "none"

    def save(step: int, metrics: dict | None = None) -> None:
        nonlocal last_ckpt
        window.check(tracker, last_good())  # never a checkpoint of diverged weights
        ckpt.save(state, position, meta, metrics if cfg.keep_best else None)
        last_ckpt = step

    def evaluate(step: int) -> float | None:
        loss = _evaluate(eval_fn, state.params, eval_set)
        tracker.log(step, {"eval_loss": loss})
        return loss

    t_loop = time.perf_counter()
    try:
        with progress:
            step = start
            while step < total:
                batch, position = next(batches)
                state, m = step_fn(state, batch)
                step += 1
                window.add(step, m)
                if startup is None:  # the one wait outside a flush: when the first step (its compile) is done
                    jax.block_until_ready(m)
                    startup = time.perf_counter() - started
                    log.info("first step done %.1f s after start (setup, restore, compile); compilation cache: %s",
                             startup, jax.config.jax_compilation_cache_dir or "off")
                if step % cfg.log_every == 0 or step == total:
                    window.check(tracker, last_good())
                    row = {**window.row(), "epoch": position["epoch"]}
                    tracker.log(step, row)
                    progress.update(task, completed=step, loss=f"{row['loss']:.4f}",
                                    tps=f"{row['tokens_per_second']:,.0f}")
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total and eval_set:
                    eval_loss = evaluate(step)
                if signals.should_stop(step):
                    save(step)
                    raise TrainingStopped(signals.cause, step, str(ckpt.directory / str(step)), signals.exit_code)
                if step % cfg.checkpoint_every == 0 and step < total:
                    fresh = cfg.eval_every and step % cfg.eval_every == 0
                    if cfg.keep_best and eval_set and not fresh:  # best-N ranks checkpoints by eval loss
                        eval_loss = evaluate(step)
                    save(step, {"eval_loss": eval_loss} if eval_loss is not None else None)
            if eval_set:
                eval_loss = evaluate(step)
            if last_ckpt != step:
                save(step, {"eval_loss": eval_loss} if eval_loss is not None else None)
    finally:
        batches.close()
        ckpt.close()
        tracker.close()
    elapsed = time.perf_counter() - t_loop
    return TrainResult(run_dir=str(run), step=int(jax.device_get(state.step)), last_checkpoint=last_ckpt,
                       eval_loss=eval_loss, final_metrics=window.last,
                       tokens_per_second=window.tokens / max(elapsed, 1e-9),
                       startup_seconds=startup if startup is not None else time.perf_counter() - started,
                       data_stats=stats)


__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "TrainingStopped", "train"]
