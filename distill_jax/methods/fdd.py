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

Multi-host (one process per host, jax.distributed, scripts/launch_*.sh): training runs on every process; the
host work (teacher calls, new problems, export, evaluation, the split) and every file outside train/ are
process 0's, the others wait at a barrier and read its stage markers. RUN must be on storage every host sees.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from rich.console import Console

from distill_jax.config import ConfigError, at_least
from distill_jax.data.problems import Problem, load_problems
from distill_jax.data.records import write_jsonl
from distill_jax.evaluate.config import DecodingConfig, EvalConfig
from distill_jax.evaluate.evaluate import evaluate
from distill_jax.evaluate.report import by_test_and_style
from distill_jax.evaluate.results import result_dir
from distill_jax.fileio import write_json_atomic
from distill_jax.methods import preflight
from distill_jax.methods.stages import (Stage, Stages, config_keys, copy_seed_problems, eval_files, prompt_files,
                                        seed_inputs, teach_keys, teach_outputs)
from distill_jax.reasoning.sandbox import SandboxConfig, configure_sandbox
from distill_jax.model.hf import save_hf
from distill_jax.teacher.fdd_problems import new_problems
from distill_jax.teacher.generate import teach
from distill_jax.teacher.teach_config import TeachConfig
from distill_jax.train.checkpoint import load_params
from distill_jax.train.config import TrainConfig
from distill_jax.train.loop import train
from distill_jax.train.runtime import prepare_runtime, wait_for_processes


@dataclass(frozen=True)
class FddEvalConfig:
    problems: tuple[str, ...] = ()  # test JSONL files (each reported under its file stem)
    benchmarks: tuple[str, ...] = ()  # or benchmark names (gsm8k_test, svamp, ...)
    styles: tuple[str, ...] = ("pot",)
    max_new_tokens: int = 256
    batch_size: int = 64
    limit: int | None = field(default=None, metadata=at_least(1))  # first N problems of each test set (None: all)
    data_dir: str | None = None


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
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ConfigError(f"rounds must be >= 0, got {self.rounds}", key="rounds")
        if self.round_steps and len(self.round_steps) != self.rounds + 1:
            raise ConfigError(f"round_steps needs {self.rounds + 1} entries (rounds 0..{self.rounds})",
                              key="round_steps")
        if any(s < 1 for s in self.round_steps):
            raise ConfigError(f"round_steps must all be >= 1, got {list(self.round_steps)}", key="round_steps")


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
    config, params, tok_dir = load_params(run / "train" / f"r{k}")
    out = run / "hf" / f"r{k}"
    save_hf(params, config, out, tokenizer_dir=tok_dir)
    return str(out)


def _eval_configs(cfg: FddConfig, run: Path, k: int, seed_file: Path, progress: bool = True):
    """(test sets config, seed-problem config) for round k's student."""
    decoding = DecodingConfig(max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size)
    train_run = str(run / "train" / f"r{k}")
    tests = EvalConfig(run_dir=train_run, benchmarks=cfg.eval.benchmarks, problems=cfg.eval.problems,
                       styles=cfg.eval.styles, decoding=decoding, report=False, limit=cfg.eval.limit,
                       data_dir=cfg.eval.data_dir, progress=progress)
    # every seed problem, whatever eval.limit says: the split covers them all
    seed = EvalConfig(run_dir=train_run, benchmarks=(), problems=(str(seed_file),), styles=(cfg.solve_style,),
                      decoding=decoding, vote=False, report=False, progress=progress)
    return tests, seed


def _seed_predictions(cfg: FddConfig, run: Path, k: int, step: int, seed_file: Path) -> list[dict]:
    _, seed_cfg = _eval_configs(cfg, run, k, seed_file)
    path = result_dir(seed_cfg, step, seed_file.stem, cfg.solve_style) / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _evaluate_round(cfg: FddConfig, run: Path, k: int, seed_file: Path, progress: bool) -> dict:
    tests_cfg, seed_cfg = _eval_configs(cfg, run, k, seed_file, progress)
    tests, seed = evaluate(tests_cfg), evaluate(seed_cfg)
    accuracy = by_test_and_style(tests)
    accuracy[f"seed/{cfg.solve_style}"] = {"accuracy": seed[0]["accuracy"], "n": seed[0]["n"]}
    return {"round": k, "step": seed[0]["step"], "accuracy": accuracy}


