"""`distill-jax demo`: the embedded default, offline on a laptop CPU, nothing downloaded.

synthetic problems (train: 1-2 steps, a distractor fact in 30%; tests: in distribution, out of distribution
with 3 steps, and in distribution with a distractor in every problem) -> the symbolic teacher writes PoT, EoT,
CoT and key-point PoT with deliberate mistakes -> verification drops the wrong ones -> one SentencePiece
vocabulary -> small T5 students trained from scratch, one per style, one with key points (KPDD) and one mixed
CoT+PoT+EoT (ETD, with a vote across its styles) -> evaluation on every test set -> one FDD feedback round on
the PoT student, beside a control that trains as long on the round-0 data only -> RUN/report.md with tables,
plots and what the numbers show (methods/demo_report.py).

Every stage leaves a marker (methods/stages.py): rerunning the same command after an interruption continues at
the first unfinished stage. `--quick` shrinks everything to a few minutes: it checks the pipeline, not findings.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distill_jax import config as config_lib

TESTS = ("test_id", "test_ood", "test_distractor")
# student -> the styles it learns; each is asked in every one of them, and the mixed one votes (pot first:
# executed answers win ties over parsed ones).
STUDENTS: dict[str, tuple[str, ...]] = {
    "pot": ("pot",), "eot": ("eot",), "cot": ("cot",), "kp_pot": ("kp_pot",), "mixed": ("pot", "eot", "cot"),
}
TEACH_STYLES = ("pot", "eot", "cot", "kp_pot")


@dataclass(frozen=True)
class DemoSize:
    n_train: int
    n_test: int
    steps: int  # per student (and FDD round 0)
    fdd_steps: int  # FDD round 1 and its control
    batch_size: int
    max_new_tokens: int  # an undertrained student may never emit EOS: decoding stops here
    vocab_size: int = 800
    buckets: int = 3  # (input, target) shapes, each compiled once for all students
    # The student: 2+2 layers of width 128 learn this world within the budget; `tiny` (3+3) learns it better
    # per step but not per second on 2 cores.
    model: dict[str, int] = field(default_factory=lambda: {
        "d_model": 128, "d_kv": 32, "num_heads": 4, "d_ff": 384, "num_layers": 2, "num_decoder_layers": 2})


FULL = DemoSize(n_train=800, n_test=150, steps=240, fdd_steps=80, batch_size=32, max_new_tokens=128)
QUICK = DemoSize(n_train=120, n_test=20, steps=16, fdd_steps=4, batch_size=32, max_new_tokens=32, buckets=1)


def make_problems(out: Path, size: DemoSize, seed: int) -> dict[str, str]:
    from distill_jax.data.records import write_jsonl
    from distill_jax.data.synthetic import generate

    sets = {
        "train": generate(size.n_train, seed, 1, 2, distractor_rate=0.3, split="train"),
        "test_id": generate(size.n_test, seed + 1, 1, 2, distractor_rate=0.3, split="id"),
        "test_ood": generate(size.n_test, seed + 2, 3, 3, distractor_rate=0.3, split="ood"),
        "test_distractor": generate(size.n_test, seed + 3, 1, 2, distractor_rate=1.0, split="distractor"),
    }
    seen = {p.question for p in sets["train"]}
    files = {}
    for name, problems in sets.items():
        if name != "train":  # a test problem seen in training would flatter the student
            problems = [p for p in problems if p.question not in seen]
        files[name] = str(out / f"{name}.jsonl")
        write_jsonl(files[name], (p.to_row() for p in problems))
    return files


def _teach_config(run: Path, files: dict[str, str], seed: int):
    from distill_jax.teacher.teach_config import TeachConfig

    return config_lib.from_dict(TeachConfig, {
        "problems": files["train"], "run_dir": str(run), "styles": list(TEACH_STYLES), "seed": seed,
        "teacher": {"kind": "symbolic", "error_rate": 0.1}})


def _train_tokenizer(run: Path, vocab_size: int) -> dict:
    """One vocabulary for every student, so their numbers compare like for like and their compiled steps
    (same shapes, same vocab size) come from the compilation cache after the first student."""
    from distill_jax.model.tokenizer import train_tokenizer
    from distill_jax.train import batches as B

    records = B.read_records(B.DataConfig(rationales=(str(run / "rationales" / "r0"),)))
    texts = [B.input_text(r) for r in records] + [r["rationale"] for r in records]
    tok = train_tokenizer(texts, run / "tokenizer", vocab_size)
    return {"vocab_size": tok.vocab_size, "texts": len(texts)}


def _buckets(run: Path, n: int) -> list[list[int]]:
    """(input, target) shapes fitted to every student's data at once: one compile set for all."""
    from distill_jax.model.tokenizer import Tokenizer
    from distill_jax.train import batches as B

    records = B.read_records(B.DataConfig(rationales=(str(run / "rationales" / "r0"),)))
    encoded = B.encode(records, Tokenizer.load(run / "tokenizer"))
    return [list(b) for b in B.suggest_buckets(encoded, n)]


