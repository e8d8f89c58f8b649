"""The prepared check for one GPU: everything a CPU cannot measure, in one script of at most 8 minutes.

  PYTHONPATH=$PWD python benchmarks/gpu_check.py [--out DIR] [--write-docs]   # on the GPU machine
  PYTHONPATH=$PWD python benchmarks/gpu_check.py --cpu                        # dry run: every step, tiny sizes

Runs from the working tree (no install) with what the reference GPU machine has: jax + the CUDA plugin, flax,
optax, orbax, transformers, torch, sentencepiece; no `datasets`, no network. Steps, each printed as it ends:
1. `distill-jax env` (backend, devices, memory, versions, flags, caches).
2. Parity with transformers' PyTorch T5 (fp32 on the CPU, the reference) on tiny v1.0 and v1.1 models: logits,
   loss and gradients of our T5 on the device in fp32 at `highest` matmul precision (tolerance 1e-4, the CPU
   suite's), in fp32 at the default precision (TF32 on NVIDIA: tolerance 1e-2) and with bf16 compute (5e-2, the
   suite's bf16 bound). With pytest installed, tests/test_t5_parity.py's forward, gradient, bf16 and cached-decode
   tests also run on the device (at highest precision).
3. A flan-t5-base-shaped student (d_model 768, 12+12 layers, vocab 32128) from random weights in bf16, trained by
   the production loop (`train()`, require_accelerator on) for a few hundred steps on synthetic PoT rationales
   (the symbolic teacher): the loss must fall, no NaN; target tokens/s after the first window, peak device
   memory from memory_stats().
4. Greedy decoding (KV cache) with that student: new tokens/s at batch 32 and 128 new tokens.
5. benchmarks/gpu_speed.py (flan-t5-large against HF, another check) when it exists, within what is left of the
   8 minutes.
A failed step prints FAIL with the reason and the script goes on; the exit code is 1 when any step failed.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # helpers_hf / helpers_train: the parity tests' HF models and batches
BUDGET_S = 8 * 60


@dataclasses.dataclass(frozen=True)
class Sizes:
    preset: str
    overrides: dict
    steps: int
    batch: int
    problems: int
    decode_batch: int
    decode_tokens: int


GPU = Sizes("flan-t5-base", {"vocab_size": 32128}, steps=300, batch=32, problems=4000, decode_batch=32,
            decode_tokens=128)
CPU = Sizes("tiny", {"d_model": 32, "d_kv": 8, "num_heads": 4, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2},
            steps=6, batch=8, problems=64, decode_batch=4, decode_tokens=8)
# Relative errors against HF fp32 (logits: max error / max |logit|; gradients: per parameter, error norm / norm).
# fp32 at highest precision: the CPU suite's 1e-4. The default precision is TF32 on NVIDIA (10-bit mantissa,
# ~1e-3 per product). bf16 (8 bits): the suite's 5% of the logits' scale; gradients of the small tensors
# (relative-position bias, norms) sum many rounded terms and reach ~7% on the tiny v1.0 model, where a wrong
# gradient is off by ~100%.
TOLERANCE = {"fp32 highest": {"logits": 1e-4, "loss": 1e-4, "grads": 1e-4},
             "fp32 default": {"logits": 1e-2, "loss": 1e-2, "grads": 5e-2},
             "bf16": {"logits": 5e-2, "loss": 2e-2, "grads": 0.15}}


def step_env() -> dict:
    from distill_jax import cli

    if cli.main(["env"]) != 0:
        raise RuntimeError("distill-jax env failed")
    from distill_jax.train.runtime import environment_report

    return {"backend": environment_report()["backend"]}


def _parity_one(family: str, tmp: Path, modes: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Relative errors of logits, loss and gradients against HF fp32 on the CPU, per precision mode."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import traverse_util
    from helpers_hf import make_tiny_hf_t5
    from helpers_train import random_batch

    from distill_jax.model.hf import load_hf, name_pairs
    from distill_jax.model.t5 import T5, shift_right
    from distill_jax.train.step import loss_sums

    hf_dir, torch_model = make_tiny_hf_t5(tmp, family, vocab_size=200)
    batch = random_batch(np.random.default_rng(0), 4, 12, 10, 200)
    out = torch_model(**{k: torch.tensor(batch[k], dtype=torch.long) for k in ("input_ids", "attention_mask",
                                                                               "labels")})
    out.loss.backward()
    ref_grads = {n: p.grad.numpy() for n, p in torch_model.named_parameters()}
    ref_logits = out.logits.detach().numpy()
    config, params = load_hf(hf_dir)
    params = jax.device_put(params, jax.devices()[0])

    def loss_fn(p, cfg):
        total, aux = loss_sums(p, batch, cfg, None)
        return total / aux["weight_sum"]

    def logits_fn(p, cfg):
        labels = jnp.asarray(batch["labels"])
        return T5(cfg).apply({"params": p}, batch["input_ids"], batch["attention_mask"],
                             shift_right(labels, cfg.decoder_start_token_id, cfg.pad_token_id))

    results = {}
    for mode in modes:
        cfg = dataclasses.replace(config, dtype="bfloat16" if mode == "bf16" else "float32")
        with jax.default_matmul_precision("highest" if mode == "fp32 highest" else None):
            logits = np.asarray(jax.jit(logits_fn, static_argnums=1)(params, cfg), np.float32)
            loss, grads = jax.jit(jax.value_and_grad(loss_fn), static_argnums=1)(params, cfg)
        flat = traverse_util.flatten_dict(jax.device_get(grads), sep="/")
        grad_err = max(
            np.linalg.norm((np.asarray(flat[ours]).T if t else np.asarray(flat[ours])) - ref_grads[theirs])
            / max(np.linalg.norm(ref_grads[theirs]), 1e-12) for ours, theirs, t in name_pairs(config))
        results[mode] = {"logits": float(np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()),
                         "loss": float(abs(float(loss) - out.loss.item()) / abs(out.loss.item())),
                         "grads": float(grad_err)}
    return results


def step_parity(args: argparse.Namespace, tmp: Path) -> dict:
    report: dict[str, Any] = {}
    failures = []
    # the dry run keeps its compiles few: one family, and no "default" precision (the CPU's is the highest)
    families, modes = (("v1_1",), ("fp32 highest", "bf16")) if args.cpu else (("v1_0", "v1_1"), tuple(TOLERANCE))
    for family in families:
        report[family] = _parity_one(family, tmp / family, modes)
        for mode, errors in report[family].items():
            bound = TOLERANCE[mode]
            print(f"  {family} {mode:12s} relative error (tolerance): " + ", ".join(
                f"{k} {v:.1e} ({bound[k]:.0e})" for k, v in errors.items()))
            failures += [f"{family} {mode} {k} {v:.1e} > {bound[k]:.0e}" for k, v in errors.items() if not v < bound[k]]
    if not args.cpu and importlib.util.find_spec("pytest"):
        env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_DEFAULT_MATMUL_PRECISION": "highest"}
        # the device's share of the suite's parity tests: forward, gradients, bf16, cached decoding
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                              "matches_hf or bf16 or cached_decode", str(REPO / "tests" / "test_t5_parity.py")],
                             env=env, cwd=REPO, capture_output=True, text=True, timeout=150)
        report["pytest tests/test_t5_parity.py"] = out.stdout.strip().splitlines()[-1] if out.stdout else out.stderr
        print(f"  pytest tests/test_t5_parity.py on the device: {report['pytest tests/test_t5_parity.py']}")
        if out.returncode:
            failures.append(f"tests/test_t5_parity.py: {out.stdout[-2000:]}")
    elif not args.cpu:
        report["pytest tests/test_t5_parity.py"] = "not run: pytest is not installed"
    if failures:
        raise AssertionError("; ".join(failures))
    return report


def _rationales(path: Path, n: int) -> Path:
    from distill_jax.data.synthetic import generate
    from distill_jax.teacher.symbolic import SymbolicTeacher

    teacher = SymbolicTeacher()
    with path.open("w", encoding="utf-8") as f:
        for p in generate(n, seed=0, min_steps=1, max_steps=3):
            f.write(json.dumps({"problem_id": p.id, "question": p.question, "answer": p.answer, "style": "pot",
                                "rationale": teacher.rationale(p, "pot"), "correct": True}) + "\n")
    return path


def step_train(args: argparse.Namespace, sizes: Sizes, tmp: Path, state: dict) -> dict:
    import jax

    from distill_jax.config import from_dict
    from distill_jax.train.checkpoint import load_params
    from distill_jax.train.config import TrainConfig
    from distill_jax.train.loop import train

    run = tmp / "student"
    cfg = from_dict(TrainConfig, {
        "run_dir": str(run), "seed": 0, "batch_size": sizes.batch, "steps": sizes.steps,
        "log_every": max(sizes.steps // 10, 1), "eval_every": 0, "checkpoint_every": 10 * sizes.steps,
        "progress": False, "require_accelerator": not args.cpu,
        "model": {"init": "scratch", "preset": sizes.preset, "overrides": sizes.overrides, "dtype": "bfloat16",
                  "dropout_rate": 0.0, "tokenizer_vocab_size": 1000},
        "data": {"rationales": [str(_rationales(tmp / "pot.jsonl", sizes.problems))], "buckets": [[96, 128]],
                 "eval_fraction": 0.0},
        "optim": {"name": "adamw", "learning_rate": 1e-3, "schedule": "linear", "warmup_steps": sizes.steps // 10,
                  "clip_norm": 1.0}})
    result = train(cfg)
    rows = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    first, last = rows[0]["loss"], rows[-1]["loss"]
    steady = [r["tokens_per_second"] for r in rows[1:]] or [result.tokens_per_second]
    stats = jax.local_devices()[0].memory_stats() or {}
    config, params, tokenizer_dir = load_params(run)
    state.update(config=config, params=params, tokenizer_dir=tokenizer_dir, rationales=tmp / "pot.jsonl")
    report = {"params_millions": sum(x.size for x in jax.tree_util.tree_leaves(params)) / 1e6,
              "steps": result.step, "loss_first_window": first, "loss_last_window": last,
              "target_tokens_per_second": sum(steady) / len(steady), "startup_s": result.startup_seconds,
              "peak_device_memory_gb": stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None}
    print(f"  {report['params_millions']:.1f}M params, loss {first:.3f} -> {last:.3f} over {result.step} steps, "
          f"{report['target_tokens_per_second']:,.0f} target tokens/s after the first window, first step after "
          f"{result.startup_seconds:.0f} s, peak device memory {_gb(report['peak_device_memory_gb'])}")
    if not last < first:
        raise AssertionError(f"the loss did not fall: {first} -> {last}")
    return report


def step_decode(sizes: Sizes, state: dict) -> dict:
    import jax
    import numpy as np

    from distill_jax.model.decode import greedy
    from distill_jax.model.tokenizer import Tokenizer
    from distill_jax.reasoning.styles import student_input

    tok = Tokenizer.load(state["tokenizer_dir"])
    rows = [json.loads(line) for line in state["rationales"].read_text().splitlines()[:sizes.decode_batch]]
    ids = tok.encode_batch([student_input(r["question"], "pot") for r in rows])
    width = max(len(i) for i in ids)
    input_ids = np.zeros((len(ids), width), np.int32)
    for r, i in enumerate(ids):
        input_ids[r, :len(i)] = i
    mask = (input_ids != tok.pad_id).astype(np.int32)
    def run():  # eos_id -1 never matches: every row decodes all decode_tokens steps
        return jax.block_until_ready(greedy(state["params"], state["config"], input_ids, mask, sizes.decode_tokens,
                                            eos_id=-1))

    run()  # compile
    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    report = {"batch": len(ids), "new_tokens": sizes.decode_tokens, "seconds": seconds,
              "new_tokens_per_second": len(ids) * sizes.decode_tokens / seconds}
    print(f"  greedy, batch {len(ids)}, {sizes.decode_tokens} new tokens (no early stop): {seconds:.3f} s, "
          f"{report['new_tokens_per_second']:,.0f} new tokens/s")
    return report


def step_gpu_speed(deadline: float) -> dict:
    script = REPO / "benchmarks" / "gpu_speed.py"
    if not script.is_file():
        return {"status": "not run: benchmarks/gpu_speed.py is not in this tree"}
    left = int(deadline - time.time())
    if left < 30:
        return {"status": f"not run: {left} s left of the {BUDGET_S // 60}-minute budget"}
    try:
        out = subprocess.run([sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO,
                             timeout=left, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except subprocess.TimeoutExpired as e:
        print((e.stdout or "")[-4000:] if isinstance(e.stdout, str) else "")
        raise AssertionError(f"gpu_speed.py did not finish in the {left} s left") from e
    print(out.stdout[-6000:])
    if out.returncode:
        raise AssertionError(f"gpu_speed.py exited {out.returncode}")
    return {"status": "ran", "output_tail": out.stdout[-2000:]}


def _gb(value: float | None) -> str:
    return f"{value:.1f} GB" if value is not None else "n/a (the backend keeps no memory stats)"


def _outcome(status: dict, result: dict) -> str:
    if not status.get("ok"):
        return "FAIL: " + status.get("error", "")
    return str(result.get("status", "ok")) if isinstance(result, dict) else "ok"


def _section(summary: dict) -> str:
    t, d = summary["steps"].get("train", {}), summary["steps"].get("decode", {})
    lines = ["## GPU check (benchmarks/gpu_check.py)", "",
             "| step | result |", "|---|---|"]
    lines += [f"| {name} | {_outcome(s, summary['steps'].get(name, {}))} ({s['seconds']:.0f} s) |"
              for name, s in summary["status"].items()]
    if t:
        lines += ["", f"{summary['preset']} shape, bf16, random init: loss {t['loss_first_window']:.3f} -> "
                  f"{t['loss_last_window']:.3f} in {t['steps']} steps; {t['target_tokens_per_second']:,.0f} target "
                  f"tokens/s; peak device memory {_gb(t['peak_device_memory_gb'])}."]
    if d:
        lines += [f"Greedy decode: batch {d['batch']}, {d['new_tokens']} new tokens: {d['new_tokens_per_second']:,.0f} "
                  "new tokens/s."]
    lines += ["", f"Command: `PYTHONPATH=$PWD python benchmarks/gpu_check.py --write-docs`; device: "
              f"{summary['device']}; {summary['seconds']:.0f} s in all; {time.strftime('%Y-%m-%d')}"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="dry run on the CPU with tiny sizes (CI)")
    ap.add_argument("--out", help="directory for summary.json (default: a temporary directory)")
    ap.add_argument("--write-docs", action="store_true", help="write the figures into docs/benchmarks.md")
    args = ap.parse_args()
    if args.cpu:
        os.environ["JAX_PLATFORMS"] = "cpu"
    from distill_jax.train.runtime_env import use_compilation_cache

    use_compilation_cache()
    import jax

    from distill_jax.train.loop import quiet_checkpoint_logs

    quiet_checkpoint_logs()

    started, deadline = time.time(), time.time() + BUDGET_S
    sizes = CPU if args.cpu else GPU
    summary: dict[str, Any] = {"device": str(jax.devices()[0].device_kind), "preset": sizes.preset, "steps": {},
                               "status": {}}
    state: dict = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        steps: list[tuple[str, Callable[[], dict]]] = [
            ("env", step_env), ("parity", lambda: step_parity(args, tmp)),
            ("train", lambda: step_train(args, sizes, tmp, state)), ("decode", lambda: step_decode(sizes, state)),
            ("gpu_speed", (lambda: {"status": "not run: --cpu"}) if args.cpu else (lambda: step_gpu_speed(deadline)))]
        for name, fn in steps:
            print(f"== {name} ==", flush=True)
            t0 = time.time()
            try:
                summary["steps"][name] = fn()
                summary["status"][name] = {"ok": True, "seconds": time.time() - t0}
            except Exception as e:  # one step's failure is reported; the others still run
                traceback.print_exc()
                summary["status"][name] = {"ok": False, "seconds": time.time() - t0, "error": f"{type(e).__name__}: "
                                           f"{str(e)[:500]}"}
                print(f"FAIL {name}: {summary['status'][name]['error']}", flush=True)
    summary["seconds"] = time.time() - started
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check_"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(_section(summary))
    print(f"summary: {out / 'summary.json'}")
    if args.write_docs and not args.cpu:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from docs_section import write_section

        write_section("gpu_check", _section(summary))
    over = summary["seconds"] > BUDGET_S
    if over:
        print(f"FAIL budget: {summary['seconds']:.0f} s > {BUDGET_S} s")
    return 1 if over or not all(s["ok"] for s in summary["status"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
