"""`train(cfg)` end to end on a tiny student: resume (in process, after a crash, after SIGTERM / Ctrl-C), two
processes stopped together by a preemption notice to one of them, NaN stop, checkpoint loading, and config errors
before any compile.

All runs here share one configuration up to run_dir / steps, so the compiled step is the same program:
the session's persistent compilation cache (tests/conftest.py, inherited by the subprocesses) compiles it once.
The schedule is constant after a one-step warmup, so a run with steps=6 does exactly the first 6 steps of
a run with steps=12 (with a decaying schedule the total length is part of the math).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from helpers_train import train_config_dict, write_rationales

from distill_jax import cli
from distill_jax.config import ConfigError, from_dict
from distill_jax.train import sharding as S
from distill_jax.train.checkpoint import Checkpointer, CheckpointError, load_params
from distill_jax.train.config import TrainConfig
from distill_jax.train.loop import TrainingDiverged, train
from distill_jax.train.optim import make_optimizer
from distill_jax.train.state import init_state, state_shardings

REPO = Path(__file__).resolve().parents[1]
STEPS = 12
COMMON = {"steps": STEPS, "checkpoint_every": 4, "eval_every": 4,
          "optim": {"schedule": "constant", "warmup_steps": 1}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_loop")
    rationales = write_rationales(root / "runs" / "r" / "rationales" / "0" / "mixed.jsonl", 60)
    return {"root": root, "rationales": rationales}


def _cfg_dict(env, name: str, tokenizer: Path | None, **top) -> dict:
    d = train_config_dict(env["root"] / name, env["rationales"], tokenizer or Path("unused"), **{**COMMON, **top})
    if tokenizer is None:  # train a vocab from the rationales into RUN/tokenizer
        d["model"].pop("tokenizer")
        d["model"]["tokenizer_vocab_size"] = 200
    return d


def _losses(run_dir: Path) -> dict[int, float]:
    """step -> loss from RUN/logs/metrics.jsonl, where every step must appear once (log_every is 1 here)."""
    rows = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), f"steps logged twice: {sorted(s for s in steps if steps.count(s) > 1)}"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _assert_same_params(a, b, rtol=0.0):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=0 if rtol == 0 else 1e-6)


@pytest.fixture(scope="module")
def reference(env):
    """12 steps in one go, tokenizer trained from the rationale texts."""
    cfg = from_dict(TrainConfig, _cfg_dict(env, "ref", None))
    result = train(cfg)
    run = Path(cfg.run_dir)
    return {"result": result, "run": run, "tokenizer": run / "tokenizer", "losses": _losses(run),
            "params": load_params(run)[1]}


def test_reference_run_layout(reference):
    result, run = reference["result"], reference["run"]
    assert result.step == STEPS and result.last_checkpoint == STEPS and result.startup_seconds > 0
    assert sorted(int(p.name) for p in (run / "ckpt").iterdir() if p.name.isdigit()) == [4, 8, 12]
    assert set(reference["losses"]) == set(range(1, STEPS + 1))
    assert reference["losses"][STEPS] < reference["losses"][2]
    assert result.eval_loss is not None and np.isfinite(result.eval_loss)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["config"]["steps"] == STEPS and "jax" in saved["versions"]
    config, params, tok = load_params(run)
    assert Path(tok) == run / "tokenizer" and config.d_model == 32
    assert result.data_stats["truncated"] == 0 and result.data_stats["eval_examples"] > 0


def test_stop_and_resume_sees_the_same_batches(env, reference):
    half = from_dict(TrainConfig, _cfg_dict(env, "resume", reference["tokenizer"], steps=STEPS // 2))
    assert train(half).step == STEPS // 2
    full = from_dict(TrainConfig, _cfg_dict(env, "resume", reference["tokenizer"]))
    result = train(full)
    assert result.step == STEPS
    run = Path(full.run_dir)
    assert _losses(run) == reference["losses"]  # identical batches and identical math, step for step
    _assert_same_params(load_params(run)[1], reference["params"])


def test_resume_in_another_layer_layout_is_a_clear_error(env, reference):
    """A run holding unrolled checkpoints, resumed asking for scanned layers: an error naming both and the fix."""
    train(from_dict(TrainConfig, _cfg_dict(env, "relayout", reference["tokenizer"], steps=4)))
    d = _cfg_dict(env, "relayout", reference["tokenizer"], steps=8)
    d["model"]["scan_layers"] = True
    with pytest.raises(ConfigError, match=r"unrolled layers but the config asks for scanned .*scan_layers=False"):
        train(from_dict(TrainConfig, d))


def test_resume_after_a_crash_logs_every_step_once(env, reference):
    """A run killed (SIGKILL: no handler runs) after logging steps 5-6 but saving only step 4: the rerun trains
    5-6 again and the metrics log holds each step once, with the uninterrupted run's losses."""
    crashed = from_dict(TrainConfig, _cfg_dict(env, "crashed", reference["tokenizer"], steps=6))
    train(crashed)
    run = Path(crashed.run_dir)
    shutil.rmtree(run / "ckpt" / "6")  # what a kill between the step-6 log row and its checkpoint leaves
    result = train(from_dict(TrainConfig, _cfg_dict(env, "crashed", reference["tokenizer"])))
    assert result.step == STEPS
    assert _losses(run) == reference["losses"]
    _assert_same_params(load_params(run)[1], reference["params"])


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"never saw {what}: {proc.communicate(timeout=30)[0] if proc.poll() is not None else ''}")
        time.sleep(0.02)


