"""Training throughput: our jitted, bucketed, data-parallel T5 step vs HF PyTorch T5 with its usual setup.

The same model (one HF T5 saved to disk, loaded by both sides), the same real data (GSM8K train: question
-> the human solution as a CoT target, calculator annotations removed), the same tokenizer (a
SentencePiece vocab trained on those texts), batch 32, AdamW. Each side runs in its own subprocess (so its
peak RSS is its own) one after the other (so they do not compete for the cores):
  ours: 2 virtual CPU devices, data parallel, 4 fixed-shape length buckets fitted to the data
        (`data.auto_buckets: 4`; each compiled once, compile time reported apart), the production train_step;
  HF:   T5ForConditionalGeneration, dynamic padding to the longest row per batch, torch.optim.AdamW,
        torch threads = cores.
Throughput = non-padding target tokens per second over the measured steps (after warm-up steps).

  .venv/bin/python benchmarks/train.py [--steps 12] [--write-docs]

Two more measurements of the training loop itself (`distill_jax.train.loop.train`), 2 virtual CPU devices:
`--startup`: `distill-jax train` with an empty compilation cache, then again with the same shapes;
`--loop-baseline REV`: this checkout's loop (batches, steps, metrics, the final checkpoint) against the loop at
git revision REV on the same data, model and config: one run fills the shared compilation cache, then
`--repeats` measured runs per side, alternating, each reporting the loop's own target tokens/s, for the model
above and a small one (d_model 64) whose steps are short enough for the host's share to show (`--sizes`).

  .venv/bin/python benchmarks/train.py --startup [--steps 8] [--write-docs]
  .venv/bin/python benchmarks/train.py --loop-baseline ca3c882 [--steps 60] [--sizes small] [--write-docs]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from docs_section import write_section

REPO = Path(__file__).resolve().parents[1]
BATCH = 32
MODEL = {"d_model": 256, "d_kv": 64, "num_heads": 4, "d_ff": 1024, "num_layers": 4}  # FACTS.md's reference size
SMALL = {"d_model": 64, "d_kv": 16, "num_heads": 4, "d_ff": 256, "num_layers": 2}  # host work shows beside it
SIZES = {"reference": MODEL, "small": SMALL}
VOCAB = 1000
N_BUCKETS = 4


def _cot_target(solution: str) -> str:
    body, answer = solution.rsplit("####", 1)
    body = re.sub(r"<<[^>]*>>", "", body).strip()
    return f"{body}\nThe answer is {answer.strip()}."


def prepare(work: Path, n: int, data_dir: str | None = None, model: dict = MODEL) -> dict:
    """Tokenised (input, target) id lists, the rationale file and the HF model dir, written under `work`."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from distill_jax.data.problems import load_problems
    from distill_jax.model.tokenizer import train_tokenizer
    from distill_jax.reasoning.styles import student_input

    problems = load_problems("gsm8k_train", data_dir)[:n]
    inputs = [student_input(p.question, "cot") for p in problems]
    targets = [_cot_target(p.extra["solution"]) for p in problems]
    tok = train_tokenizer(inputs + targets, work / "tokenizer", VOCAB)
    data = {"inputs": tok.encode_batch(inputs), "targets": tok.encode_batch(targets), "pad_id": tok.pad_id}
    (work / "data.json").write_text(json.dumps(data))
    with (work / "rationales.jsonl").open("w") as f:  # the same pairs as rationale records, for the loop
        for i, (p, target) in enumerate(zip(problems, targets)):
            f.write(json.dumps({"problem_id": f"p{i}", "question": p.question, "answer": p.answer, "style": "cot",
                                "rationale": target, "correct": True}) + "\n")
    torch.manual_seed(0)
    config = T5Config(vocab_size=tok.vocab_size, num_decoder_layers=model["num_layers"], dropout_rate=0.0,
                      feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0, **model)
    T5ForConditionalGeneration(config).save_pretrained(work / "hf")
    return data


