"""benchmarks/gpu_check.py's dry run (`--cpu`): every step of the GPU check runs, with tiny sizes, in an interpreter
where `datasets` cannot be imported (the reference GPU machine has none), so nothing on its path needs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# `import datasets` fails in this interpreter, as on a machine without the package
WITHOUT_DATASETS = ("import runpy, sys; sys.modules['datasets'] = None; sys.argv = sys.argv[1:]; "
                    "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.slow
def test_gpu_check_dry_run_passes_without_datasets(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", WITHOUT_DATASETS, str(REPO / "benchmarks" / "gpu_check.py"), "--cpu",
                          "--out", str(tmp_path)], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preset"] == "tiny" and all(s["ok"] for s in summary["status"].values()), summary["status"]
    steps = summary["steps"]
    assert steps["env"]["backend"] == "cpu" and "backend: cpu" in out.stdout
    assert set(steps["parity"]["v1_1"]) == {"fp32 highest", "bf16"}
    assert steps["train"]["loss_last_window"] < steps["train"]["loss_first_window"]
    assert steps["decode"]["new_tokens_per_second"] > 0 and steps["gpu_speed"]["status"] == "not run: --cpu"
