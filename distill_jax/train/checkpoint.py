"""Orbax checkpoints at RUN/ckpt/<step>/ and `load_params` for the verbs that only need the weights.

Each step directory holds four items:
  params  - the model parameters (StandardSave: restorable alone, into any sharding)
  train   - step, optimizer state and the rng key
  data    - the batch iterator position {epoch, index}, so a resume sees exactly the batches it would have
  meta    - the model config (HF config.json fields + dtype), the tokenizer dir and the step's metrics
Params are their own item so export/generate/eval restore them without knowing the optimizer.
Saving is async (orbax writes in a background thread while training goes on); `wait()` before exit.
Restoring takes an abstract target whose leaves carry shardings, so a checkpoint written on one mesh is
restored straight into another.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as pp

from distill_jax.config import ConfigError
from distill_jax.model.hf import config_from_hf, config_to_hf
from distill_jax.model.t5 import T5Config, init_params
from distill_jax.train.state import TrainState


ITEMS = ("params", "train", "data", "meta")


class CheckpointError(ConfigError):
    """A run dir, step or checkpoint is missing or unreadable; the message names the path."""


def ckpt_dir(run_dir: str | Path) -> Path:
    return Path(run_dir).absolute() / "ckpt"


class Checkpointer:
    """keep the `keep` latest steps, plus (optionally) the `keep_best` best by `best_metric` (lower is better)."""

    def __init__(self, run_dir: str | Path, keep: int = 3, keep_best: int = 0, best_metric: str = "eval_loss",
                 async_save: bool = True, read_only: bool = False):
        policies: list[Any] = [pp.LatestN(n=keep)]
        if keep_best:
            policies.append(pp.BestN(get_metric_fn=lambda m: m[best_metric], reverse=True, n=keep_best,
                                     keep_checkpoints_without_metrics=False))
        # A reader needs no other process: pipelines evaluate and export on process 0 while the others wait
        # (orbax would otherwise put a barrier over every process into the manager's constructor).
        local = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                                   active_processes={jax.process_index()})
        options = ocp.CheckpointManagerOptions(
            preservation_policy=pp.AnyPreservationPolicy(policies), create=not read_only, read_only=read_only,
            enable_async_checkpointing=async_save,
            **({"multiprocessing_options": local} if read_only else {}))
        self.directory = ckpt_dir(run_dir)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, position: dict, meta: dict, metrics: dict | None = None) -> None:
        step = int(jax.device_get(state.step))
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state, "rng": state.rng}),
            data=ocp.args.JsonSave({**position, "step": step}),
            meta=ocp.args.JsonSave({**meta, "metrics": metrics or {}}),
        )
        self.manager.save(step, args=args, metrics=metrics or None, force=True)

    def restore(self, abstract_state: TrainState, step: int | None = None) -> tuple[TrainState, dict, dict]:
        """(state laid out as `abstract_state`'s shardings say, data position, meta) of `step` (latest if None)."""
        step = self.check_step(step)
        args = ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_state.params),
            train=ocp.args.StandardRestore({"step": abstract_state.step, "opt_state": abstract_state.opt_state,
                                            "rng": abstract_state.rng}),
            data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore())
        out = self._restore(step, args)
        state = TrainState(step=out.train["step"], params=out.params, opt_state=out.train["opt_state"],
                           rng=out.train["rng"])
        return state, dict(out.data), dict(out.meta)

    def restore_meta(self, step: int) -> dict:
        return dict(self._restore(step, ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

    def restore_params(self, abstract_params: Any, step: int) -> Any:
        return self._restore(step, ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))).params

    def check_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"{self.directory}: no checkpoints")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"{self.directory}: no checkpoint for step {step} (available: {steps})")
        return step

    def _restore(self, step: int, args: ocp.args.Composite) -> Any:
        try:
            return self.manager.restore(step, args=args)
        except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, tensorstore errors)
            raise CheckpointError(f"{self.directory / str(step)}: checkpoint cannot be read: "
                                  f"{type(e).__name__}: {str(e)[:300]}") from e

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def tokenizer_ref(tokenizer_dir: str | Path, run_dir: str | Path) -> str:
    """Stored relative to the run dir when inside it, so a run directory can be moved."""
    tok, run = Path(tokenizer_dir).absolute(), Path(run_dir).absolute()
    try:
        return str(tok.relative_to(run))
    except ValueError:
        return str(tok)


def model_meta(config: T5Config, tokenizer_dir: str | Path, run_dir: str | Path) -> dict:
    return {"model_config": {**config_to_hf(config), "dtype": config.dtype, "scan_layers": config.scan_layers,
                             "remat": config.remat},
            "tokenizer_dir": tokenizer_ref(tokenizer_dir, run_dir)}


def check_layout(ckpt: Checkpointer, config: T5Config) -> None:
    """Resuming needs the checkpoint's parameter layout: a run whose `model.scan_layers` changed since is an
    error naming both, before orbax fails on mismatched trees."""
    saved = bool(ckpt.restore_meta(ckpt.check_step(None))["model_config"].get("scan_layers", False))
    if saved != config.scan_layers:
        raise ConfigError(f"{ckpt.directory}: the checkpoints hold {'scanned' if saved else 'unrolled'} layers but "
                          f"the config asks for {'scanned' if config.scan_layers else 'unrolled'} "
                          f"(model.scan_layers={config.scan_layers}): set model.scan_layers={saved} to resume, "
                          f"or start a new run_dir (`distill-jax export` converts either layout to HF)")


def load_params(run_dir: str | Path, step: int | None = None) -> tuple[T5Config, Any, str]:
    """(model config, params on the default device, tokenizer dir) of a training run; latest step when None."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run dir not found: {run}")
    if not ckpt_dir(run).is_dir():
        raise CheckpointError(f"{run}: no checkpoints (no ckpt/ directory); has it trained yet?")
    ckpt = Checkpointer(run, read_only=True, async_save=False)
    try:
        step = ckpt.check_step(step)
        meta = ckpt.restore_meta(step)
        hf = dict(meta["model_config"])
        # The param layout the checkpoint holds; checkpoints from before scanning are unrolled.
        layout = {"scan_layers": bool(hf.pop("scan_layers", False)), "remat": hf.pop("remat", "none")}
        config = dataclasses.replace(config_from_hf(hf, dtype=hf.pop("dtype", "float32")), **layout)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
            jax.eval_shape(lambda key: init_params(config, key), jax.random.PRNGKey(0)))
        params = ckpt.restore_params(abstract, step)
    finally:
        ckpt.close()
    tok = Path(meta["tokenizer_dir"])
    tok = tok if tok.is_absolute() else run / tok
    return config, params, os.fspath(tok)


__all__ = ["CheckpointError", "Checkpointer", "ckpt_dir", "tokenizer_ref", "model_meta", "check_layout",
           "load_params"]