def run_ours(work: Path, steps: int, warmup: int) -> dict:
    import jax

    from distill_jax.model.hf import load_hf
    from distill_jax.train import batches as B
    from distill_jax.train import sharding as S
    from distill_jax.train.optim import OptimConfig, make_optimizer
    from distill_jax.train.state import init_state, state_shardings
    from distill_jax.train.step import jit_train_step

    data = json.loads((work / "data.json").read_text())
    encoded = list(zip(data["inputs"], data["targets"]))
    buckets = B.suggest_buckets(encoded, N_BUCKETS)  # what `data.auto_buckets: 4` does in a train config
    records = [{"style": "cot", "meta": {}}] * len(encoded)
    examples, _ = B.tokenize(records, None, B.DataConfig(), buckets, encoded)
    config, params = load_hf(work / "hf")
    mesh = S.make_mesh(S.MeshConfig(data=-1))
    tx, schedule = make_optimizer(OptimConfig(name="adamw", learning_rate=1e-3, schedule="constant",
                                              clip_norm=None, no_decay=""), steps)
    abstract = jax.eval_shape(lambda p: init_state(p, tx, 0), params)
    shardings = state_shardings(mesh, abstract)
    state = jax.jit(lambda p: init_state(p, tx, 0), out_shardings=shardings)(params)
    batch_sh = S.batch_sharding(mesh)
    step = jit_train_step(config, tx, schedule, 1, shardings, batch_sh)
    t0 = time.perf_counter()
    for b, shape in enumerate(buckets):  # compile each bucket shape once, outside the measurement
        rows = np.array([i for i, e in enumerate(examples) if e.bucket == b][:BATCH])
        rows = np.pad(rows, (0, BATCH - len(rows)), constant_values=-1)
        state, m = step(state, B.to_global(B.build_rows(examples, rows, shape, data["pad_id"]), batch_sh, BATCH))
        jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    it = B.BatchIterator(examples, buckets, BATCH, seed=0, sharding=batch_sh, pad_id=data["pad_id"])
    for _ in range(warmup):
        state, m = step(state, next(it))
    jax.block_until_ready(m)
    tokens, t0 = 0.0, time.perf_counter()
    for _ in range(steps):
        state, m = step(state, next(it))
        tokens += float(m["tokens"])  # also syncs, as a training loop that logs every step does
    wall = time.perf_counter() - t0
    return {"tokens": tokens, "seconds": wall, "compile_s": compile_s, "devices": len(jax.devices()),
            "buckets": buckets, "loss": float(m["loss"])}


def run_hf(work: Path, steps: int, warmup: int) -> dict:
    import torch
    from transformers import T5ForConditionalGeneration

    torch.set_num_threads(os.cpu_count() or 1)
    data = json.loads((work / "data.json").read_text())
    model = T5ForConditionalGeneration.from_pretrained(work / "hf")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    order = np.random.default_rng(0).permutation(len(data["inputs"]))
    pad = data["pad_id"]

    def batch(k: int) -> dict:
        rows = order[(k * BATCH) % len(order):][:BATCH]
        li = max(len(data["inputs"][r]) for r in rows)
        lt = max(len(data["targets"][r]) for r in rows)
        ids = torch.full((len(rows), li), pad, dtype=torch.long)
        labels = torch.full((len(rows), lt), -100, dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, :len(data["inputs"][r])] = torch.tensor(data["inputs"][r])
            labels[j, :len(data["targets"][r])] = torch.tensor(data["targets"][r])
        return {"input_ids": ids, "attention_mask": (ids != pad).long(), "labels": labels}

    def train_step(b: dict) -> float:
        loss = model(**b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for k in range(warmup):
        train_step(batch(k))
    tokens, t0 = 0, time.perf_counter()
    for k in range(warmup, warmup + steps):
        b = batch(k)
        loss = train_step(b)
        tokens += int((b["labels"] != -100).sum())
    return {"tokens": tokens, "seconds": time.perf_counter() - t0, "compile_s": 0.0,
            "threads": torch.get_num_threads(), "loss": loss}


def loop_config(work: Path, steps: int, run_name: str) -> dict:
    """A TrainConfig mapping for `work`'s data and model, with only keys the baseline revision knows too."""
    return {
        "run_dir": str(work / "runs" / run_name), "seed": 0, "batch_size": BATCH, "steps": steps, "log_every": 10,
        "eval_every": 0, "checkpoint_every": 10 * steps, "progress": False,
        "model": {"init": str(work / "hf"), "tokenizer": str(work / "tokenizer")},
        "data": {"rationales": [str(work / "rationales.jsonl")], "auto_buckets": N_BUCKETS, "eval_fraction": 0.0},
        "optim": {"name": "adamw", "learning_rate": 1e-3, "schedule": "constant", "clip_norm": None, "no_decay": ""},
        "mesh": {"data": -1}}


def run_loop(work: Path, steps: int, run_name: str) -> dict:
    """The production loop of whichever checkout is first on PYTHONPATH, on `work`'s data and model."""
    from distill_jax.config import from_dict
    from distill_jax.train.config import TrainConfig
    from distill_jax.train.loop import train

    cfg = from_dict(TrainConfig, loop_config(work, steps, run_name))
    t0 = time.perf_counter()
    result = train(cfg)
    return {"tokens_per_second": result.tokens_per_second, "wall_s": time.perf_counter() - t0,
            "loss": result.final_metrics["loss"]}


def _run_child(args: list[str], env: dict, what: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(side: str, work: Path, steps: int, warmup: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    if side == "ours":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"
    return _run_child(["--child", side, "--work", str(work), "--steps", str(steps), "--warmup", str(warmup)], env,
                      side)


def _loop_child(tree: Path, work: Path, steps: int, run_name: str, cache: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tree), "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    return _run_child(["--child", "loop", "--work", str(work), "--steps", str(steps), "--run", run_name], env,
                      f"loop of {tree}")


def measure_startup(args: argparse.Namespace) -> None:
    """`distill-jax train` with an empty compilation cache, then again with the same shapes (another run dir)."""
    import yaml

    load = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work, args.problems, args.data_dir)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "JAX_COMPILATION_CACHE_DIR":
               str(work / "xla_cache"), "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        env.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)  # the CLI's own default
        for name in ("empty cache", "second run, same shapes"):
            cfg = work / f"{len(runs)}.yaml"
            cfg.write_text(yaml.safe_dump(loop_config(work, args.steps, f"startup{len(runs)}")))
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "distill_jax.cli", "train", "--config", str(cfg)], env=env,
                                 capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t0
            if out.returncode:
                raise SystemExit(f"train failed:\n{out.stderr[-3000:]}")
            first = float(re.search(r"first step after ([\d.]+) s", out.stdout).group(1))
            entries = sum(1 for _ in (work / "xla_cache").iterdir())
            runs.append((name, first, wall, entries))
    cmd = f"XLA_FLAGS= .venv/bin/python benchmarks/train.py --startup --steps {args.steps} --problems {args.problems}"
    lines = ["## Start-up with the shared compilation cache", "",
             f"`distill-jax train` of the T5 above (HF init, {N_BUCKETS} buckets: {N_BUCKETS} train-step programs), "
             f"{args.steps} steps, 2 virtual CPU devices; the first run fills an empty cache, the second (a new run dir, "
             "the same shapes) loads from it.", "",
             "| run | first step after (s) | whole command (s) | cache entries after |", "|---|---|---|---|"]
    lines += [f"| {name} | {first:.1f} | {wall:.1f} | {entries} |" for name, first, wall, entries in runs]
    lines += ["", "First step after: from train() to the first step's result (setup, restore or init, compile or "
              "cache load); the whole command adds imports, the other buckets' programs and the steps.", "",
              f"Command: `{cmd} --write-docs`  ",
              f"Machine: nproc {os.cpu_count()}, load average at start {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}, "
              f"at end {os.getloadavg()[0]:.1f} (a shared machine)  ", f"Date: {time.strftime('%Y-%m-%d')}"]
    section = "\n".join(lines)
    print(section)
    if args.write_docs:
        write_section("train_startup", section)