def _split(cfg: FddConfig, run: Path, k: int, step: int, seed_file: Path) -> dict:
    """Easy (solved) / hard (not solved) seed problems according to round k's predictions."""
    rows = _seed_predictions(cfg, run, k, step, seed_file)
    split = {"easy": [r["id"] for r in rows if r["correct"]], "hard": [r["id"] for r in rows if not r["correct"]]}
    (run / "fdd").mkdir(parents=True, exist_ok=True)
    write_json_atomic(run / "fdd" / f"split_r{k}.json", split, indent=None)
    return {"easy": len(split["easy"]), "hard": len(split["hard"])}


def _hard_accuracy(cfg: FddConfig, run: Path, k: int, step: int, seed_file: Path, hard_ids: set[str]) -> dict:
    hard = [r for r in _seed_predictions(cfg, run, k, step, seed_file) if r["id"] in hard_ids]
    return {"accuracy": sum(r["correct"] for r in hard) / len(hard) if hard else 0.0, "n": len(hard)}


def _new_problems(cfg: FddConfig, run: Path, k: int, seeds: list[Problem]) -> dict:
    split = json.loads((run / "fdd" / f"split_r{k - 1}.json").read_text(encoding="utf-8"))
    by_id = {p.id: p for p in seeds}
    teach_cfg = dataclasses.replace(cfg.teach, run_dir=str(run), round=k)
    harder = new_problems([by_id[i] for i in split["easy"]], "harder", teach_cfg)
    similar = new_problems([by_id[i] for i in split["hard"]], "similar", teach_cfg)
    write_jsonl(run / "problems" / f"r{k}" / "all.jsonl", (p.to_row() for p in harder + similar))
    return {"harder": len(harder), "similar": len(similar), "from_easy": len(split["easy"]),
            "from_hard": len(split["hard"])}


# The other processes wait in the coordination service (no device collective) while process 0 runs a host
# stage: a teach stage against a rate-limited endpoint can take days.
HOST_STAGE_TIMEOUT_S = 7 * 24 * 3600


class _JobStages:
    """Stages of a job that may span several processes; with one process it is exactly `Stages`."""

    def __init__(self, stages: Stages):
        self.stages = stages
        self.multi = jax.process_count() > 1
        self.main = jax.process_index() == 0

    def host(self, name: str) -> Any:
        """Process 0 runs it; on every process it would pay the teacher N times and interleave rows in the
        same files. The others wait, then read the result from its marker."""
        if not self.multi:
            return self.stages.run(name)
        result = self.stages.run(name) if self.main else None
        return self._after_barrier(name, result)

    def every_process(self, name: str) -> Any:
        """Training: one SPMD program, so every process runs it, or none does (process 0's plan decides);
        process 0 writes the marker."""
        if not self.multi:
            return self.stages.run(name)
        from jax.experimental import multihost_utils

        done = bool(multihost_utils.broadcast_one_to_all(np.int32(self.stages.done(name))))
        result = None
        if self.main:
            result = self.stages.run(name)
        elif not done:
            self.stages.decisions[name].stage.fn()
        return self._after_barrier(name, result)

    def _after_barrier(self, name: str, result: Any) -> Any:
        wait_for_processes(f"fdd stage {name}", HOST_STAGE_TIMEOUT_S)
        if self.main:
            return result
        try:
            return self.stages.result(name)
        except RuntimeError as e:
            raise RuntimeError(f"{e}: process 0 finished it (is the run dir on storage every host sees?)") from None


def check_fdd(cfg: FddConfig) -> None:
    """Everything wrong with the config that can be known before any work (methods/preflight.py)."""
    if not cfg.eval.problems and not cfg.eval.benchmarks:
        raise ConfigError("eval.problems or eval.benchmarks must name at least one test set", key="eval.problems")
    preflight.teach_problems(cfg.teach)
    run = Path(cfg.run_dir)
    preflight.eval_sets(_eval_configs(cfg, run, 0, run / "problems" / "seed.jsonl")[0])
    preflight.train_devices(cfg.train)


