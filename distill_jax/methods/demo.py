"""`distill-jax demo`: the embedded default, offline on a laptop CPU, nothing downloaded.

synthetic problems (train: 1-3 steps with distractor facts; tests: in-distribution 1-3 steps and
out-of-distribution 4-5 steps) -> symbolic teacher writing PoT, EoT and CoT with deliberate errors -> verified
rationales -> a SentencePiece vocabulary -> one mixed-style (ETD) T5 student trained from scratch -> evaluation
per style and voted -> one FDD feedback round -> RUN/report.md with plots and what the numbers show.

Every stage is resumable (methods/fdd.py): rerunning the same command after an interruption continues at the
first unfinished stage. `--quick` shrinks everything to a few minutes: it checks the pipeline, not the findings.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from distill_jax import config as config_lib


@dataclass(frozen=True)
class DemoSize:
    n_train: int
    n_test: int
    steps_r0: int
    steps_r1: int
    batch_size: int
    max_new_tokens: int  # an undertrained student rarely emits EOS: decoding runs to this length


FULL = DemoSize(n_train=4000, n_test=300, steps_r0=1200, steps_r1=400, batch_size=64, max_new_tokens=160)
QUICK = DemoSize(n_train=300, n_test=50, steps_r0=60, steps_r1=20, batch_size=32, max_new_tokens=96)
STYLES = ("pot", "eot", "cot")  # also the vote's tie-break order: executed answers before parsed ones


def make_problems(out: Path, size: DemoSize, seed: int) -> dict[str, str]:
    from distill_jax.data.records import write_jsonl
    from distill_jax.data.synthetic import generate

    files = {
        "train": (generate(size.n_train, seed, 1, 3, distractor_rate=0.3, split="train"), out / "train.jsonl"),
        "test_id": (generate(size.n_test, seed + 1, 1, 3, distractor_rate=0.3, split="id"), out / "test_id.jsonl"),
        "test_ood": (generate(size.n_test, seed + 2, 4, 5, distractor_rate=0.3, split="ood"), out / "test_ood.jsonl"),
    }
    train_questions = {p.question for p in files["train"][0]}
    for name in ("test_id", "test_ood"):  # a test problem seen in training would flatter the student
        files[name] = ([p for p in files[name][0] if p.question not in train_questions], files[name][1])
    for problems, path in files.values():
        write_jsonl(path, (p.to_row() for p in problems))
    return {name: str(path) for name, (_, path) in files.items()}


def demo_config(run: Path, size: DemoSize, files: dict[str, str], seed: int):
    from distill_jax.methods.fdd import FddConfig

    overrides = {
        "run_dir": str(run), "rounds": 1, "solve_style": "pot", "continue_training": True,
        "round_steps": [size.steps_r0, size.steps_r1],
        "teach": {"problems": files["train"], "styles": list(STYLES), "seed": seed,
                  "teacher": {"kind": "symbolic", "error_rate": 0.1}},
        "train": {"run_dir": "-", "seed": seed, "steps": size.steps_r0, "batch_size": size.batch_size,
                  "eval_every": 0, "checkpoint_every": max(size.steps_r0, size.steps_r1), "log_every": 20,
                  "model": {"init": "scratch", "preset": "tiny", "tokenizer_vocab_size": 600},
                  "data": {"buckets": [[64, 96], [96, 160], [128, 256]], "eval_fraction": 0.02},
                  "optim": {"name": "adamw", "learning_rate": 2e-3, "warmup_steps": 100 if size is FULL else 10,
                            "schedule": "cosine", "end_lr_factor": 0.1}},
        "eval": {"problems": [files["test_id"], files["test_ood"]], "styles": list(STYLES),
                 "max_new_tokens": size.max_new_tokens, "batch_size": 64},
    }
    return config_lib.from_dict(FddConfig, overrides)


def findings(rounds: list[dict]) -> str:
    """What the numbers show, computed from them (never asserted in advance)."""
    last = rounds[-1]["accuracy"]
    lines = ["## What this run shows", ""]
    for test in ("test_id", "test_ood"):
        acc = {s: last.get(f"{test}/{s}", {}).get("accuracy") for s in (*STYLES, "vote")}
        if any(v is None for v in acc.values()):
            continue
        pct = {s: f"{100 * v:.1f}%" for s, v in acc.items()}
        best = max(STYLES, key=lambda s: acc[s])
        lines.append(f"- **{test}**: PoT {pct['pot']}, EoT {pct['eot']}, CoT {pct['cot']}, vote {pct['vote']}.")
        offload = "yes" if min(acc["pot"], acc["eot"]) > acc["cot"] else "no"
        lines.append(f"  - PoT and EoT beat CoT (calculation offloaded): **{offload}**.")
        holds = "yes" if acc["vote"] >= acc[best] else "no"
        lines.append(f"  - The vote is at least the best single style ({best}): **{holds}**.")
    key = "seed_hard_r0/pot"
    if len(rounds) > 1 and key in rounds[0]["accuracy"]:
        before, after = rounds[0]["accuracy"][key], rounds[-1]["accuracy"][key]
        verdict = "yes" if after["accuracy"] > before["accuracy"] else "no"
        lines.append(f"- FDD: on the {before['n']} training problems the round-0 student failed, PoT accuracy went "
                     f"{100 * before['accuracy']:.1f}% -> {100 * after['accuracy']:.1f}% after one feedback round: "
                     f"improved **{verdict}**.")
    lines += ["", "Not in this demo yet: one student per style beside the mixed one, and the key-point (KPDD) "
              "comparison with distractor facts; the methods exist as record builders under distill_jax/methods."]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo; reruns resume)")
    parser.add_argument("--quick", action="store_true", help="a few minutes: checks the pipeline, not findings")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from distill_jax.evaluate.report import write_report
    from distill_jax.methods.fdd import run_fdd

    console = Console()
    size = QUICK if args.quick else FULL
    run_dir = Path(args.out)
    start = time.perf_counter()
    console.rule(f"distill_jax demo ({'quick' if args.quick else 'full'}) -> {run_dir}")
    marker = run_dir / "problems" / "files.json"
    if marker.is_file():
        files = json.loads(marker.read_text(encoding="utf-8"))
    else:
        files = make_problems(run_dir / "problems", size, args.seed)
        marker.write_text(json.dumps(files), encoding="utf-8")
    console.print(f"problems: {files}")
    rounds = run_fdd(demo_config(run_dir, size, files, args.seed), log=console.print)
    minutes = (time.perf_counter() - start) / 60
    preamble = (f"Command: `distill-jax demo{' --quick' if args.quick else ''} --out {args.out}` "
                f"({minutes:.1f} min on this machine).\n\n" + findings(rounds))
    report = write_report(run_dir, title="distill_jax demo", preamble=preamble)
    console.print(findings(rounds))
    console.print(f"report: {report}")
    return 0
