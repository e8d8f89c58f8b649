"""What a JAX command needs from its machine before JAX is imported: the accelerator extra and the compile cache.

Standard library only, so it runs where nothing is installed yet: `scripts/_venv.sh` asks it (with the system
Python, before .venv exists) which extra to install, and the `distill-jax` entry point sets the compilation
cache through the environment before a verb imports JAX (JAX reads JAX_COMPILATION_CACHE_DIR at import).

Hardware detection mirrors what JAX itself looks at (jax/_src/hardware_utils.py is private and absent before
the install): `nvidia-smi` for NVIDIA GPUs (its header names the newest CUDA the driver runs, which picks
jax[cuda13] or jax[cuda12]) and Google TPU chips on the PCI bus for a TPU VM.

  python -m distill_jax.train.runtime_env detect   # prints "<extra> <why>", e.g. "cuda13 nvidia-smi: CUDA 13.0"
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ACCELERATORS = ("cpu", "cuda12", "cuda13", "tpu")
ENV_ACCEL = "DISTILL_JAX_ACCEL"

_GOOGLE_PCI_VENDOR = "0x1ae0"
# PCI device ids of TPU chips (v3, v4, v5p, v5e, v6e, 7x); other Google devices (gVNIC) share the vendor id
_TPU_PCI_DEVICES = {"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"}


def tpu_chips() -> int:
    """TPU chips attached to this host through PCI (0 off a TPU VM)."""
    n = 0
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            if Path(vendor).read_text().strip() != _GOOGLE_PCI_VENDOR:
                continue
            n += (Path(vendor).parent / "device").read_text().strip() in _TPU_PCI_DEVICES
        except OSError:  # a device that went away while we listed the bus
            continue
    return n


def cuda_driver_version() -> tuple[int, int] | None:
    """The newest CUDA version the NVIDIA driver supports (nvidia-smi's header), None without a working driver."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def detect_accelerator() -> tuple[str, str]:
    """(extra, why): the accelerator extra for this machine and the evidence for it."""
    cuda = cuda_driver_version()
    if cuda is not None:
        seen = f"nvidia-smi: driver supports CUDA {cuda[0]}.{cuda[1]}"
        if cuda[0] >= 13:
            return "cuda13", seen
        if cuda[0] == 12:
            return "cuda12", seen
        return "cpu", f"{seen}, older than the CUDA 12 that JAX's GPU wheels need: update the driver"
    chips = tpu_chips()
    if chips:
        return "tpu", f"{chips} TPU chip(s) on the PCI bus"
    return "cpu", "no nvidia-smi and no TPU chip on the PCI bus"


def resolve_accelerator() -> tuple[str, str]:
    """DISTILL_JAX_ACCEL when set (checked), else what this machine has."""
    chosen = os.environ.get(ENV_ACCEL, "").strip()
    if chosen:
        if chosen not in ACCELERATORS:
            raise ValueError(f"{ENV_ACCEL}={chosen!r}: expected one of {', '.join(ACCELERATORS)}")
        return chosen, f"{ENV_ACCEL}={chosen}"
    return detect_accelerator()


def install_command(extra: str) -> str:
    """The command that installs the JAX build for `extra` into this checkout's .venv."""
    if extra == "cpu":
        return "bash scripts/install.sh"
    return f"DISTILL_JAX_ACCEL={extra} bash scripts/install.sh  (= pip install -e '.[{extra}]')"


def default_compilation_cache_dir() -> Path:
    """$XDG_CACHE_HOME/distill_jax/xla (~/.cache/distill_jax/xla): shared by every run of every command."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "distill_jax" / "xla"


def use_compilation_cache() -> str:
    """Point JAX's persistent compilation cache at one directory for this process (and its subprocesses) unless
    the environment already chose one; call before JAX is imported. Returns the directory.

    Programs compiling in 0.5 s or more are cached (JAX's default floor is 1 s): the small students' eval and
    decode programs compile in about that time and load in milliseconds. Both settings yield to the environment
    (JAX_COMPILATION_CACHE_DIR, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS)."""
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(default_compilation_cache_dir()))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    return os.environ["JAX_COMPILATION_CACHE_DIR"]


__all__ = ["ACCELERATORS", "ENV_ACCEL", "tpu_chips", "cuda_driver_version", "detect_accelerator",
           "resolve_accelerator", "install_command", "default_compilation_cache_dir", "use_compilation_cache"]


def main(argv: list[str]) -> int:
    if argv != ["detect"]:
        print("usage: python -m distill_jax.train.runtime_env detect", file=sys.stderr)
        return 2
    try:
        extra, why = resolve_accelerator()
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"{extra} {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
