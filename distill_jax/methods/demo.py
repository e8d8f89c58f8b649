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


def _eval(train_dir: Path, problems: list[str], styles: tuple[str, ...], size: DemoSize, progress: bool) -> dict:
    from distill_jax.evaluate.config import DecodingConfig, EvalConfig
    from distill_jax.evaluate.evaluate import evaluate
    from distill_jax.evaluate.report import by_test_and_style

    cfg = EvalConfig(run_dir=str(train_dir), benchmarks=(), problems=tuple(problems), styles=styles,
                     decoding=DecodingConfig(max_new_tokens=size.max_new_tokens, batch_size=64), report=False,
                     progress=progress)
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


@dataclass(frozen=True)
class DemoRun:
    """What a demo run is made of: RUN/config.yaml records it, and each stage's fingerprint the keys it reads."""

    size: DemoSize
    seed: int = 0


def demo_stages(run: Path, size: DemoSize, seed: int, log: Callable[[str], None], stages: Any,
                progress: bool = True) -> list:
    """Every stage of the demo, each with the `size.*` keys it reads. FDD is one stage here: inside it, its own
    stages (RUN/fdd/stages) rerun only what a change reaches."""
    from distill_jax.methods.fdd import run_fdd
    from distill_jax.methods.stages import Stage, config_keys, teach_outputs
    from distill_jax.teacher.generate import teach
    from distill_jax.train.loop import train

    demo = DemoRun(size, seed)
    reads = lambda *names: config_keys(demo, *(f"size.{n}" for n in names), "seed")  # noqa: E731
    files = lambda: stages.result("problems")  # noqa: E731
    tests = lambda: [files()[t] for t in TESTS]  # noqa: E731
    buckets = lambda: stages.result("buckets")  # noqa: E731
    student = ("steps", "batch_size", "model")

    def train_student(out: Path, styles: tuple[str, ...]) -> dict:
        cfg = _train_config(run, size, seed, buckets(), out, styles, size.steps)
        return dataclasses.asdict(train(dataclasses.replace(cfg, progress=progress)))

    def train_control() -> dict:
        cfg = _train_config(run, size, seed, buckets(), run / "fdd_control", ("pot",), size.fdd_steps,
                            init=str(run / "fdd" / "hf" / "r0"), rationales=(str(run / "fdd" / "rationales" / "r0"),))
        return dataclasses.asdict(train(dataclasses.replace(cfg, progress=progress)))

    out = [
        Stage("problems", lambda: make_problems(run / "problems", size, seed), keys=reads("n_train", "n_test"),
              outputs=[f"problems/{name}.jsonl" for name in ("train", *TESTS)]),
        Stage("teach", lambda: teach(_teach_config(run, files(), seed), progress=progress).to_dict()["styles"],
              keys=reads(), outputs=teach_outputs(0)),
        Stage("tokenizer", lambda: _train_tokenizer(run, size.vocab_size), keys=reads("vocab_size"),
              outputs=["tokenizer"]),
        Stage("buckets", lambda: _buckets(run, size.buckets), keys=reads("buckets")),
    ]
    train_dirs = {name: run / "students" / name for name in STUDENTS}
    train_dirs["pot"] = run / "fdd" / "train" / "r0"  # FDD's round 0 *is* the PoT student
    for name, styles in STUDENTS.items():
        if name == "pot":
            continue
        out.append(Stage(f"train_{name}", lambda o=train_dirs[name], s=styles: train_student(o, s),
                         keys=reads(*student), outputs=[f"students/{name}"]))
        out.append(Stage(f"eval_{name}", lambda o=train_dirs[name], s=styles: _eval(o, tests(), s, size, progress),
                         keys=reads("max_new_tokens"), outputs=[f"students/{name}/eval"]))
    # FDD's own stages (RUN/fdd/stages) decide what in it reruns: nothing of it is moved from here
    out.append(Stage("fdd", lambda: run_fdd(_fdd_config(run, size, files(), seed, buckets()), log=log,
                                            progress=progress),
                     keys=reads(*student, "fdd_steps", "max_new_tokens")))
    out.append(Stage("eval_pot", lambda: _eval(train_dirs["pot"], tests(), ("pot",), size, progress),
                     keys=reads("max_new_tokens")))
    # The control: the round-0 student trained as many more steps on the round-0 data only. Without it,
    # "the hard split improved" could be just more training on problems the student has already seen.
    out.append(Stage("train_fdd_control", train_control, keys=reads("fdd_steps", "batch_size"),
                     outputs=["fdd_control"]))
    out.append(Stage("hard_r0", lambda: _hard_file(run), outputs=["problems/hard_r0.jsonl"]))
    out.append(Stage("eval_fdd_control", lambda: _eval(run / "fdd_control", [stages.result("hard_r0"), *tests()],
                                                       ("pot",), size, progress),
                     keys=reads("max_new_tokens"), outputs=["fdd_control/eval"]))
    return out


def run_demo(run: Path, size: DemoSize, seed: int, log: Callable[[str], None], restart_from: str | None = None,
             progress: bool = True) -> dict:
    """Every stage of the demo (resumable; a rerun of another size reruns what the change reaches); returns
    the results that demo_report renders."""
    from distill_jax.methods.stages import Stages

    stages = Stages(run, log, restart_from)
    stages.run_all(demo_stages(run, size, seed, log, stages, progress), DemoRun(size, seed))
    rounds = stages.result("fdd")
    results: dict[str, Any] = {"students": {name: stages.result(f"eval_{name}") for name in STUDENTS},
                               "teach": stages.result("teach")}
    results["fdd"] = {f"r{r['round']}": _round_accuracy(r) for r in rounds}
    results["fdd"]["control"] = stages.result("eval_fdd_control")
    results["fdd_rounds"] = rounds
    return results
