"""`teach`: problems x styles x samples -> teacher -> parse -> verify -> rationale and reject files.

The teacher is an OpenAI-compatible endpoint (through the cached client) or an offline one (`symbolic`,
`gold`); see teacher/teachers.py. One client session serves the whole run: replies stream in while the ones
already here are parsed and verified in batches (at most `chunk` at a time; PoT through the sandbox pool),
and the progress bar shows kept/rejected/cost while it runs. The response cache is the durable store of paid
work; the style files are rebuilt from it at the end of every style, in job order, and written atomically, so
a rerun or a resume after kill -9 sends only what the cache lacks and writes the same bytes.

    RUN/rationales/r{round}/STYLE.jsonl   verified records (DESIGN.md format)
    RUN/rationales/r{round}/README.md     its dataset card (data/rationale_dataset.py)
    RUN/rejects/r{round}/STYLE.jsonl      records that failed parsing or verification, with `reason`
    RUN/teacher/summary.json              kept / rejected by reason per style, tokens, cost, cache hits
    RUN/teacher/cache.sqlite              the response cache
    RUN/teacher/config_r{round}.yaml      the resolved config of each round (RUN/config.yaml is the CLI's, or
                                          the config of the pipeline that called teach())

The dry run is teacher/dry_run.py; FDD's question generation, which reuses these teachers, teacher/fdd_problems.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from distill_jax import config as config_lib
from distill_jax.config import ConfigError
from distill_jax.data.problems import Problem, load_problems
from distill_jax.data.rationale_dataset import write_card
from distill_jax.data.records import DataError, rationale_record, write_jsonl
from distill_jax.fileio import write_json_atomic
from distill_jax.progress import progress_bar
from distill_jax.reasoning.sandbox import configure_sandbox
from distill_jax.teacher.dry_run import dry_run_estimate
from distill_jax.teacher.teach_config import TeachConfig
from distill_jax.teacher.teachers import Draft, LLMTeacher, OfflineTeacher, teacher_session
from distill_jax.teacher.verification import verify

# Request failures that no later request in this run can avoid: stop instead of paying for more 401s.
_STOPPING_FAILURES = ("auth", "budget", "dry_run", "unreachable")


@dataclass
class StyleSummary:
    jobs: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason kind -> count
    duplicates: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # request failure kind -> count


@dataclass
class TeachSummary:
    run_dir: str
    round: int
    teacher: str
    model: str
    styles: dict[str, StyleSummary] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] | None = None
    stopped: str | None = None  # why the run stopped early (auth failure, budget), None when it finished
    errors: dict[str, str] = field(default_factory=dict)  # failure kind -> first message (key scrubbed)

    def to_dict(self) -> dict[str, Any]:
        return config_lib.to_dict(self)


def failure_kind(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


def _progress_bar(enabled: bool) -> Progress:
    """kept / rejected / failed / cost per style while it runs (disabled for library use)."""
    return progress_bar("{task.description:>8}", "kept {task.fields[kept]}  rejected {task.fields[rejected]}  "
                        "failed {task.fields[failed]}  ${task.fields[cost]:.4f}", enabled=enabled, elapsed=True)


def load_teach_problems(cfg: TeachConfig) -> list[Problem]:
    """`problems` (first `limit`); none at all is an error naming the file, before any work."""
    try:
        problems = load_problems(cfg.problems, cfg.data_dir)
    except DataError as e:  # the CLI reports a config error cleanly, without a traceback
        raise ConfigError(f"problems: {e}") from e
    problems = problems[: cfg.limit] if cfg.limit is not None else problems
    if not problems:
        raise ConfigError(f"problems: {cfg.problems} holds no problems" +
                          (f" (limit={cfg.limit})" if cfg.limit is not None else "") + ": nothing to teach")
    return problems


def teach(cfg: TeachConfig, problems: list[Problem] | None = None, progress: bool = False) -> TeachSummary:
    """Run the teacher over problems x styles x samples and write the run directory (see the module doc).
    `problems` given (a pipeline's own list, possibly empty) replaces loading `cfg.problems`."""
    configure_sandbox(cfg.sandbox)
    problems = load_teach_problems(cfg) if problems is None else problems[: cfg.limit]
    run = Path(cfg.run_dir)
    with teacher_session(cfg) as teacher:
        teacher.check_problems(problems, cfg.problems)
        summary = TeachSummary(str(run), cfg.round, cfg.teacher.kind, teacher.model)
        if cfg.teacher.dry_run:
            summary.estimate = dry_run_estimate(cfg, problems, teacher)
            return summary
        config_lib.save_resolved(cfg, run / "teacher" / f"config_r{cfg.round}.yaml")
        with _progress_bar(progress) as bar:
            for style in cfg.styles:
                summary.styles[style] = _teach_style(cfg, style, problems, teacher, summary, bar)
                if summary.stopped:
                    break
        if isinstance(teacher, LLMTeacher):
            summary.usage = teacher.client.usage.to_dict()
    write_json_atomic(run / "teacher" / "summary.json", summary.to_dict())
    if summary.styles:
        write_card(run / "rationales" / f"r{cfg.round}")  # README.md: the round as a Hugging Face dataset
    return summary


def _teach_style(cfg: TeachConfig, style: str, problems: list[Problem], teacher: OfflineTeacher | LLMTeacher,
                 summary: TeachSummary, bar: Any) -> StyleSummary:
    stats = StyleSummary()
    jobs = [(p, s) for p in problems for s in range(cfg.samples)]
    stats.jobs = len(jobs)
    client = teacher.client if isinstance(teacher, LLMTeacher) else None
    cost = (lambda: client.usage.cost_usd) if client else (lambda: 0.0)
    task = bar.add_task(style, total=len(jobs), kept=0, rejected=0, failed=0, cost=0.0)
    outcomes: dict[int, tuple[Draft, tuple[str | None, str | None]]] = {}  # job -> (draft, (prediction, reason))
    live = {"kept": 0, "rejected": 0, "failed": 0}
    for ready in teacher.drafts(style, jobs, cfg.chunk):
        checkable = [(i, d) for i, d in ready if d.target is not None]
        checks = verify(style, [d.target for _, d in checkable], [jobs[i][0].answer for i, _ in checkable],
                        cfg.verify_timeout_s)
        verdicts = {i: check for (i, _), check in zip(checkable, checks)}
        for i, draft in ready:
            outcomes[i] = (draft, verdicts.get(i, (None, draft.reason)))
            live["failed" if draft.failure else "rejected" if outcomes[i][1][1] else "kept"] += 1
            if draft.failure is not None and failure_kind(draft.failure) in _STOPPING_FAILURES:
                summary.stopped = summary.stopped or draft.failure
                if client is not None:
                    client.stop(draft.failure)  # nothing more is sent; what is in flight still lands
        bar.update(task, advance=len(ready), cost=cost(), **live)
    kept, rejected = _records(cfg, style, jobs, outcomes, teacher, summary, stats)
    run = Path(cfg.run_dir)
    write_jsonl(run / "rationales" / f"r{cfg.round}" / f"{style}.jsonl", kept)
    write_jsonl(run / "rejects" / f"r{cfg.round}" / f"{style}.jsonl", rejected)
    return stats


def _records(cfg: TeachConfig, style: str, jobs: list[tuple[Problem, int]], outcomes: dict, teacher: Any,
             summary: TeachSummary, stats: StyleSummary) -> tuple[list[dict], list[dict]]:
    """Kept and rejected records in job order (the first of identical rationales of a problem wins), and the
    style's counts. Nothing run-dependent (cache hit or not, arrival order) goes in a record: a rerun writes
    the same bytes."""
    version = teacher.prompt_version(style)
    kept: list[dict] = []
    rejected: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for i in sorted(outcomes):
        (problem, sample), (draft, (prediction, reason)) = jobs[i], outcomes[i]
        if draft.failure is not None:
            fkind = failure_kind(draft.failure)
            stats.failures[fkind] = stats.failures.get(fkind, 0) + 1
            summary.errors.setdefault(fkind, draft.failure)
            continue
        text = draft.target if draft.target is not None else ""
        if (problem.id, text) in seen and draft.target is not None:
            stats.duplicates += 1
            continue
        seen.add((problem.id, text))
        meta = {"teacher_kind": summary.teacher, "finish_reason": draft.finish_reason,
                "source": problem.source, **({"fdd": problem.extra["fdd"]} if "fdd" in problem.extra else {})}
        record = rationale_record(
            problem_id=problem.id, question=problem.question, answer=problem.answer, style=style,
            rationale=text, prediction=prediction, correct=reason is None, round=cfg.round,
            teacher={"model": teacher.model, "prompt_version": version, "sample": sample, "usage": draft.usage},
            meta=meta)
        if reason is None:
            kept.append(record)
            stats.kept += 1
        else:
            rejected.append({**record, "reason": reason, **({"raw": draft.raw} if draft.raw else {})})
            stats.rejected[failure_kind(reason)] = stats.rejected.get(failure_kind(reason), 0) + 1
    return kept, rejected