def compare_loops(args: argparse.Namespace) -> None:
    """This checkout's loop against the loop at args.loop_baseline, side by side (see the module docstring)."""
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.loop_baseline, "distill_jax"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        trees = {f"baseline {args.loop_baseline}": base, "this checkout": REPO}
        for name in args.sizes:
            model = SIZES[name]
            work = Path(tmp) / name
            prepare(work, args.problems, args.data_dir, model)
            cache = work / "xla_cache"
            # fill the compilation cache (both sides' step programs are the same): every measured run loads
            _loop_child(base, work, N_BUCKETS * 4, "warm", cache)
            figures = {side: [] for side in trees}
            for r in range(args.repeats):
                for side, tree in trees.items():
                    figures[side].append(_loop_child(tree, work, args.steps, f"{side[:4]}{r}", cache))
            rows.append((name, model, figures))
    cmd = (f"XLA_FLAGS= .venv/bin/python benchmarks/train.py --loop-baseline {args.loop_baseline} --steps "
           f"{args.steps} --repeats {args.repeats} --problems {args.problems} --sizes {' '.join(args.sizes)} "
           "--write-docs")
    lines = [
        "## Training loop: the host waiting for the device, before and after",
        "",
        f"`distill_jax.train.loop.train` as it is at {args.loop_baseline} (metrics fetched from the device after every "
        "step, batches built on the main thread between steps) against this checkout's (metrics fetched every "
        "`log_every` = 10 steps, batches built ahead on a thread). Same data (GSM8K train, CoT targets), same HF "
        f"T5 init, batch {BATCH}, AdamW, 4 buckets, 2 virtual CPU devices, {args.steps} steps per run, each side's "
        "compiled programs loaded from one shared compilation cache; runs alternate between the sides. "
        "Figure: the loop's own target tokens/s (its wall time, final checkpoint included), each run.",
        "",
        "| model | loop | target tokens/s per run | mean | train() wall per run (s) |",
        "|---|---|---|---|---|",
    ]
    for name, model, figures in rows:
        for side, runs in figures.items():
            tps = [f["tokens_per_second"] for f in runs]
            walls = ", ".join(f"{f['wall_s']:.0f}" for f in runs)
            lines.append(f"| {name} (d_model {model['d_model']}, {model['num_layers']}+{model['num_layers']} layers) | "
                         f"{side} | {', '.join(f'{t:,.0f}' for t in tps)} | {np.mean(tps):,.0f} | {walls} |")
    lines += ["", "The wall time adds the set-up (data, tokenizer, restore, cache loads) to the loop.", "",
              f"Command: `{cmd}`  ",
              f"Machine: nproc {os.cpu_count()}, load average at start {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}, "
              f"at end {os.getloadavg()[0]:.1f} (a shared machine: other jobs ran on the same 2 cores)  ",
              f"Date: {time.strftime('%Y-%m-%d')}"]
    section = "\n".join(lines)
    print(section)
    if args.write_docs:
        write_section("train_loop", section)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--problems", type=int, default=2048)
    ap.add_argument("--data-dir", default=os.environ.get("DISTILL_JAX_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--loop-baseline", metavar="REV", help="compare the whole training loop with the one at REV")
    ap.add_argument("--repeats", type=int, default=2, help="measured runs per side (--loop-baseline)")
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES), help="models (--loop-baseline)")
    ap.add_argument("--startup", action="store_true", help="measure `distill-jax train` start-up, cache cold and warm")
    ap.add_argument("--child", choices=["ours", "hf", "loop"])
    ap.add_argument("--work")
    ap.add_argument("--run")
    args = ap.parse_args()
    if args.child == "loop":
        print(json.dumps(run_loop(Path(args.work), args.steps, args.run)))
        return
    if args.loop_baseline:
        compare_loops(args)
        return
    if args.startup:
        measure_startup(args)
        return
    if args.child:
        res = (run_ours if args.child == "ours" else run_hf)(Path(args.work), args.steps, args.warmup)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare(work, args.problems, args.data_dir)
        results = {side: _child(side, work, args.steps, args.warmup) for side in ("ours", "hf")}
    tps = {k: r["tokens"] / r["seconds"] for k, r in results.items()}
    mean_tgt = sum(len(t) for t in data["targets"]) / len(data["targets"])
    cmd = "XLA_FLAGS= .venv/bin/python benchmarks/train.py " + " ".join(
        f"--{k} {v}" for k, v in (("steps", args.steps), ("warmup", args.warmup), ("problems", args.problems))) \
        + " --write-docs"
    o, h = results["ours"], results["hf"]
    section = "\n".join([
        "## Training throughput (ours vs HF PyTorch)",
        "",
        f"T5 d_model {MODEL['d_model']}, {MODEL['num_layers']}+{MODEL['num_layers']} layers, {MODEL['num_heads']} "
        f"heads, d_ff {MODEL['d_ff']}, vocab {VOCAB} (a SentencePiece vocab trained on the texts), fp32, the same "
        f"initial weights on both sides; {args.problems} GSM8K train problems, input `[cot] question`, target the "
        f"human solution (annotations removed; {mean_tgt:.0f} target tokens on average); batch {BATCH}, AdamW lr "
        f"1e-3; {args.steps} measured steps after {args.warmup} warm-up steps; each side in its own process, one "
        "after the other.",
        "",
        "| | setup | target tokens/s | s/step | compile (s) | peak RSS (MB) | loss at end |",
        "|---|---|---|---|---|---|---|",
        f"| ours | {o['devices']} virtual CPU devices, data parallel, buckets {o['buckets']} | {tps['ours']:,.0f} | "
        f"{o['seconds'] / args.steps:.2f} | {o['compile_s']:.1f} | {o['peak_rss_mb']:,.0f} | {o['loss']:.3f} |",
        f"| HF transformers | eager PyTorch, {h['threads']} threads, dynamic padding per batch | {tps['hf']:,.0f} | "
        f"{h['seconds'] / args.steps:.2f} | - | {h['peak_rss_mb']:,.0f} | {h['loss']:.3f} |",
        "",
        f"Speed-up: **{tps['ours'] / tps['hf']:.2f}x** target tokens/s (goal >= 1.3x on 2 cores). "
        "The losses differ because the two sides see the batches in different orders.",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: nproc {os.cpu_count()}, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}; load average at start {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} "
        "(a shared machine)  ",
        f"Date: {time.strftime('%Y-%m-%d')}",
    ])
    print(section)
    if args.write_docs:
        write_section("train", section)


if __name__ == "__main__":
    main()
