"""Sharded training equals one-device training: data, FSDP and tensor parallel meshes; grad accumulation.

Tolerance: the meshes compute the same math with reductions (matmul contractions, the loss and gradient
all-reduces) split and summed in another order, so float32 results differ by rounding only: ~1e-7
relative per op, a few ulps after a few Adam steps. rtol 1e-5 catches any real error (a wrong sharding,
a double-counted or dropped shard moves the loss by >= 1e-2) with margin over rounding.
Params get atol 1e-4 on values ~0.1: Adam divides by sqrt(v), so a gradient entry near zero turns a
rounding difference into a visible one (seen: 2.5e-5); a real error moves params by ~lr = 1e-2.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from helpers_train import TINY_OVERRIDES, random_batch

from distill_jax.model.t5 import T5Config, init_params
from distill_jax.train import sharding as S
from distill_jax.train.optim import OptimConfig, make_optimizer
from distill_jax.train.state import create_state, init_state, state_layout
from distill_jax.train.step import jit_train_step

VOCAB, STEPS, BATCH = 128, 3, 16
CONFIG = T5Config.preset("tiny", vocab_size=VOCAB, **TINY_OVERRIDES)
OPTIM = OptimConfig(name="adamw", learning_rate=1e-2, schedule="constant", weight_decay=0.01, clip_norm=1.0)


def _run(mesh_cfg: S.MeshConfig, devices=None, grad_accum: int = 1):
    """Losses, final params and state of STEPS steps; the state is created in place on its shards."""
    mesh = S.make_mesh(mesh_cfg, devices)
    tx, schedule = make_optimizer(OPTIM, STEPS)
    init_fn = lambda k: init_state(init_params(CONFIG, k), tx, 0)  # noqa: E731
    _, shardings = state_layout(mesh, init_fn, jax.random.PRNGKey(0))
    state = create_state(init_fn, shardings, jax.random.PRNGKey(0))
    step = jit_train_step(CONFIG, tx, schedule, grad_accum, shardings, S.batch_sharding(mesh))
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(STEPS):
        batch = {k: jax.device_put(v, S.batch_sharding(mesh)) for k, v in random_batch(rng, BATCH, 12, 10, VOCAB).items()}
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params), state


@pytest.fixture(scope="module")
def reference():
    return _run(S.MeshConfig(data=1), devices=jax.devices()[:1])


def _assert_same(run, reference):
    (losses, params, _), (ref_losses, ref_params, _) = run, reference
    assert ref_losses[-1] < ref_losses[0] - 0.05, "the reference should be learning"
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref_params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_data_fsdp_tensor_mesh_with_grad_accumulation_matches_one_device(reference):
    """One compile covers all three axes (data 2 x fsdp 2 x tensor 2) and a 2-microbatch scan: each is a
    pure reordering of the same sums."""
    run = _run(S.MeshConfig(data=2, fsdp=2, tensor=2), grad_accum=2)
    _assert_same(run, reference)
    state = run[2]
    emb = state.params["shared"]["embedding"]  # (vocab, embed) -> (tensor, fsdp)
    assert emb.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    assert emb.addressable_shards[0].data.shape == (VOCAB // 2, CONFIG.d_model // 2)
    mu = state.opt_state[1][0].mu["shared"]["embedding"]  # AdamW's first moment follows its parameter
    assert mu.sharding.spec == emb.sharding.spec



@dataclasses.dataclass(frozen=True)
class _TpuChipCore:
    """The attributes jax.make_mesh reads from a TPU device. No TPU here, so the test hands JAX's topology code
    a v3-8's devices (4 chips in a 2x2 grid, 2 cores each) described the way a TPU runtime describes them."""
    id: int
    coords: tuple[int, int, int]
    core_on_chip: int
    process_index: int = 0
    slice_index: int = 0
    platform: str = "tpu"
    device_kind: str = "TPU v3"


def test_mesh_follows_the_tpu_topology_with_auto_axes():
    """make_mesh takes jax.make_mesh's topology-aware path: on a v3-8 the data axis runs round the chips' ring
    (0,1,2,3,6,7,4,5: neighbours share a link), where a plain reshape of the device list would not. The axes are
    Auto, because the step functions leave the inner shardings to XLA's propagation."""
    v3_8 = [_TpuChipCore(id=2 * (2 * y + x) + core, coords=(x, y, 0), core_on_chip=core)
            for y in range(2) for x in range(2) for core in range(2)]
    mesh = S.make_mesh(S.MeshConfig(data=-1), devices=v3_8)
    assert [d.id for d in mesh.devices.flat] == [0, 1, 2, 3, 6, 7, 4, 5]
    assert mesh.axis_names == S.AXES
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 3
    cpu = S.make_mesh(S.MeshConfig(data=2, fsdp=2, tensor=2))  # CPU devices: in jax.devices() order
    assert cpu.axis_types == (jax.sharding.AxisType.Auto,) * 3
    assert [d.id for d in cpu.devices.flat] == [d.id for d in jax.devices()]
