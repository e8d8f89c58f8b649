"""TrainConfig: everything `distill-jax train` reads, as frozen typed dataclasses (YAML + dotted overrides)."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from distill_jax.config import RUNTIME, ConfigError
from distill_jax.train.batches import DataConfig
from distill_jax.train.optim import OptimConfig
from distill_jax.train.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class ModelInitConfig:
    init: str = "scratch"  # "scratch", or a Hugging Face T5 directory (config.json + weights + tokenizer)
    preset: str = "tiny"  # scratch only: tiny, mini, t5-small, flan-t5-base, ...
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # scratch: T5Config fields (d_model, ...)
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype; params stay float32 (master weights)
    dropout_rate: float | None = None  # replaces the HF/preset value when set
    tokenizer: str | None = None  # tokenizer dir; default: the HF dir's own, or trained into RUN/tokenizer
    tokenizer_vocab_size: int = 1000  # scratch + trained tokenizer only
    # layers under one nn.scan with params stacked on a layer axis (compile time flat in depth); None: on for
    # models of 12+ layers (t5-base and up), preset or HF directory alike
    scan_layers: bool | None = None
    remat: Literal["none", "minimal", "full"] = "none"  # recompute in the backward pass: minimal keeps matmuls

    def __post_init__(self) -> None:
        if self.tokenizer_vocab_size < 16:
            raise ValueError(f"tokenizer_vocab_size must be >= 16, got {self.tokenizer_vocab_size}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    run_dir: str
    seed: int = 0
    model: ModelInitConfig = ModelInitConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = dataclasses.field(default=MeshConfig(), metadata=RUNTIME)  # the result is the same math
    batch_size: int = 32  # global, over all hosts and devices (and all grad_accum microbatches)
    steps: int | None = None  # exactly one of steps / epochs
    epochs: float | None = None
    eval_every: int = 200  # steps; 0 = only at the end
    checkpoint_every: int = dataclasses.field(default=500, metadata=RUNTIME)  # steps; a final one is always written
    keep: int = dataclasses.field(default=3, metadata=RUNTIME)  # latest checkpoints kept
    keep_best: int = 0  # plus the N best by eval loss (each checkpoint then runs an eval first)
    log_every: int = dataclasses.field(default=10, metadata=RUNTIME)
    resume: bool = dataclasses.field(default=True, metadata=RUNTIME)  # continue from RUN/ckpt's latest step
    async_checkpoint: bool = dataclasses.field(default=True, metadata=RUNTIME)
    # None: initialise jax.distributed when the environment says multi-process
    distributed: bool | None = dataclasses.field(default=None, metadata=RUNTIME)
    # fail before any work when JAX would run on the CPU; None: on for multi-process runs (train/runtime.py)
    require_accelerator: bool | None = dataclasses.field(default=None, metadata=RUNTIME)
    progress: bool = dataclasses.field(default=True, metadata=RUNTIME)  # rich progress bar (process 0)

    def __post_init__(self) -> None:
        if not self.run_dir:
            raise ConfigError("run_dir must be set", key="run_dir")
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError(f"set exactly one of steps / epochs (got steps={self.steps}, epochs={self.epochs})",
                              key="steps")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}", key="steps")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}", key="epochs")
        for name in ("batch_size", "checkpoint_every", "keep", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}", key=name)
        for name in ("eval_every", "keep_best"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}", key=name)
        if self.batch_size % self.optim.grad_accum:
            raise ConfigError(f"batch_size {self.batch_size} is not a multiple of optim.grad_accum "
                              f"{self.optim.grad_accum}", key="batch_size")


def check_devices(cfg: TrainConfig, n_devices: int) -> None:
    """The batch must split evenly over the data-parallel devices (and grad_accum microbatches): checked from the
    config and the device count alone, before the run directory, the tokenizer or the data are touched."""
    data, fsdp, _ = cfg.mesh.resolve(n_devices)
    dp = data * fsdp
    if cfg.batch_size % (dp * cfg.optim.grad_accum):
        raise ConfigError(f"batch_size {cfg.batch_size} must be a multiple of data-parallel size {dp} x "
                          f"optim.grad_accum {cfg.optim.grad_accum} ({n_devices} devices, mesh "
                          f"{dataclasses.asdict(cfg.mesh)})", key="batch_size")


__all__ = ["ModelInitConfig", "TrainConfig", "check_devices"]