def _train_config(run: Path, size: DemoSize, seed: int, buckets: list, out: Path, styles: tuple[str, ...],
                  steps: int, init: str = "scratch", rationales: tuple[str, ...] | None = None):
    from distill_jax.train.config import TrainConfig

    model: dict[str, Any] = {"init": init}
    if init == "scratch":
        model.update(preset="tiny", overrides=size.model, tokenizer=str(run / "tokenizer"))
    return config_lib.from_dict(TrainConfig, {
        "run_dir": str(out), "seed": seed, "steps": steps, "batch_size": size.batch_size, "eval_every": 0,
        "checkpoint_every": steps, "keep": 1, "log_every": 25, "model": model,
        "data": {"rationales": list(rationales or (str(run / "rationales" / "r0"),)), "styles": list(styles),
                 "buckets": buckets, "eval_fraction": 0.02},
        "optim": {"name": "adamw", "learning_rate": 3e-3, "warmup_steps": max(steps // 20, 1),
                  "schedule": "cosine", "end_lr_factor": 0.1}})


def _eval(train_dir: Path, problems: list[str], styles: tuple[str, ...], size: DemoSize) -> dict:
    from distill_jax.evaluate.config import DecodingConfig, EvalConfig
    from distill_jax.evaluate.evaluate import evaluate
    from distill_jax.evaluate.report import by_test_and_style

    cfg = EvalConfig(run_dir=str(train_dir), benchmarks=(), problems=tuple(problems), styles=styles,
                     decoding=DecodingConfig(max_new_tokens=size.max_new_tokens, batch_size=64), report=False)
    return by_test_and_style(evaluate(cfg))


def _fdd_config(run: Path, size: DemoSize, files: dict[str, str], seed: int, buckets: list):
    from distill_jax.methods.fdd import FddConfig, FddEvalConfig

    return FddConfig(
        run_dir=str(run / "fdd"), rounds=1, solve_style="pot", continue_training=True,
        teach=dataclasses.replace(_teach_config(run / "fdd", files, seed), styles=("pot",)),
        train=_train_config(run, size, seed, buckets, Path("-"), ("pot",), size.steps),
        eval=FddEvalConfig(problems=tuple(files[t] for t in TESTS), styles=("pot",),
                           max_new_tokens=size.max_new_tokens, batch_size=64),
        round_steps=(size.steps, size.fdd_steps))


def _hard_file(run: Path) -> str:
    """The seed problems the round-0 PoT student failed, as a test set of their own."""
    from distill_jax.data.problems import load_problems
    from distill_jax.data.records import write_jsonl

    hard = set(json.loads((run / "fdd" / "fdd" / "split_r0.json").read_text(encoding="utf-8"))["hard"])
    path = run / "problems" / "hard_r0.jsonl"
    write_jsonl(path, (p.to_row() for p in load_problems(str(run / "fdd" / "problems" / "seed.jsonl"))
                       if p.id in hard))
    return str(path)


def _round_accuracy(record: dict) -> dict:
    """An FDD round's accuracies keyed like _eval's; its seed eval already scored the round-0 hard split."""
    acc = dict(record["accuracy"])
    acc["hard_r0/pot"] = acc.pop("seed_hard_r0/pot")
    return acc


def run_demo(run: Path, size: DemoSize, seed: int, log: Callable[[str], None]) -> dict:
    """Every stage of the demo (resumable); returns the results that demo_report renders."""
    from distill_jax.methods.fdd import run_fdd
    from distill_jax.methods.stages import Stages
    from distill_jax.teacher.generate import teach
    from distill_jax.train.loop import train

    stages = Stages(run, log)
    files = stages.run("problems", lambda: make_problems(run / "problems", size, seed))
    tests = [files[t] for t in TESTS]
    teach_cfg = _teach_config(run, files, seed)
    taught = stages.run("teach", lambda: teach(teach_cfg, progress=True).to_dict()["styles"])
    stages.run("tokenizer", lambda: _train_tokenizer(run, size.vocab_size))
    buckets = stages.run("buckets", lambda: _buckets(run, size.buckets))

    # FDD first: its round 0 *is* the PoT student (same data, vocabulary, shapes and steps).
    rounds = run_fdd(_fdd_config(run, size, files, seed, buckets), log=log)
    train_dirs = {name: run / "students" / name for name in STUDENTS}
    train_dirs["pot"] = run / "fdd" / "train" / "r0"
    results: dict[str, Any] = {"students": {}, "fdd": {}, "teach": taught}
    for name, styles in STUDENTS.items():
        out = train_dirs[name]
        if name != "pot":
            cfg = _train_config(run, size, seed, buckets, out, styles, size.steps)
            stages.run(f"train_{name}", lambda: dataclasses.asdict(train(cfg)))
        results["students"][name] = stages.run(f"eval_{name}", lambda: _eval(out, tests, styles, size))

    # The control: the round-0 student trained as many more steps on the round-0 data only. Without it,
    # "the hard split improved" could be just more training on problems the student has already seen.
    control = run / "fdd_control"
    control_cfg = _train_config(run, size, seed, buckets, control, ("pot",), size.fdd_steps,
                                init=str(run / "fdd" / "hf" / "r0"),
                                rationales=(str(run / "fdd" / "rationales" / "r0"),))
    stages.run("train_fdd_control", lambda: dataclasses.asdict(train(control_cfg)))
    hard = stages.run("hard_r0", lambda: _hard_file(run))
    results["fdd"] = {f"r{r['round']}": _round_accuracy(r) for r in rounds}
    results["fdd"]["control"] = stages.run("eval_fdd_control",
                                           lambda: _eval(control, [hard, *tests], ("pot",), size))
    results["fdd_rounds"] = rounds
    return results


def use_compilation_cache(run: Path) -> None:
    """Every student has the same shapes: after the first, its train/eval/decode steps load from this cache,
    and a rerun of the demo compiles nothing. JAX_COMPILATION_CACHE_DIR in the environment wins."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR",
                                                                   str(run / "xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def check_same_size(run: Path, size: DemoSize, seed: int) -> None:
    """A rerun resumes from stage markers: with another size or seed it would mix two runs' results."""
    from distill_jax.config import ConfigError

    want = {"size": dataclasses.asdict(size), "seed": seed}
    path = run / "demo_size.json"
    if path.is_file():
        have = json.loads(path.read_text(encoding="utf-8"))
        if have != want:
            raise ConfigError(f"{run} holds a demo run of another size or seed ({have}); give a new --out")
    else:
        path.write_text(json.dumps(want), encoding="utf-8")
