"""Tiny models, rationale files and configs shared by the tests/test_train_*.py modules."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

# d_model 32, 2+2 layers: compiles in seconds, still has every kind of parameter the real presets have
TINY_OVERRIDES = {"d_model": 32, "d_kv": 8, "num_heads": 4, "d_ff": 64, "num_layers": 2, "num_decoder_layers": 2,
                  "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16}
NAMES = ["Ann", "Bob", "Cleo", "Dev", "Eve", "Finn"]
THINGS = ["pens", "apples", "cards", "books"]


def write_rationales(path: Path, n: int, seed: int = 0, styles: tuple[str, ...] = ("pot", "cot")) -> Path:
    """n problems, one record per style, in the DESIGN.md rationale schema."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i in range(n):
            name, thing = rng.choice(NAMES), rng.choice(THINGS)
            a, b = rng.randint(2, 60), rng.randint(2, 60)
            q = f"{name} has {a} {thing} and buys {b} more. How many {thing} does {name} have now?"
            targets = {"pot": f"have = {a}\nbought = {b}\nans = have + bought",
                       "cot": f"{name} has {a} + {b} = {a + b} {thing}. The answer is {a + b}."}
            for style in styles:
                f.write(json.dumps({"problem_id": f"p{i}", "question": q, "answer": str(a + b), "style": style,
                                    "rationale": targets[style], "prediction": str(a + b), "correct": True,
                                    "round": 0, "teacher": {}, "meta": {}}) + "\n")
    return path


def random_batch(rng: np.random.Generator, batch: int, in_len: int, tgt_len: int, vocab: int) -> dict:
    """Padded token batch with ragged lengths, -100 label padding, all weights 1."""
    out = {"input_ids": np.zeros((batch, in_len), np.int32), "attention_mask": np.zeros((batch, in_len), np.int32),
           "labels": np.full((batch, tgt_len), -100, np.int32), "weights": np.ones((batch,), np.float32)}
    for r in range(batch):
        n, m = rng.integers(in_len // 2, in_len + 1), rng.integers(tgt_len // 2, tgt_len + 1)
        out["input_ids"][r, :n] = rng.integers(2, vocab, n)
        out["attention_mask"][r, :n] = 1
        out["labels"][r, :m] = rng.integers(2, vocab, m)
        out["labels"][r, m - 1] = 1
    return out


def train_config_dict(run_dir: Path, rationales: Path, tokenizer_dir: Path, **top) -> dict:
    """A TrainConfig mapping for a tiny from-scratch student on `rationales`."""
    cfg = {
        "run_dir": str(run_dir), "seed": 0, "batch_size": 8, "steps": 4, "log_every": 1, "eval_every": 0,
        "checkpoint_every": 100, "progress": False, "async_checkpoint": False,
        "model": {"init": "scratch", "preset": "tiny", "overrides": dict(TINY_OVERRIDES),
                  "tokenizer": str(tokenizer_dir)},
        "data": {"rationales": [str(rationales)], "buckets": [[48, 32]], "eval_fraction": 0.1},
        "optim": {"name": "adamw", "learning_rate": 3e-3, "warmup_steps": 1, "schedule": "linear"},
        "mesh": {"data": -1},
    }
    for k, v in top.items():
        if isinstance(v, dict):
            cfg[k] = {**cfg.get(k, {}), **v}
        else:
            cfg[k] = v
    return cfg
