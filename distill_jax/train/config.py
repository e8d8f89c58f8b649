"""TrainConfig: everything `distill-jax train` reads, as frozen typed dataclasses (YAML + dotted overrides)."""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

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
    mesh: MeshConfig = MeshConfig()
    batch_size: int = 32  # global, over all hosts and devices (and all grad_accum microbatches)
    steps: int | None = None  # exactly one of steps / epochs
    epochs: float | None = None
    eval_every: int = 200  # steps; 0 = only at the end
    checkpoint_every: int = 500  # steps; a final checkpoint is always written
    keep: int = 3  # latest checkpoints kept
    keep_best: int = 0  # plus the N best by eval loss (each checkpoint then runs an eval first)
    log_every: int = 10
    resume: bool = True  # continue from RUN/ckpt's latest step when there is one
    async_checkpoint: bool = True
    distributed: bool | None = None  # None: initialise jax.distributed when the environment says multi-process
    # fail before any work when JAX would run on the CPU; None: on for multi-process runs (train/runtime.py)
    require_accelerator: bool | None = None
    progress: bool = True  # rich progress bar (process 0)

    def __post_init__(self) -> None:
        if not self.run_dir:
            raise ValueError("run_dir must be set")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"set exactly one of steps / epochs (got steps={self.steps}, epochs={self.epochs})")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        for name in ("batch_size", "checkpoint_every", "keep", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "keep_best"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size % self.optim.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of optim.grad_accum "
                             f"{self.optim.grad_accum}")


__all__ = ["ModelInitConfig", "TrainConfig"]
