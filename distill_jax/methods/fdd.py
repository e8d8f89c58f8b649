"""FDD (Feedback-Driven Distillation, arXiv 2411.14698) as a resumable pipeline: `distill-jax fdd`.

Round 0: the teacher writes verified rationales for the seed problems; the student trains on them.
Round k >= 1: the round k-1 student solves every seed training problem (style `solve_style`): solved ones are
*easy*, the others *hard*. The teacher writes a harder variant of each easy problem and a similar new problem for
each hard one (kept only when independent teacher solutions agree: teacher/fdd_problems.py), then rationales for
them; the student trains on everything so far. `continue_training` picks between continuing from the previous
round's student (our default: the paper fine-tunes the student it just evaluated on the enlarged set) and
training from the initial weights each round.

Layout under RUN (every stage reads what the one before wrote, so any stage can be re-run alone):
  problems/seed.jsonl             the seed training problems (copied in, so the run is self-contained)
  rationales/r{k}/STYLE.jsonl     teacher rationales per round (teacher.generate)
  problems/r{k}/fdd_*.jsonl       the new problems of round k
  train/r{k}/                     the round's training run (ckpt/, eval/, logs/)
  fdd/split_r{k}.json             easy / hard ids of the seed problems after round k
  fdd/rounds.json                 accuracy per round on the test sets and on the hard split (report.py plots it)
  stages/*.json                   one marker per finished stage: a rerun resumes at the first missing one
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from distill_jax import config as config_lib
from distill_jax.config import ConfigError
from distill_jax.data.problems import Problem, load_problems
from distill_jax.data.records import write_jsonl
from distill_jax.methods.stages import Stages
from distill_jax.teacher.generate import TeachConfig
from distill_jax.train.config import TrainConfig


@dataclass(frozen=True)
class FddEvalConfig:
    problems: tuple[str, ...] = ()  # test JSONL files (each reported under its file stem)
    benchmarks: tuple[str, ...] = ()  # or benchmark names (gsm8k_test, svamp, ...)
    styles: tuple[str, ...] = ("pot",)
    max_new_tokens: int = 256
    batch_size: int = 64


@dataclass(frozen=True)
class FddConfig:
    run_dir: str
    rounds: int = 1  # feedback rounds after round 0
    solve_style: str = "pot"  # the style the student solves the seed problems in for the easy/hard split
    continue_training: bool = True
    teach: TeachConfig = field(default_factory=TeachConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(run_dir="-", steps=1))
    eval: FddEvalConfig = field(default_factory=FddEvalConfig)
    round_steps: tuple[int, ...] = ()  # training steps per round (default: train.steps every round)

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if self.round_steps and len(self.round_steps) != self.rounds + 1:
            raise ValueError(f"round_steps needs {self.rounds + 1} entries (rounds 0..{self.rounds})")


def _round_train_config(cfg: FddConfig, run: Path, k: int) -> TrainConfig:
    steps = cfg.round_steps[k] if cfg.round_steps else cfg.train.steps
    model = cfg.train.model
    if k > 0 and cfg.continue_training:
        model = dataclasses.replace(model, init=str(run / "hf" / f"r{k - 1}"), tokenizer=None)
    elif k > 0 and model.init == "scratch" and model.tokenizer is None:
        # Same vocabulary every round, so rounds compare like for like: reuse round 0's trained tokenizer.
        model = dataclasses.replace(model, tokenizer=str(run / "train" / "r0" / "tokenizer"))
    data = dataclasses.replace(cfg.train.data, rationales=tuple(str(run / "rationales" / f"r{i}") for i in range(k + 1)))
    return dataclasses.replace(cfg.train, run_dir=str(run / "train" / f"r{k}"), model=model, data=data,
                               steps=steps, epochs=None if steps else cfg.train.epochs)


def _export_round(run: Path, k: int) -> str:
    from distill_jax.model.hf import save_hf
    from distill_jax.train.checkpoint import load_params

    config, params, tok_dir = load_params(run / "train" / f"r{k}")
    out = run / "hf" / f"r{k}"
    save_hf(params, config, out, tokenizer_dir=tok_dir)
    return str(out)


def _eval_configs(cfg: FddConfig, run: Path, k: int, seed_file: Path):
    """(test sets config, seed-problem config) for round k's student."""
    from distill_jax.evaluate.evaluate import DecodingConfig, EvalConfig

    decoding = DecodingConfig(max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size)
    train_run = str(run / "train" / f"r{k}")
    tests = EvalConfig(run_dir=train_run, benchmarks=cfg.eval.benchmarks, problems=cfg.eval.problems,
                       styles=cfg.eval.styles, decoding=decoding, report=False)
    seed = EvalConfig(run_dir=train_run, benchmarks=(), problems=(str(seed_file),), styles=(cfg.solve_style,),
                      decoding=decoding, vote=False, report=False)
    return tests, seed


def _seed_predictions(cfg: FddConfig, run: Path, k: int, step: int, seed_file: Path) -> list[dict]:
    from distill_jax.evaluate.evaluate import result_dir

    _, seed_cfg = _eval_configs(cfg, run, k, seed_file)
    path = result_dir(seed_cfg, step, seed_file.stem, cfg.solve_style) / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _evaluate_round(cfg: FddConfig, run: Path, k: int, seed_file: Path) -> dict:
    from distill_jax.evaluate.evaluate import evaluate

    tests_cfg, seed_cfg = _eval_configs(cfg, run, k, seed_file)
    tests, seed = evaluate(tests_cfg), evaluate(seed_cfg)
    accuracy = {f"{m['benchmark']}/{m['style']}": {"accuracy": m["accuracy"], "n": m["n"]} for m in tests}
    accuracy[f"seed/{cfg.solve_style}"] = {"accuracy": seed[0]["accuracy"], "n": seed[0]["n"]}
    return {"round": k, "step": seed[0]["step"], "accuracy": accuracy}