def fdd_stages(cfg: FddConfig, run: Path, stages: Stages, progress: bool = True) -> list[Stage]:
    """Every round's stages, each with the keys and files it reads (a later round reads all earlier ones)."""
    seed_file = run / "problems" / "seed.jsonl"
    seeds = lambda: load_problems(str(seed_file))  # noqa: E731  (read when a stage needs them, after the copy)
    paid = cfg.teach.teacher.kind == "openai"
    teach_in = {**teach_keys(cfg), "teach.styles": list(cfg.teach.styles)}
    train_in = config_keys(cfg, "train", "continue_training",
                           exclude=("train.run_dir", "train.data.rationales", "train.steps", "train.epochs"))
    out = [Stage("seed_problems", lambda: copy_seed_problems(cfg.teach.problems, cfg.teach.data_dir, cfg.teach.limit,
                                                             seed_file),
                 **seed_inputs(cfg.teach), outputs=["problems/seed.jsonl"])]
    for k in range(cfg.rounds + 1):
        if k == 0:
            problems_k = seeds
        else:
            out.append(Stage(f"r{k}_new_problems", lambda k=k: _new_problems(cfg, run, k, seeds()),
                             keys={**teach_in, **config_keys(cfg, "teach.fdd")}, outputs=[f"problems/r{k}"],
                             paid=paid))
            problems_k = lambda k=k: load_problems(str(run / "problems" / f"r{k}" / "all.jsonl"))  # noqa: E731
        teach_cfg = dataclasses.replace(cfg.teach, run_dir=str(run), round=k, limit=None)
        out.append(Stage(f"r{k}_teach", lambda t=teach_cfg, p=problems_k: teach(t, p(), progress=progress).to_dict()[
            "styles"], keys=teach_in, files=prompt_files(cfg.teach), outputs=teach_outputs(k), paid=paid))
        if k > 0 and cfg.continue_training:
            out.append(Stage(f"r{k - 1}_export", lambda k=k: _export_round(run, k - 1), outputs=[f"hf/r{k - 1}"]))
        train_cfg = _round_train_config(cfg, run, k)
        steps = {f"round_steps[{k}]": cfg.round_steps[k]} if cfg.round_steps else config_keys(cfg, "train.steps",
                                                                                             "train.epochs")
        out.append(Stage(f"r{k}_train", lambda c=dataclasses.replace(train_cfg, progress=progress and
                                                                     train_cfg.progress): dataclasses.asdict(train(c)),
                         keys={**train_in, **steps}, outputs=[f"train/r{k}"]))
        out.append(Stage(f"r{k}_eval", lambda k=k: _evaluate_round(cfg, run, k, seed_file, progress),
                         keys=config_keys(cfg, "eval", "solve_style", exclude=("eval.problems", "eval.data_dir")),
                         files=eval_files("eval", cfg.eval.benchmarks, cfg.eval.problems, cfg.eval.data_dir),
                         outputs=[f"train/r{k}/eval"]))
        out.append(Stage(f"r{k}_split", lambda k=k: _split(cfg, run, k, stages.result(f"r{k}_eval")["step"],
                                                           seed_file),
                         outputs=[f"fdd/split_r{k}.json"]))
    return out


def run_fdd(cfg: FddConfig, log: Callable[[str], None] | None = None, restart_from: str | None = None,
            progress: bool = True) -> list[dict]:
    """Run (or resume) every stage; returns the per-round accuracy records written to RUN/fdd/rounds.json.
    A stage whose inputs changed since it ran reruns (with every later one); one that paid for teacher calls
    only with `restart_from` (methods/stages.py)."""
    configure_sandbox(cfg.sandbox)
    # before any JAX work, so every stage (also of a resumed run) knows which process it is on, and a run that
    # needs an accelerator fails before paying for teacher calls
    prepare_runtime(cfg.train)
    check_fdd(cfg)
    main = jax.process_index() == 0
    log = (log or Console().print) if main else (lambda _: None)
    run = Path(cfg.run_dir)
    seed_file = run / "problems" / "seed.jsonl"
    stages = Stages(run, log, restart_from, writer=main)
    plan = stages.plan(fdd_stages(cfg, run, stages, progress), cfg)
    jobs = _JobStages(stages)
    for decision in plan:
        (jobs.every_process if decision.stage.name.endswith("_train") else jobs.host)(decision.stage.name)
    rounds: list[dict] = []
    hard0 = set(json.loads((run / "fdd" / "split_r0.json").read_text(encoding="utf-8"))["hard"])
    for k in range(cfg.rounds + 1):
        record = dict(stages.result(f"r{k}_eval"), split=stages.result(f"r{k}_split"))
        record["accuracy"]["seed_hard_r0/" + cfg.solve_style] = _hard_accuracy(
            cfg, run, k, record["step"], seed_file, hard0)
        rounds.append(record)
    if main:
        write_json_atomic(run / "fdd" / "rounds.json", rounds)
    return rounds
