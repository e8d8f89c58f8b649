"""Greedy decoding speed, ours (jitted KV-cache loop) vs transformers' PyTorch `generate`, side by side.

Same random weights on both sides (a HF model saved and read back through model/hf.py), same inputs, and the
same work: every row decodes exactly --new-tokens tokens (ours: an EOS id that never occurs; HF:
min_new_tokens), so tokens/s compare like with like. Writes a table to docs/benchmarks.md between
`<!-- decode:begin -->` and `<!-- decode:end -->` (other sections of that file are left alone).

    .venv/bin/python benchmarks/decode.py            # tiny and t5-small, batch 32 and 128, 64 new tokens
"""
from __future__ import annotations

import os

# Two virtual CPU devices let the batch-sharded run keep both cores busy; must be set before jax loads.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from transformers import T5Config as HFConfig, T5ForConditionalGeneration

from docs_section import write_section

from distill_jax.model import decode
from distill_jax.model.hf import config_to_hf, load_hf
from distill_jax.model.t5 import T5Config

SHAPES = {
    # FACTS.md's reference tiny student and t5-small's shapes; random weights.
    "tiny": T5Config(vocab_size=1000, d_model=256, d_kv=64, d_ff=1024, num_layers=4, num_decoder_layers=4,
                     num_heads=4, dropout_rate=0.0),
    "t5-small": T5Config.preset("t5-small"),
}


def _models(name: str, tmp: Path) -> tuple[T5Config, dict, T5ForConditionalGeneration]:
    hf_cfg = HFConfig(**{**config_to_hf(SHAPES[name]), "dropout_rate": 0.0})
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(hf_cfg).eval()
    model.save_pretrained(tmp / name)
    config, params = load_hf(tmp / name)
    return config, jax.device_put(params), model


def _inputs(batch: int, length: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(3, vocab, (batch, length)).astype(np.int32)
    ids[:, -1] = 1
    return ids, np.ones_like(ids)


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(names: list[str], batches: list[int], new_tokens: int, input_len: int, repeats: int,
        on_row=lambda rows: None) -> list[dict]:
    rows: list[dict] = []
    mesh = Mesh(np.asarray(jax.devices()), ("data",)) if jax.device_count() > 1 else None
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            config, params, model = _models(name, Path(tmp))
            for batch in batches:
                ids, mask = _inputs(batch, input_len, config.vocab_size)
                row = {"model": name, "batch": batch}

                def ours(i=jnp.asarray(ids), m=jnp.asarray(mask)):
                    out, steps = decode.greedy(params, config, i, m, new_tokens, eos_id=-1, return_steps=True)
                    assert int(steps) == new_tokens
                    return np.asarray(out)

                start = time.perf_counter()
                ours()
                row["compile_s"] = time.perf_counter() - start
                row["ours_s"] = _time(ours, repeats)
                if mesh is not None and batch % jax.device_count() == 0:
                    sharding = NamedSharding(mesh, P("data"))
                    rep = jax.device_put(params, NamedSharding(mesh, P()))

                    def ours_sharded(i=jax.device_put(ids, sharding), m=jax.device_put(mask, sharding)):
                        return np.asarray(decode.greedy(rep, config, i, m, new_tokens, eos_id=-1))

                    ours_sharded()  # compile
                    row["sharded_s"] = _time(ours_sharded, repeats)

                def hf(i=torch.tensor(ids, dtype=torch.long), m=torch.tensor(mask, dtype=torch.long)):
                    with torch.no_grad():
                        out = model.generate(input_ids=i, attention_mask=m, do_sample=False, num_beams=1,
                                             max_new_tokens=new_tokens, min_new_tokens=new_tokens)
                    assert out.shape[1] == new_tokens + 1
                    return out

                hf(i=torch.tensor(ids[:2], dtype=torch.long), m=torch.tensor(mask[:2], dtype=torch.long))  # warm-up
                row["hf_s"] = _time(hf, repeats)
                rows.append(row)
                print(_line(row, batch * new_tokens), flush=True)
                on_row(rows)
    return rows


def _line(row: dict, tokens: int) -> str:
    best = min(row["ours_s"], row.get("sharded_s", float("inf")))
    sharded = f"{tokens / row['sharded_s']:.0f}" if "sharded_s" in row else "-"
    return (f"| {row['model']} | {row['batch']} | {tokens / row['hf_s']:.0f} | {tokens / row['ours_s']:.0f} | "
            f"{sharded} | {row['hf_s'] / best:.2f}x | {row['compile_s']:.1f} |")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per cell (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    parser.add_argument("--note", default="", help="a line added under the table (e.g. other load)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    header = ("| model | batch | HF generate tok/s | ours 1 device tok/s | ours batch-sharded tok/s | speed-up "
              "(best ours vs HF) | our compile s |\n|---|---|---|---|---|---|---|")
    print(header, flush=True)
    load, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = "XLA_FLAGS=--xla_force_host_platform_device_count=2 .venv/bin/python benchmarks/decode.py " + shlex.join(
        argv if argv is not None else sys.argv[1:])

    def body_for(rows: list[dict]) -> str:
        table = "\n".join([header] + [_line(r, r["batch"] * args.new_tokens) for r in rows])
        now = os.getloadavg()
        return (f"## Greedy decoding: ours vs HF `generate`\n\n"
                f"Greedy, {args.new_tokens} new tokens forced on both sides, inputs of {args.input_len} tokens, "
                f"random weights, fp32, median of {args.repeats} timed run(s) after a warm-up; new tokens per second "
                f"(higher is better).\nMachine: {_cpu_name()}, {os.cpu_count()} CPU cores, load average at start "
                f"{load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} ({started}), at the last row {now[0]:.1f}, {now[1]:.1f}, "
                f"{now[2]:.1f}, torch {torch.__version__} "
                f"({args.threads} threads), jax {jax.__version__} ({jax.device_count()} CPU devices).\n"
                f"Command: `{command.strip()}`\n\n{table}\n" + (f"\n{args.note}\n" if args.note else ""))

    def write(rows: list[dict]) -> None:  # after every row, so an interrupted run keeps what it measured
        if not args.no_write:
            write_section("decode", body_for(rows))

    rows = run(args.models, args.batches, args.new_tokens, args.input_len, args.repeats, write)
    print(body_for(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
