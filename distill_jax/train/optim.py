"""Optimizers and learning-rate schedules.

AdamW follows torch.optim.AdamW exactly (the parity test depends on it): decoupled weight decay scaled by
the learning rate (p -= lr * wd * p), bias-corrected moments, eps added to sqrt(v_hat). optax.adamw has the
same semantics, so it is used as is. Adafactor uses T5's defaults (decay 0.8, update clipping 1.0,
parameter-scaled updates, factored second moments, eps 1e-30) through optax.adafactor.

Gradient accumulation is not an optimizer wrapper here: train_step scans over microbatches (t5x style),
so one call is one optimizer update, the schedule counts real updates, and only one microbatch's
activations are alive at a time. optax.MultiSteps would instead need k calls per update and make the
data pipeline, step counter and checkpoints count microbatches.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    name: Literal["adamw", "adafactor"] = "adamw"
    learning_rate: float = 1e-3
    schedule: Literal["constant", "linear", "cosine", "rsqrt"] = "cosine"
    warmup_steps: int = 0
    end_lr_factor: float = 0.0  # final lr as a fraction of the peak (linear, cosine)
    weight_decay: float = 0.0
    # params whose '/'-joined path matches this regex get no weight decay (norm scales, position biases);
    # empty = decay everything (what torch.optim.AdamW(model.parameters()) does)
    no_decay: str = r"(layer_norm|norm|relative_attention_bias|relpos)"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = 1.0  # global-norm clipping; null = off
    grad_accum: int = 1  # microbatches per optimizer step (scanned inside train_step)

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.clip_norm is not None and self.clip_norm <= 0:
            raise ValueError(f"clip_norm must be > 0 or null, got {self.clip_norm}")
        if not 0 <= self.end_lr_factor <= 1:
            raise ValueError(f"end_lr_factor must be in [0, 1], got {self.end_lr_factor}")
        try:
            re.compile(self.no_decay)
        except re.error as e:
            raise ValueError(f"no_decay is not a valid regex: {e}") from e


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to the peak, then the chosen decay over the remaining steps."""
    peak, warm = cfg.learning_rate, cfg.warmup_steps
    decay_steps = max(total_steps - warm, 1)
    end = peak * cfg.end_lr_factor
    if cfg.schedule == "constant":
        decay = optax.constant_schedule(peak)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_lr_factor)
    else:  # rsqrt (T5): peak * sqrt(warmup / step) after the warmup
        offset = max(warm, 1)
        decay = lambda count: peak * jax.lax.rsqrt((count + offset) / offset)  # noqa: E731
    if warm == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warm), decay], [warm])


def decay_mask(params: Any, pattern: str) -> Any:
    """True where weight decay applies: every leaf unless its path matches `pattern`."""
    if not pattern:
        return jax.tree_util.tree_map(lambda _: True, params)
    rx = re.compile(pattern)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not rx.search("/".join(str(getattr(k, "key", k)) for k in path)), params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = make_schedule(cfg, total_steps)
    if cfg.name == "adamw":
        opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                          mask=lambda p: decay_mask(p, cfg.no_decay))
    else:
        opt = optax.adafactor(schedule, weight_decay_rate=cfg.weight_decay or None,
                              weight_decay_mask=lambda p: decay_mask(p, cfg.no_decay))
    if cfg.clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    return opt, schedule


__all__ = ["OptimConfig", "make_schedule", "make_optimizer", "decay_mask"]
