"""Device mesh and parameter/batch shardings.

The mesh has three named axes (maxtext/flax-lm1b naming): `data` (pure data parallelism), `fsdp`
(data parallelism that also shards parameters and optimizer state) and `tensor` (Megatron-style model
parallelism inside a layer). Parameters get their shardings in two ordered steps:

1. `model.partitioning.param_logical_axes(params)` maps each parameter path to logical axis names through its own
   ordered regex table (it raises on a path no rule matches);
2. `LOGICAL_RULES` maps each logical name to a mesh axis (or None = replicated). A logical name missing from
   the table is an error, never a silent replication.

A dimension that its mesh axis does not divide is replicated with a logged note (a 32128 vocab on 3
devices, say) rather than crashing. Optimizer-state leaves take the sharding of the parameter they belong
to (matched by path suffix), with the dims a factored statistic (Adafactor) dropped.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from distill_jax.config import ConfigError

log = logging.getLogger(__name__)

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over every data-parallel axis

# logical axis (partitioning.param_logical_axes) -> mesh axis. Ordered: first match wins, as in t5x's rules.
LOGICAL_RULES: tuple[tuple[str, str | None], ...] = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads_kv", "tensor"),
    ("mlp", "tensor"),
    ("heads", None),  # relative-position bias tables are tiny: replicate
    ("relpos_buckets", None),
    ("layers", None),  # the scanned layer axis: every device holds its slice of every layer
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the (data, fsdp, tensor) mesh axes; one -1 takes the devices left over."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self) -> None:
        sizes = dataclasses.astuple(self)
        if sum(s == -1 for s in sizes) > 1:
            raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(AXES, sizes))}")
        for name, s in zip(AXES, sizes):
            if s == 0 or s < -1:
                raise ValueError(f"mesh.{name} must be a positive size or -1, got {s}")

    def resolve(self, n_devices: int) -> tuple[int, int, int]:
        sizes = list(dataclasses.astuple(self))
        fixed = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if n_devices % fixed:
                raise ConfigError(
                    f"mesh: {dict(zip(AXES, sizes))} — the fixed axes ({fixed}) do not divide the "
                    f"{n_devices} devices")
            sizes[sizes.index(-1)] = n_devices // fixed
        elif fixed != n_devices:
            raise ConfigError(
                f"mesh: {dict(zip(AXES, sizes))} uses {fixed} devices but {n_devices} are available "
                f"(set one axis to -1 to fill)")
        return tuple(sizes)  # type: ignore[return-value]


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A Mesh over all (global) devices, axes ordered data, fsdp, tensor (tensor innermost: the fastest links).

    jax.make_mesh orders the devices by the hardware's topology (TPU torus rings, GPUs by their global ids; CPU
    devices as given). The axes are Auto: the step functions give shardings for their inputs and outputs only
    and leave the rest to XLA's propagation, which Explicit axes (make_mesh's default since jax 0.9) would not.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = cfg.resolve(len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dim over (data, fsdp), the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def _path_str(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def logical_to_spec(
    axes: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh, where: str,
    rules: Sequence[tuple[str, str | None]] = LOGICAL_RULES,
) -> P:
    """PartitionSpec for one array from its logical axis names; indivisible dims are replicated (logged)."""
    if len(axes) != len(shape):
        raise ValueError(f"{where}: {len(axes)} logical axes {axes} for an array of shape {shape}")
    table = dict(rules)
    spec: list[str | None] = []
    used: set[str] = set()
    for name, dim in zip(axes, shape):
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise ValueError(f"{where}: no sharding rule for logical axis {name!r} (rules: {sorted(table)})")
        mesh_axis = table[name]
        if mesh_axis is None or mesh.shape[mesh_axis] == 1 or mesh_axis in used:
            spec.append(None)
            continue
        if dim % mesh.shape[mesh_axis]:
            log.info("%s: dim %d (%s) not divisible by mesh axis %s=%d; replicated",
                     where, dim, name, mesh_axis, mesh.shape[mesh_axis])
            spec.append(None)
            continue
        used.add(mesh_axis)
        spec.append(mesh_axis)
    return P(*spec)


def param_specs(params_shape: Any, logical_axes: Any, mesh: Mesh,
                rules: Sequence[tuple[str, str | None]] = LOGICAL_RULES) -> Any:
    """PartitionSpec tree for params (arrays or ShapeDtypeStructs) from their logical-axes tree."""
    def one(path, leaf, axes):
        if not np.shape(leaf):
            return P()  # scalars are replicated
        return logical_to_spec(tuple(axes), tuple(leaf.shape), mesh, _path_str(path), rules)

    return jax.tree_util.tree_map_with_path(
        one, params_shape, logical_axes, is_leaf=lambda x: isinstance(x, tuple) and all(
            a is None or isinstance(a, str) for a in x))


def _spec_for_shape(param_shape: tuple, spec: P, shape: tuple) -> P | None:
    """The param's spec adapted to a statistic of `shape` (same shape, or one dim dropped as Adafactor does)."""
    full = tuple(spec) + (None,) * (len(param_shape) - len(spec))
    if tuple(shape) == tuple(param_shape):
        return P(*full)
    if len(shape) == len(param_shape) - 1:
        for drop in range(len(param_shape) - 1, -1, -1):
            if param_shape[:drop] + param_shape[drop + 1:] == tuple(shape):
                return P(*(full[:drop] + full[drop + 1:]))
    return None


def tree_specs_like_params(tree_shape: Any, params_shape: Any, params_spec: Any) -> Any:
    """Specs for an optimizer-state-like tree: each leaf follows the param whose path ends its own path."""
    flat_params = {
        tuple(_path_str((k,)) for k in path): (leaf.shape, spec)
        for (path, leaf), spec in zip(
            jax.tree_util.tree_flatten_with_path(params_shape)[0],
            jax.tree_util.tree_leaves(params_spec, is_leaf=lambda x: isinstance(x, P)))
    }

    def one(path, leaf):
        shape = tuple(np.shape(leaf))
        if not shape:
            return P()
        keys = tuple(_path_str((k,)) for k in path)
        for start in range(len(keys)):
            hit = flat_params.get(keys[start:])
            if hit is not None:
                spec = _spec_for_shape(hit[0], hit[1], shape)
                return spec if spec is not None else P()
        return P()

    return jax.tree_util.tree_map_with_path(one, tree_shape)


def named(mesh: Mesh, specs: Any) -> Any:
    return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


__all__ = [
    "AXES", "BATCH_AXES", "LOGICAL_RULES", "MeshConfig", "make_mesh", "data_parallel_size", "batch_sharding",
    "logical_to_spec", "param_specs", "tree_specs_like_params", "named",
]
