"""The jitted training and eval steps: pure functions of (state, batch), module-level so tests reach them.

Loss normalisation: every target token t of example i carries weight w_i (the example's style/task weight;
0 for padding rows and label -100 positions). loss = sum_i,t w_i * CE_i,t / sum_i,t w_i. With all weights 1
this is HF's mean token cross-entropy. With gradient accumulation the numerator and denominator are summed
over all microbatches before dividing, so k microbatches give the same update as one big batch.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding

from distill_jax.model.t5 import T5, T5Config, shift_right
from distill_jax.train.batches import LABEL_PAD
from distill_jax.train.state import TrainState


def loss_sums(params: Any, batch: dict, config: T5Config, dropout_rng: jax.Array | None) -> tuple[jax.Array, dict]:
    """(sum of weighted token losses, aux sums) for one (micro)batch; see the module docstring."""
    labels = batch["labels"]
    decoder_input_ids = shift_right(labels, config.decoder_start_token_id)
    deterministic = dropout_rng is None
    logits = T5(config).apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], decoder_input_ids,
        deterministic=deterministic, rngs=None if deterministic else {"dropout": dropout_rng})
    mask = labels != LABEL_PAD
    safe = jnp.where(mask, labels, 0)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    w = mask * batch["weights"][:, None].astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == safe) & mask
    aux = {"weight_sum": w.sum(), "tokens": mask.sum(dtype=jnp.float32), "correct": correct.sum(dtype=jnp.float32)}
    return (nll * w).sum(), aux


def _grads(params: Any, batch: dict, config: T5Config, rng: jax.Array | None, grad_accum: int):
    """Summed (not yet normalised) grads and sums, over `grad_accum` microbatches scanned in sequence."""
    value_and_grad = jax.value_and_grad(loss_sums, has_aux=True)
    if grad_accum == 1:
        (loss_sum, aux), grads = value_and_grad(params, batch, config, rng)
        return grads, {**aux, "loss_sum": loss_sum}
    # microbatch j takes rows j, j+k, j+2k...: each microbatch stays spread over every data-parallel device
    micro = jax.tree_util.tree_map(
        lambda x: x.reshape((x.shape[0] // grad_accum, grad_accum) + x.shape[1:]).swapaxes(0, 1), batch)
    zeros = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    init = (zeros, {k: jnp.zeros((), jnp.float32) for k in ("weight_sum", "tokens", "correct", "loss_sum")})

    def body(carry, xs):
        j, mb = xs
        g_acc, s_acc = carry
        sub = None if rng is None else jax.random.fold_in(rng, j)
        (loss_sum, aux), g = value_and_grad(params, mb, config, sub)
        g_acc = jax.tree_util.tree_map(lambda a, b: a + b.astype(jnp.float32), g_acc, g)
        s_acc = {k: s_acc[k] + v for k, v in {**aux, "loss_sum": loss_sum}.items()}
        return (g_acc, s_acc), None

    (grads, sums), _ = jax.lax.scan(body, init, (jnp.arange(grad_accum), micro))
    return grads, sums


def train_step(state: TrainState, batch: dict, *, config: T5Config, tx: optax.GradientTransformation,
               schedule: optax.Schedule, grad_accum: int = 1) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step) if config.dropout_rate > 0 else None
    grads, sums = _grads(state.params, batch, config, rng, grad_accum)
    denom = jnp.maximum(sums["weight_sum"], 1e-9)
    grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": sums["loss_sum"] / denom,
        "accuracy": sums["correct"] / jnp.maximum(sums["tokens"], 1.0),
        "learning_rate": schedule(state.step),
        "grad_norm": optax.global_norm(grads),
        "param_norm": optax.global_norm(params),
        "tokens": sums["tokens"],
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params: Any, batch: dict, *, config: T5Config) -> dict:
    """Sums (not means) so eval batches of different sizes aggregate exactly on the host."""
    loss_sum, aux = loss_sums(params, batch, config, None)
    return {"loss_sum": loss_sum, **aux}


def jit_train_step(config: T5Config, tx: optax.GradientTransformation, schedule: optax.Schedule,
                   grad_accum: int, state_shardings: Any, batch_sharding: NamedSharding) -> Callable:
    """train_step compiled once per bucket shape, state donated (its buffers are reused for the new state)."""
    replicated = NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(
        functools.partial(train_step, config=config, tx=tx, schedule=schedule, grad_accum=grad_accum),
        in_shardings=(state_shardings, batch_sharding), out_shardings=(state_shardings, replicated),
        donate_argnums=0)


def jit_eval_step(config: T5Config, params_shardings: Any, batch_sharding: NamedSharding) -> Callable:
    replicated = NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(functools.partial(eval_step, config=config),
                   in_shardings=(params_shardings, batch_sharding), out_shardings=replicated)


__all__ = ["loss_sums", "train_step", "eval_step", "jit_train_step", "jit_eval_step"]
