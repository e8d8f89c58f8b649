"""Resumable, fingerprinted stages for the method pipelines: each stage leaves RUN/stages/NAME.json.

A pipeline lists its stages up front (`Stage`: a name, the work, the config keys it reads, the files from
outside RUN it reads, what it writes under RUN), and `Stages.plan` decides for each, before any work:

    skip    it finished with the same inputs: its saved summary is returned, nothing is redone
    resume  it started with the same inputs and did not finish: it runs over what it left (training resumes
            from its checkpoint, the teacher from its response cache)
    run     it never started
    rerun   its inputs changed since it ran, or a stage before it does not skip: what it wrote moves to
            RUN/superseded/NNN/ (nothing is deleted) and it runs again

A rerun of a `paid` stage (teacher calls) is refused, before anything changes, with one message naming the
changed keys, unless `restart_from` (`--restart-from STAGE`) names that stage or an earlier one; the response
cache (RUN/teacher/, never superseded) still means no request is paid twice.

The fingerprint is the values of the keys a stage reads and the sha256 of its outside files, compared key by
key, so a code change alone reruns nothing: a key new to the code counts as changed only when it is not at
its default, and keys marked config.RUNTIME (progress bars, checkpoint cadence) are not recorded. Stages
after one that does not skip rerun, so what they read from RUN is never older than its source.

Config history: an invocation that runs any stage writes its config to RUN/configs/NNN.yaml with the stages
it ran, and RUN/config.yaml is the latest of them; each marker names the config it ran under. A stage that
skips had the same inputs under both, so RUN/config.yaml always describes the results beside it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from distill_jax import config_fields
from distill_jax.config import ConfigError, save_resolved
from distill_jax.data.problems import BENCHMARKS, load_problems, resolve_benchmark
from distill_jax.data.records import DataError, write_jsonl
from distill_jax.fileio import sha256_file, write_json_atomic


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[], Any]  # the work; returns the JSON summary the marker keeps
    keys: Mapping[str, Any] = field(default_factory=dict)  # dotted config key -> the value the stage reads
    files: Mapping[str, Path | None] = field(default_factory=dict)  # label -> a file (or dir) outside RUN it reads
    outputs: Sequence[str] = ()  # paths under RUN it writes: moved to RUN/superseded/NNN/ before a rerun
    paid: bool = False  # it pays for teacher calls: a rerun needs --restart-from


@dataclass(frozen=True)
class Decision:
    stage: Stage
    action: str  # skip | resume | run | rerun
    why: str  # for a rerun: the changed keys, or the stage it follows
    inputs: dict


class RerunRefused(ConfigError):
    """A changed input would rerun a stage that paid for teacher calls; nothing was changed."""


class Stages:
    """The markers of one run directory, and the plan for this invocation (`plan`, then `run` each stage).

    `writer=False` (FDD's processes other than 0) plans and reads but never writes markers or moves files."""

    def __init__(self, run_dir: Path, log: Callable[[str], None], restart_from: str | None = None,
                 writer: bool = True):
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "stages"
        self.log = log
        self.restart_from = restart_from
        self.writer = writer
        self.decisions: dict[str, Decision] = {}
        self.config_file: str | None = None

    # ------------------------------------------------------------------------------------------ plan
    def plan(self, stages: Sequence[Stage], config: Any) -> list[Decision]:
        """Decide every stage (see the module docstring); refuses before any change when a paid stage would
        rerun. Then, if anything will run, records `config` in the history and moves stale outputs aside."""
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names repeat: {names}")
        if self.restart_from is not None and self.restart_from not in names:
            raise ConfigError(f"--restart-from {self.restart_from}: not a stage of this run ({', '.join(names)})")
        forced = names.index(self.restart_from) if self.restart_from else len(names)
        defaults = {k.name: k.default for k in config_fields.keys(type(config))}
        decisions: list[Decision] = []
        legacy: list[str] = []
        first: Decision | None = None  # the first stage that does not skip: every later one reruns
        for i, stage in enumerate(stages):
            inputs = _inputs(stage)
            marker = self._marker(stage.name)
            changes = _changes(marker.get("inputs"), inputs, defaults) if marker and "inputs" in marker else []
            if i >= forced:
                action, why = ("rerun" if marker else "run"), f"--restart-from {self.restart_from}"
            elif marker is None:
                action, why = "run", ""
            elif first is not None:
                action, why = "rerun", f"it follows {first.stage.name}, which {first.action}s"
            elif changes:
                action, why = "rerun", "changed since it ran: " + "; ".join(changes)
            elif "inputs" not in marker:
                # written before stages had fingerprints: kept, as that version would have; its inputs are
                # recorded from now on
                action, why = "skip", ""
                legacy.append(stage.name)
            else:
                action, why = ("resume" if marker.get("status") == "started" else "skip"), ""
            decision = Decision(stage, action, why, inputs)
            if action != "skip" and first is None:
                first = decision
            decisions.append(decision)
        refused = [d for i, d in enumerate(decisions) if d.action == "rerun" and d.stage.paid and i < forced]
        if refused:
            raise RerunRefused(_refusal(self.run_dir, refused, first))
        self.decisions = {d.stage.name: d for d in decisions}
        # stages of an earlier config that this one does not have (FDD with fewer rounds): their outputs would
        # otherwise stay in the report as if this config had made them
        orphans = sorted(p.stem for p in self.dir.glob("*.json") if p.stem not in self.decisions)
        if self.writer:
            for name in legacy:
                self.log(f"stage {name}: its marker predates fingerprints; kept, with this run's inputs recorded")
                write_json_atomic(self._path(name), {"status": "done", **self._marker(name),
                                                     "inputs": self.decisions[name].inputs})
            if first is not None or orphans:
                self._record(config, decisions, orphans)
        return decisions

    def _record(self, config: Any, decisions: list[Decision], orphans: list[str]) -> None:
        """RUN/configs/NNN.yaml (+ RUN/config.yaml) for this invocation; stale markers and outputs moved aside."""
        history = self.run_dir / "configs"
        number = 1 + max((int(p.stem) for p in history.glob("[0-9][0-9][0-9].yaml")), default=0)
        ran = [d.stage.name for d in decisions if d.action != "skip"]
        self.config_file = f"configs/{number:03d}.yaml"
        for path in (self.run_dir / self.config_file, self.run_dir / "config.yaml"):
            save_resolved(config, path, stages=ran, time=_now())
        aside = self.run_dir / "superseded" / f"{number:03d}"
        for d in decisions:
            if d.action == "rerun":
                moved = self._move_aside(d.stage.name, d.stage.outputs, aside)
                where = f"; its old {', '.join(moved)} moved to {aside.relative_to(self.run_dir)}/" if moved else ""
                self.log(f"stage {d.stage.name}: reruns ({d.why}){where}")
        for name in orphans:
            moved = self._move_aside(name, self._marker(name).get("outputs", []), aside)
            self.log(f"stage {name}: not a stage of this config; its marker{' and ' if moved else ''}"
                     f"{', '.join(moved)} moved to {aside.relative_to(self.run_dir)}/")

    def _move_aside(self, name: str, outputs: Sequence[str], aside: Path) -> list[str]:
        """A stage's outputs moved under `aside` (same relative paths), its marker to `aside`/stages/."""
        moved = []
        for rel in [*outputs, f"stages/{name}.json"]:
            src = self.run_dir / rel
            if src.exists():
                (aside / rel).parent.mkdir(parents=True, exist_ok=True)
                src.rename(aside / rel)
                moved.append(rel)
        return [rel for rel in moved if not rel.startswith("stages/")]

    # ------------------------------------------------------------------------------------------- run
    def run(self, name: str) -> Any:
        """The planned stage: its saved result when it skips, else the result of running it now."""
        decision = self.decisions[name]
        if decision.action == "skip":
            self.log(f"[dim]stage {name}: done earlier, skipped[/dim]")
            return self.result(name)
        self.log(f"[bold]stage {name}[/bold]" + (" (resumed)" if decision.action == "resume" else ""))
        base = {"inputs": decision.inputs, "fingerprint": _fingerprint(decision.inputs),
                "outputs": list(decision.stage.outputs),
                "config": self.config_file, "started": _now()}
        if self.writer:
            write_json_atomic(self._path(name), {"status": "started", **base})
        start = time.perf_counter()
        result = decision.stage.fn()
        if self.writer:
            write_json_atomic(self._path(name), {"status": "done", **base, "finished": _now(),
                                                 "seconds": round(time.perf_counter() - start, 1),
                                                 "result": result})
        self.decisions[name] = dataclasses.replace(decision, action="skip")
        return result

    def run_all(self, stages: Sequence[Stage], config: Any) -> None:
        """Plan, then run every stage in order (one process; FDD's several run them through its _JobStages)."""
        for decision in self.plan(stages, config):
            self.run(decision.stage.name)

    def done(self, name: str) -> bool:
        """Planned to skip: finished earlier with the same inputs (or just now)."""
        return self.decisions[name].action == "skip"

    def result(self, name: str) -> Any:
        marker = self._marker(name)
        if marker is None or marker.get("status", "done") != "done":
            raise RuntimeError(f"stage {name}: no finished marker in {self.dir}")
        return marker["result"]

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def _marker(self, name: str) -> dict | None:
        path = self._path(name)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_markers(run_dir: Path) -> dict[str, dict]:
    """Every marker of a run, by stage name, in the order the stages finished (for `distill-jax show`)."""
    paths = sorted((run_dir / "stages").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in paths}


# ----------------------------------------------------------------------------------------- fingerprints
def _inputs(stage: Stage) -> dict:
    files = {label: {"path": str(path), "sha256": sha256_file(path) if path.exists() else None}
             for label, path in stage.files.items() if path is not None}
    return {"keys": json.loads(json.dumps(dict(stage.keys), default=str)), "files": files}


def _fingerprint(inputs: dict) -> str:
    """A short digest of the inputs, for display: which runs of a stage read the same thing."""
    keys = {**inputs["keys"], **{label: f["sha256"] for label, f in inputs["files"].items()}}
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def _changes(old: dict, new: dict, defaults: Mapping[str, Any]) -> list[str]:
    """What differs between a marker's inputs and this run's, one entry per key or file, in readable form."""
    out = []
    old_keys = old.get("keys", {})
    for key, value in new["keys"].items():
        if key in old_keys:
            if old_keys[key] != value:
                out.append(f"{key}: {_short(old_keys[key])} -> {_short(value)}")
        elif key not in defaults or defaults[key] != value:  # a key older code did not record
            out.append(f"{key}: not recorded -> {_short(value)}")
    old_files = old.get("files", {})
    for label, f in new["files"].items():
        before = old_files.get(label, {}).get("sha256")
        if before != f["sha256"]:
            out.append(f"{label}: {f['path']} {'is new' if label not in old_files else 'changed'} "
                       f"(sha256 {str(before)[:12]} -> {str(f['sha256'])[:12]})")
    out += [f"{label}: no longer read" for label in old_files if label not in new["files"]]
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _refusal(run_dir: Path, refused: list[Decision], first: Decision) -> str:
    lines = [f"{run_dir}: this rerun would redo stages that paid for teacher calls; nothing was changed."]
    lines += [f"  stage {d.stage.name}: {d.why.removeprefix('changed since it ran: ')}" for d in refused]
    if first.stage.name not in {d.stage.name for d in refused}:
        lines.append(f"  stage {first.stage.name}: {first.why or 'it has no marker'}")
    lines.append(f"To accept, rerun with --restart-from {first.stage.name} (that stage and every later one run "
                 f"again; the teacher's response cache still answers every request it has seen, so none is paid "
                 f"twice), or give another run_dir.")
    return "\n".join(lines)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def config_keys(cfg: Any, *prefixes: str, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The keys of `cfg` a stage reads: those under `prefixes` (sections like "train" or keys like
    "teach.limit"), except `exclude` and config.RUNTIME keys."""
    runtime = {k.name for k in config_fields.keys(type(cfg)) if k.runtime}
    exclude = tuple(exclude)
    under = lambda key, ps: any(key == p or key.startswith(p + ".") for p in ps)  # noqa: E731
    return {k: v for k, v in config_fields.values(cfg).items()
            if under(k, prefixes) and k not in runtime and not under(k, exclude)}


# How the teacher client runs, not what it answers: changing these reruns no teacher stage.
TEACHER_RUNTIME = tuple(f"teach.teacher.{k}" for k in (
    "api_key_env", "concurrency", "requests_per_minute", "tokens_per_minute", "timeout_s", "max_retries",
    "budget_usd", "dry_run", "prices", "est_completion_tokens", "backoff_base_s", "backoff_max_s", "batch_poll_s"))


def teach_keys(cfg: Any) -> dict[str, Any]:
    """What a teach stage reads of a pipeline's `teach` section; the problems are the seed stage's, the styles
    the pipeline's, `teach.fdd` the FDD question stage's (`teach.sandbox` says where programs may run, not
    what they give)."""
    return config_keys(cfg, "teach", exclude=("teach.problems", "teach.data_dir", "teach.limit", "teach.run_dir",
                                              "teach.round", "teach.chunk", "teach.styles", "teach.fdd",
                                              "teach.sandbox", *TEACHER_RUNTIME))


def teach_outputs(round_: int) -> list[str]:
    """What teacher.generate.teach writes for a round, except the response cache (the paid work, kept)."""
    return [f"rationales/r{round_}", f"rejects/r{round_}", "teacher/summary.json", f"teacher/config_r{round_}.yaml"]


def prompt_files(teach: Any, prefix: str = "teach") -> dict[str, Path | None]:
    """A user's prompt directory is an input like the problems (the packaged prompts are code)."""
    return {f"{prefix}.prompt_dir": Path(teach.prompt_dir)} if teach.prompt_dir else {}


def seed_inputs(teach: Any, prefix: str = "teach") -> dict[str, dict]:
    """The seed-problem stage's keys and files: the problems file's content (not its path, so moving it
    changes nothing), or the spec itself when it names no file (hf:...), and the limit."""
    path = problems_file(teach.problems, teach.data_dir)
    keys = {f"{prefix}.limit": teach.limit, **({} if path else {f"{prefix}.problems": teach.problems})}
    return {"keys": keys, "files": {f"{prefix}.problems": path} if path else {}}


def problems_file(spec: str, data_dir: str | None) -> Path | None:
    """The file a problems spec (JSONL path or benchmark name) reads, for its fingerprint; None for `hf:`."""
    if spec.lower() in BENCHMARKS:
        try:
            return resolve_benchmark(spec.lower(), data_dir)
        except DataError:
            return None  # the stage's own loading says why
    return None if spec.startswith("hf:") else Path(spec)


def eval_files(prefix: str, benchmarks: Iterable[str], problems: Iterable[str],
               data_dir: str | None) -> dict[str, Path | None]:
    """Label -> file of each test set an eval reads: `eval.benchmarks.svamp`, `eval.problems.test_id`."""
    out: dict[str, Path | None] = {f"{prefix}.benchmarks.{b}": problems_file(b, data_dir) for b in benchmarks}
    out.update({f"{prefix}.problems.{Path(p).stem}": Path(p) for p in problems})
    return out


def copy_seed_problems(problems: str, data_dir: str | None, limit: int | None, seed_file: Path) -> int:
    """A pipeline's first stage: its seed problems copied into RUN, so the run is self-contained and later
    stages (and reruns) read the same problems even when the source file changes."""
    return write_jsonl(seed_file, (p.to_row() for p in load_problems(problems, data_dir)[:limit]))