@contextlib.contextmanager
def _processes(procs: list[subprocess.Popen]):
    """Kill whatever is still running when the test ends, failed or not."""
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("signum,code,word", [(signal.SIGTERM, 0, "preempted"), (signal.SIGINT, 130, "interrupted")],
                         ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_ctrl_c_checkpoint_and_resume(env, reference, signum, code, word):
    """SIGTERM (a spot machine's notice) and Ctrl-C both save the step just taken and stop; the rerun resumes
    there with the uninterrupted run's batches and parameters, and every step is logged once."""
    cfg = _cfg_dict(env, f"stopped_{word}", reference["tokenizer"])
    run = Path(cfg["run_dir"])
    cfg_file = env["root"] / f"stopped_{word}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    proc_env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "distill_jax.cli", "train", "--config", str(cfg_file)],
                            env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with _processes([proc]):
        # the handlers are installed before config.yaml is written; the first step is seconds of setup later
        _wait_for(lambda: (run / "config.yaml").exists(), proc, "config.yaml")
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=240)
    assert proc.returncode == code, out
    stopped = Checkpointer(run, read_only=True).latest_step()
    assert stopped is not None and 1 <= stopped < STEPS
    assert f"{word} at step {stopped}" in out and f"ckpt/{stopped} saved" in out, out
    result = train(from_dict(TrainConfig, cfg))
    assert result.step == STEPS
    assert _losses(run) == reference["losses"]
    _assert_same_params(load_params(run)[1], reference["params"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_stop_together_on_one_sigterm_and_resume_exactly(env, reference):
    """2 processes x 4 CPU devices (jax.distributed on 127.0.0.1, gloo collectives) = the reference's 8-device data
    mesh. They resume the reference's step-4 checkpoint (a multi-process restore) and train; SIGTERM goes to
    process 1 only. JAX's preemption sync point makes both save the same step S and exit 0. The rerun (one
    process, 8 devices) resumes S and trains to S + 2 with exactly the losses and parameters of a run that was
    never stopped. The run is long enough (LONG steps) that the notice lands before its end on any machine."""
    long = 400
    cfg = _cfg_dict(env, "multi", reference["tokenizer"], steps=long, checkpoint_every=long, eval_every=0,
                    require_accelerator=False)  # a multi-process run on CPU on purpose
    run = Path(cfg["run_dir"])
    shutil.copytree(reference["run"] / "ckpt" / "4", run / "ckpt" / "4")
    cfg_file = env["root"] / "multi.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    port = _free_port()
    procs = []
    for pid in range(2):
        proc_env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
                    "DISTILL_JAX_COORDINATOR": f"127.0.0.1:{port}", "DISTILL_JAX_NUM_PROCESSES": "2",
                    "DISTILL_JAX_PROCESS_ID": str(pid), "PYTHONPATH": str(REPO)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distill_jax.cli", "train", "--config", str(cfg_file)],
            env=proc_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    with _processes(procs):
        metrics = run / "logs" / "metrics.jsonl"
        _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2, procs[0], "two steps")
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(outs)
    said = [re.findall(r"preempted at step (\d+)", out) for out in outs]
    assert said[0] and said[0] == said[1], "\n---\n".join(outs)  # both processes saved the same step
    stopped = int(said[0][0])
    assert 6 <= stopped < long and Checkpointer(run, read_only=True).latest_step() == stopped

    end = stopped + 2
    resumed = train(from_dict(TrainConfig, {**cfg, "steps": end}))
    assert resumed.step == end
    straight = from_dict(TrainConfig, _cfg_dict(env, "multi_straight", reference["tokenizer"], steps=end,
                                                checkpoint_every=long, eval_every=0))
    train(straight)
    losses, reference_losses = _losses(run), _losses(Path(straight.run_dir))
    assert sorted(losses) == list(range(5, end + 1))  # each step once: 5..S by 2 processes, the rest by one
    np.testing.assert_allclose([losses[s] for s in range(5, end + 1)],
                               [reference_losses[s] for s in range(5, end + 1)], rtol=1e-5)
    _assert_same_params(load_params(run)[1], load_params(straight.run_dir)[1], rtol=1e-5)


def test_nan_stops_and_keeps_last_good_checkpoint(env, reference):
    run = env["root"] / "nan"
    shutil.copytree(reference["run"], run)
    # an infinite example weight (same compiled program: weights are data) turns the loss into NaN
    cfg = _cfg_dict(env, "nan", reference["tokenizer"], steps=STEPS + 4,
                    data={"style_weights": {"cot": float("inf")}})
    with pytest.raises(TrainingDiverged, match=rf"at step {STEPS + 1}.*Last good checkpoint: .*ckpt/{STEPS}"):
        train(from_dict(TrainConfig, cfg))
    assert Checkpointer(run, read_only=True).all_steps() == [4, 8, 12]
    rows = (run / "logs" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[-1])["diverged"] == 1.0


def test_load_params_errors_and_restore_into_another_mesh(env, reference, tmp_path):
    run = reference["run"]
    with pytest.raises(CheckpointError, match="run dir not found"):
        load_params(tmp_path / "missing")
    with pytest.raises(CheckpointError, match=r"no checkpoint for step 5 \(available: \[4, 8, 12\]\)"):
        load_params(run, step=5)
    config, params_8, _ = load_params(run, step=8)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(params_8),
                                                        jax.tree_util.tree_leaves(reference["params"])))
    # a checkpoint written on the 8-way data mesh restored into an FSDP x tensor layout
    cfg = from_dict(TrainConfig, _cfg_dict(env, "ref", reference["tokenizer"]))
    mesh = S.make_mesh(S.MeshConfig(data=1, fsdp=4, tensor=2))
    tx, _ = make_optimizer(cfg.optim, STEPS)
    from distill_jax.model.t5 import init_params

    abstract = jax.eval_shape(lambda k: init_state(init_params(config, k), tx, 0), jax.random.PRNGKey(0))
    shardings = state_shardings(mesh, abstract)
    target = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    state, position, meta = Checkpointer(run, read_only=True).restore(target)
    assert state.params["shared"]["embedding"].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    assert int(state.step) == STEPS and position["step"] == STEPS and meta["tokenizer_dir"] == "tokenizer"
    _assert_same_params(jax.device_get(state.params), reference["params"])
    # a corrupted checkpoint is named in the error
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    for f in (broken / "ckpt" / "12" / "params").rglob("*"):
        if f.is_file() and "metadata" not in f.name:
            f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"ckpt/12: checkpoint cannot be read"):
        load_params(broken)