def _split(cfg: FddConfig, run: Path, k: int, step: int, seed_file: Path) -> dict:
    """Easy (solved) / hard (not solved) seed problems according to round k's predictions."""
    rows = _seed_predictions(cfg, run, k, step, seed_file)
    split = {"easy": [r["id"] for r in rows if r["correct"]], "hard": [r["id"] for r in rows if not r["correct"]]}
    (run / "fdd").mkdir(parents=True, exist_ok=True)
    (run / "fdd" / f"split_r{k}.json").write_text(json.dumps(split), encoding="utf-8")
    return {"easy": len(split["easy"]), "hard": len(split["hard"])}


def _hard_accuracy(cfg: FddConfig, run: Path, k: int, step: int, seed_file: Path, hard_ids: set[str]) -> dict:
    hard = [r for r in _seed_predictions(cfg, run, k, step, seed_file) if r["id"] in hard_ids]
    return {"accuracy": sum(r["correct"] for r in hard) / len(hard) if hard else 0.0, "n": len(hard)}


def _new_problems(cfg: FddConfig, run: Path, k: int, seeds: list[Problem]) -> dict:
    from distill_jax.teacher.fdd_problems import new_problems

    split = json.loads((run / "fdd" / f"split_r{k - 1}.json").read_text(encoding="utf-8"))
    by_id = {p.id: p for p in seeds}
    teach = dataclasses.replace(cfg.teach, run_dir=str(run), round=k)
    harder = new_problems([by_id[i] for i in split["easy"]], "harder", teach)
    similar = new_problems([by_id[i] for i in split["hard"]], "similar", teach)
    write_jsonl(run / "problems" / f"r{k}" / "all.jsonl", (p.to_row() for p in harder + similar))
    return {"harder": len(harder), "similar": len(similar), "from_easy": len(split["easy"]),
            "from_hard": len(split["hard"])}


def run_fdd(cfg: FddConfig, log: Callable[[str], None] | None = None) -> list[dict]:
    """Run (or resume) every stage; returns the per-round accuracy records written to RUN/fdd/rounds.json."""
    from rich.console import Console

    from distill_jax.teacher.generate import teach
    from distill_jax.train.loop import train

    log = log or Console().print
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    config_lib.save_resolved(cfg, run / "config.yaml")
    stages = Stages(run, log)
    seed_file = run / "problems" / "seed.jsonl"

    def copy_seed() -> int:
        problems = load_problems(cfg.teach.problems, cfg.teach.data_dir)[: cfg.teach.limit]
        return write_jsonl(seed_file, (p.to_row() for p in problems))

    stages.run("seed_problems", copy_seed)
    seeds = load_problems(str(seed_file))
    rounds: list[dict] = []
    hard0: set[str] | None = None
    for k in range(cfg.rounds + 1):
        if k == 0:
            problems_k = seeds
        else:
            stages.run(f"r{k}_new_problems", lambda: _new_problems(cfg, run, k, seeds))
            problems_k = load_problems(str(run / "problems" / f"r{k}" / "all.jsonl"))
        teach_cfg = dataclasses.replace(cfg.teach, run_dir=str(run), round=k, limit=None)
        stages.run(f"r{k}_teach", lambda: teach(teach_cfg, problems_k, progress=True).to_dict()["styles"])
        if k > 0 and cfg.continue_training:
            stages.run(f"r{k - 1}_export", lambda: _export_round(run, k - 1))
        train_cfg = _round_train_config(cfg, run, k)
        stages.run(f"r{k}_train", lambda: dataclasses.asdict(train(train_cfg)))
        record = stages.run(f"r{k}_eval", lambda: _evaluate_round(cfg, run, k, seed_file))
        split = stages.run(f"r{k}_split", lambda: _split(cfg, run, k, record["step"], seed_file))
        if hard0 is None:
            hard0 = set(json.loads((run / "fdd" / "split_r0.json").read_text(encoding="utf-8"))["hard"])
        record = dict(record, split=split)
        record["accuracy"]["seed_hard_r0/" + cfg.solve_style] = _hard_accuracy(
            cfg, run, k, record["step"], seed_file, hard0)
        rounds.append(record)
        (run / "fdd" / "rounds.json").write_text(json.dumps(rounds, indent=2), encoding="utf-8")
    return rounds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML with an FddConfig (see configs/fdd_*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. rounds=2")


def run(args: argparse.Namespace) -> int:
    from distill_jax.evaluate.report import write_report

    cfg = config_lib.load(FddConfig, args.config, args.overrides)
    if not cfg.eval.problems and not cfg.eval.benchmarks:
        raise ConfigError("eval.problems or eval.benchmarks must name at least one test set")
    rounds = run_fdd(cfg)
    print(f"report: {write_report(cfg.run_dir)}")
    for r in rounds:
        print(f"round {r['round']}: " + ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in r["accuracy"].items()))
    return 0
