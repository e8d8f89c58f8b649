"""The process's JAX runtime: multi-host start-up, no silent CPU, host barriers, and what `distill-jax env` shows.

No silent CPU: JAX only logs a warning when it finds no GPU/TPU and runs on the CPU, so a pod slice or a GPU
node with a wrong install trains for days at a hundredth of the speed. `require_accelerator` (on by default
for multi-process runs and in the GPU/TPU presets) turns that into one line before any work, naming what JAX
found and the install command that fixes it. The check comes in two parts because jax.distributed must start
before anything initialises a backend: what is installed (plugins, JAX_PLATFORMS) is checked first, the backend
JAX really got right after jax.distributed.
"""
from __future__ import annotations

import logging
import os
import pkgutil
import platform
from importlib import metadata
from typing import Any

import jax
import orbax.checkpoint as ocp

from distill_jax.config import ConfigError
from distill_jax.train.config import TrainConfig
from distill_jax.train.runtime_env import detect_accelerator, install_command

log = logging.getLogger(__name__)

ENV_COORDINATOR = "DISTILL_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "DISTILL_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "DISTILL_JAX_PROCESS_ID"
# the JAX stack and the accelerator plugins, for `distill-jax env` and bug reports
STACK = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt", "libtpu",
         "flax", "optax", "orbax-checkpoint", "numpy", "transformers", "torch")


class AcceleratorError(ConfigError):
    """require_accelerator is on and JAX would run on the CPU; the message says why and what installs the fix."""


def is_multiprocess(distributed: bool | None) -> bool:
    """A jax.distributed run: asked for in the config, or started by a launcher (scripts/launch_*.sh)."""
    return bool(distributed) or bool(os.environ.get(ENV_COORDINATOR))


def initialize_distributed(distributed: bool | None) -> None:
    """jax.distributed.initialize from DISTILL_JAX_* env vars, or JAX's auto-detection when `distributed` is True."""
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
    elif distributed:
        try:
            jax.distributed.initialize()  # TPU pods, SLURM, Open MPI: JAX finds the cluster itself
        except ValueError as e:  # no cluster environment JAX knows ("coordinator_address should be defined")
            raise ConfigError(f"distributed: JAX found no cluster to join ({e}); start every host with "
                              f"scripts/launch_*.sh, or set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and "
                              f"{ENV_PROCESS_ID}", key="distributed") from e


def accelerator_plugins() -> list[str]:
    """The GPU/TPU backends JAX could load: PJRT plugins, found where JAX looks for them (the `jax_plugins`
    namespace package and entry points, xla_bridge.discover_pjrt_plugins), and libtpu."""
    found = {ep.value for ep in metadata.entry_points(group="jax_plugins")}
    try:
        import jax_plugins  # a namespace package: present only when a plugin put a module under it
    except ImportError:
        pass
    else:
        found |= {f"jax_plugins.{m.name}" for m in pkgutil.iter_modules(jax_plugins.__path__)}
    found = sorted(found)
    try:
        found.append(f"libtpu {metadata.version('libtpu')}")
    except metadata.PackageNotFoundError:
        pass
    return found


def _fail(found: str) -> AcceleratorError:
    extra, why = detect_accelerator()
    if extra == "cpu":
        fix = f"this machine has no accelerator ({why}): run on a GPU/TPU host, where `bash scripts/install.sh` " \
              "installs the matching JAX"
    else:
        fix = f"fix: {install_command(extra)} ({why})"
    return AcceleratorError(f"require_accelerator: JAX {jax.__version__} would run on the CPU: {found}; {fix}; or set "
                            "require_accelerator=false to run on the CPU", key="require_accelerator")


def check_installed() -> None:
    """Before any backend starts: an accelerator JAX may load is installed and JAX_PLATFORMS allows it."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms and {p.strip() for p in platforms.split(",")} <= {"cpu"}:
        raise _fail(f"JAX_PLATFORMS={platforms} limits JAX to the CPU")
    if not accelerator_plugins():
        raise _fail("no GPU or TPU plugin is installed (jaxlib alone has only the CPU backend)")


def check_backend() -> None:
    """After jax.distributed: the backend JAX really chose is not the CPU."""
    backend = jax.default_backend()
    if backend == "cpu":
        raise _fail(f"the backend is cpu although {', '.join(accelerator_plugins())} is installed (JAX's warning above "
                    "says why it did not load)")


def require_accelerator(cfg: TrainConfig) -> bool:
    return cfg.require_accelerator if cfg.require_accelerator is not None else is_multiprocess(cfg.distributed)


def prepare_runtime(cfg: TrainConfig) -> None:
    """The first JAX work of a training command: the accelerator check, then jax.distributed (idempotent)."""
    required = require_accelerator(cfg)
    if required:
        check_installed()
    initialize_distributed(cfg.distributed)
    if required:
        check_backend()


def wait_for_processes(name: str, timeout_s: float) -> None:
    """A barrier over every process in the coordination service (no device collective, so a wait of hours does
    not trip a collective's timeout). `name` must be unique within the job."""
    if jax.process_count() > 1:
        ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))


def _memory(device: Any) -> int | None:
    stats = device.memory_stats()  # None where the backend keeps none (CPU)
    return stats.get("bytes_limit") if stats else None


def environment_report() -> dict[str, Any]:
    """What this process's JAX sees: the first thing to paste into a bug report (`distill-jax env`)."""
    local = jax.local_devices()
    kinds: dict[str, int] = {}
    for d in jax.devices():
        kinds[d.device_kind] = kinds.get(d.device_kind, 0) + 1
    versions = {"python": platform.python_version()}
    for name in STACK:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "backend": jax.default_backend(),
        "devices": {"global": len(jax.devices()), "local": len(local), "kinds": kinds,
                    "memory_bytes_per_device": _memory(local[0])},
        "processes": {"count": jax.process_count(), "index": jax.process_index()},
        "plugins": accelerator_plugins(),
        "versions": versions,
        "environment": {k: os.environ[k] for k in ("XLA_FLAGS", "JAX_PLATFORMS", "LIBTPU_INIT_ARGS",
                                                   "CUDA_VISIBLE_DEVICES", "TPU_VISIBLE_CHIPS") if k in os.environ},
        "compilation_cache": jax.config.jax_compilation_cache_dir,
        "hardware": dict(zip(("extra", "evidence"), detect_accelerator())),
    }


__all__ = ["AcceleratorError", "ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "is_multiprocess",
           "initialize_distributed", "accelerator_plugins", "check_installed", "check_backend", "require_accelerator",
           "prepare_runtime", "wait_for_processes", "environment_report"]