def test_bad_config_fails_before_any_compile(env, reference, tmp_path):
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    tok = reference["tokenizer"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(env["rationales"].read_text().splitlines()[0] + "\n" + '{"problem_id": "x", "question": "q"}\n')
    try:
        cases = [
            ({"data": {"rationales": [str(broken)]}}, r"broken.jsonl:2: rationale record lacks style, rationale"),
            ({"data": {"rationales": [str(tmp_path / "nope.jsonl")]}}, "matches no JSONL file"),
            ({"model": {"init": str(tmp_path / "no_model")}}, "neither 'scratch' nor a Hugging Face model dir"),
            ({"model": {"tokenizer": str(tmp_path / "no_tok")}}, "model.tokenizer: directory not found"),
            ({"mesh": {"data": 3}}, "uses 3 devices but 8"),
            ({"batch_size": 12}, "multiple of data-parallel size 8"),
            ({"model": {"overrides": {"d_modle": 8}}}, "unknown T5Config field"),
            ({"model": {"preset": "t5-huge"}}, "model preset 't5-huge' is unknown"),
        ]
        for top, message in cases:
            d = _cfg_dict(env, "bad", tok, **top)
            with pytest.raises(ConfigError, match=message):
                train(from_dict(TrainConfig, d))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    # through the CLI: exit code 2 and the message
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_cfg_dict(env, "bad", tok, optim={"learning_rate": -1.0})))
    assert cli.main(["train", "--config", str(bad)]) == 2


def test_hf_directory_initialises_training(env, reference, tmp_path):
    """model.init = a HF directory (what FDD's continued rounds and Flan-T5 users use): the student starts from
    exactly those weights and that tokenizer."""
    from distill_jax.model.hf import save_hf

    config, params, tok = load_params(reference["run"])
    hf_dir = save_hf(params, config, tmp_path / "hf", tokenizer_dir=tok)
    d = _cfg_dict(env, "from_hf", None, steps=1, optim={"learning_rate": 1e-12, "schedule": "constant",
                                                          "warmup_steps": 0})
    d["model"] = {"init": str(hf_dir)}
    cfg = from_dict(TrainConfig, d)
    result = train(cfg)
    assert result.step == 1
    _, trained, tok_dir = load_params(cfg.run_dir)
    assert Path(tok_dir).resolve() == Path(hf_dir).resolve()
    _assert_same_params(trained, params, rtol=1e-6)
    # a trained student starts far below the from-scratch reference's first loss
    assert _losses(Path(cfg.run_dir))[1] < reference["losses"][1]
