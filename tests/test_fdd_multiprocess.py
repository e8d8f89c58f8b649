"""`distill-jax fdd` as 2 local processes (jax.distributed on 127.0.0.1, 4 CPU devices each) = one process
with 8 devices: the same losses step for step, and the host stages (teacher, new problems, export, evaluation,
split, report) ran on process 0 alone.

Which process wrote what is recorded by a Python audit hook in each process (`sys.addaudithook`: every file
opened for writing or renamed into place). Orbax writes each process's checkpoint shards from C++, unseen by
the hook, which is fine: the shards are the one thing every process must write.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Runs the CLI with an audit hook that lists the files this process wrote under FDD_TEST_RUN.
LAUNCHER = """
import atexit, json, os, sys
run = os.path.abspath(os.environ["FDD_TEST_RUN"]) + os.sep
written = set()
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        writes = flags & WRITE_FLAGS if isinstance(flags, int) else any(c in (mode or "") for c in "wax+")
    elif event == "os.rename":
        path, writes = args[1], True
    else:
        return
    path = os.path.abspath(os.fsdecode(path))
    if writes and path.startswith(run):
        written.add(os.path.relpath(path, run))

atexit.register(lambda: open(os.environ["FDD_TEST_WRITES"], "w").write(json.dumps(sorted(written))))
sys.addaudithook(hook)
from distill_jax.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run: Path, k: int) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "train" / f"r{k}" / "logs" / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
def test_two_processes_run_fdd_like_one(fdd_reference, tmp_path):
    """The reference is the session's one-process FDD run on 8 devices (tests/conftest.py), same config."""
    root, single = tmp_path, fdd_reference["run"]
    round_steps = fdd_reference["config"]["round_steps"]
    run = root / "multi"
    config = root / "fdd.yaml"
    config.write_text(yaml.safe_dump({**fdd_reference["config"], "run_dir": str(run)}))
    (root / "launcher.py").write_text(LAUNCHER)
    port = _free_port()
    procs = []
    for pid in range(2):
        proc_env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
                    "DISTILL_JAX_COORDINATOR": f"127.0.0.1:{port}", "DISTILL_JAX_NUM_PROCESSES": "2",
                    "DISTILL_JAX_PROCESS_ID": str(pid), "FDD_TEST_RUN": str(run),
                    "FDD_TEST_WRITES": str(root / f"writes_{pid}.json"), "PYTHONPATH": str(REPO)}
        procs.append(subprocess.Popen(
            [sys.executable, str(root / "launcher.py"), "fdd", "--config", str(config)],
            env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=500)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(outs)

    # the training stage ran as one 8-device program: same losses and same final checkpoints as one process
    for k, steps in enumerate(round_steps):
        losses = _losses(run, k)
        assert sorted(losses) == list(range(1, steps + 1))
        reference = _losses(single, k)
        np.testing.assert_allclose([losses[s] for s in sorted(losses)], [reference[s] for s in sorted(losses)],
                                   rtol=1e-5)
        assert (run / "train" / f"r{k}" / "ckpt" / str(steps)).is_dir()
    assert (run / "hf" / "r0" / "config.json").is_file() and (run / "report.md").is_file()
    rounds = json.loads((run / "fdd" / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["accuracy"]["test/pot"]["n"] == 8
    assert [r["split"] for r in rounds] == [r["split"] for r in fdd_reference["rounds"]]
    assert [r["step"] for r in rounds] == round_steps
    assert (json.loads((single / "stages" / "r1_teach.json").read_text())["result"]
            == json.loads((run / "stages" / "r1_teach.json").read_text())["result"])
    # process 1 printed no pipeline output: the report line and the per-round lines are process 0's
    assert "report:" in outs[0] and "report:" not in outs[1] and "round 1:" not in outs[1]

    # host work and pipeline files are process 0's; process 1 wrote nothing outside its training run
    writes = [set(json.loads((root / f"writes_{pid}.json").read_text())) for pid in range(2)]
    markers = {f"stages/{p.name}" for p in (run / "stages").iterdir()}
    assert markers >= {"stages/seed_problems.json", "stages/r0_teach.json", "stages/r0_train.json",
                       "stages/r1_eval.json", "stages/r0_export.json", "stages/r1_split.json"}
    assert markers <= writes[0] and {"config.yaml", "fdd/rounds.json", "report.md"} <= writes[0]
    assert any(w.startswith("rationales/r1/") for w in writes[0])
    assert any(w.startswith("train/r0/eval/") for w in writes[0])
    assert not [w for w in writes[1] if not w.startswith(("train/r0/ckpt/", "train/r1/ckpt/"))], writes[1]
