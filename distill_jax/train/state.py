"""The training state: one pytree, so jit, donation, sharding and checkpoints all treat it as one value."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import PartitionSpec as P

from distill_jax.model.partitioning import param_logical_axes
from distill_jax.train import sharding as S


class TrainState(struct.PyTreeNode):
    step: jax.Array  # int32 scalar: optimizer updates done
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key; dropout keys are fold_in(rng, step), so a resume draws the same masks


def init_state(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """Pure: fit for jax.eval_shape and jit(out_shardings=...)."""
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.PRNGKey(seed))


def state_shardings(mesh: jax.sharding.Mesh, abstract: TrainState) -> TrainState:
    """NamedShardings for every leaf: params by their logical axes, optimizer state following its params."""
    pspec = S.param_specs(abstract.params, param_logical_axes(abstract.params), mesh)
    specs = TrainState(step=P(), params=pspec, rng=P(),
                       opt_state=S.tree_specs_like_params(abstract.opt_state, abstract.params, pspec))
    return S.named(mesh, specs)


def state_layout(mesh: jax.sharding.Mesh, init_fn: Callable[..., TrainState], *args: Any
                 ) -> tuple[TrainState, TrainState]:
    """(abstract state, shardings) of `init_fn(*args)`, computing nothing: `jax.eval_shape` gives shapes and
    dtypes, the partition rules give each leaf's sharding. A restore targets exactly this layout."""
    abstract = jax.eval_shape(init_fn, *args)
    return abstract, state_shardings(mesh, abstract)


def create_state(init_fn: Callable[..., TrainState], shardings: TrainState, *args: Any) -> TrainState:
    """`init_fn(*args)` with every leaf created in place on its own shards (EasyLM / big_vision style): no full
    copy of a large model ever lands on one device."""
    return jax.jit(init_fn, out_shardings=shardings)(*args)


__all__ = ["TrainState", "init_state", "state_shardings", "state_layout", "create_state"]
