"""`teach`: problems x styles x samples -> teacher -> parse -> verify -> rationale and reject files.

The teacher is an OpenAI-compatible endpoint (through the cached client) or an offline one (`symbolic`,
`gold`). Work goes in chunks: each chunk's completions are parsed, verified against the gold answer in one
batch (PoT through the sandbox pool), and counted, so the progress bar shows kept/rejected/cost while it
runs. The response cache is the durable store of paid work; the style files are rebuilt from it at the end
of every style and written atomically, so a rerun or a resume after kill -9 sends only what the cache lacks
and never duplicates a record.

    RUN/rationales/r{round}/STYLE.jsonl   verified records (DESIGN.md format)
    RUN/rationales/r{round}/README.md     its dataset card (data/rationale_dataset.py)
    RUN/rejects/r{round}/STYLE.jsonl      records that failed parsing or verification, with `reason`
    RUN/teacher/summary.json              kept / rejected by reason per style, tokens, cost, cache hits
    RUN/teacher/cache.sqlite              the response cache
    RUN/teacher/config_r{round}.yaml      the resolved config of each round (RUN/config.yaml is the CLI's, or
                                          the config of the pipeline that called teach())

FDD's question generation, which reuses these teachers, is in teacher/fdd_problems.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from rich.progress import Progress

from distill_jax import config as config_lib
from distill_jax.config import ConfigError
from distill_jax.data.problems import Problem, load_problems
from distill_jax.data.rationale_dataset import write_card
from distill_jax.data.records import DataError, rationale_record, write_jsonl
from distill_jax.fileio import write_json_atomic
from distill_jax.progress import progress_bar
from distill_jax.reasoning.sandbox import SandboxConfig, configure_sandbox
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import get_style
from distill_jax.teacher.cache import ResponseCache
from distill_jax.teacher.client import ChatRequest, ChatResult, ClientConfig, TeacherClient
from distill_jax.teacher.prompts import (FDD_TEMPLATES, STYLE_TEMPLATES, get_template, prompt_version,
                                         templates_for_style)

# Request failures that no later request in this run can avoid: stop instead of paying for more 401s.
_STOPPING_FAILURES = ("auth", "budget", "dry_run")
_DEFAULT_SAMPLED_TEMPERATURE = 0.7


@dataclass(frozen=True)
class TeacherConfig(ClientConfig):
    """`teacher.*`: which teacher, plus the client's fields (used by `kind: openai`)."""

    kind: Literal["openai", "symbolic", "gold"] = "symbolic"
    error_rate: float = 0.1  # symbolic: share of rationales written with a deliberate mistake

    def client_config(self) -> ClientConfig:
        return ClientConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ClientConfig)})


@dataclass(frozen=True)
class FddConfig:
    samples: int = 3  # independent solutions of each generated problem
    agree: int = 2  # how many of them must give the same answer
    solve_style: str = "pot"
    per_problem: int = 1  # new problems asked for per seed problem


@dataclass(frozen=True)
class TeachConfig:
    problems: str = "gsm8k_train"  # JSONL path or benchmark name (data/problems.py)
    run_dir: str = "runs/teach"
    styles: tuple[str, ...] = ("cot",)
    samples: int = 1
    round: int = 0
    # Per style; a style not listed gets 0 (greedy) with one sample and 0.7 with several.
    temperature: dict[str, float] = field(default_factory=dict)
    max_tokens: int = 512
    limit: int | None = field(default=None, metadata=config_lib.at_least(1))  # first N problems
    seed: int = 0
    data_dir: str | None = None
    prompt_dir: str | None = None  # default: the packaged teacher/prompt_files
    chunk: int = 256  # jobs per parse/verify batch (with teacher.batch_api: the whole style)
    verify_timeout_s: float = 2.0  # per PoT program / EoT system
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    fdd: FddConfig = field(default_factory=FddConfig)

    def __post_init__(self) -> None:
        unknown = [s for s in self.styles if s not in STYLE_TEMPLATES]
        if unknown:
            raise ValueError(f"styles: unknown {unknown} (known: {', '.join(STYLE_TEMPLATES)})")
        if self.samples < 1 or self.chunk < 1:
            raise ValueError("samples and chunk must be >= 1")
        if self.fdd.solve_style not in STYLE_TEMPLATES:
            raise ValueError(f"fdd.solve_style: unknown style {self.fdd.solve_style!r}")
        if not 1 <= self.fdd.agree <= self.fdd.samples:
            raise ValueError(f"fdd.agree must be in 1..fdd.samples ({self.fdd.samples}), got {self.fdd.agree}")

    def temperature_for(self, style: str, samples: int | None = None) -> float:
        n = self.samples if samples is None else samples
        return float(self.temperature.get(style, 0.0 if n == 1 else _DEFAULT_SAMPLED_TEMPERATURE))


@dataclass
class Draft:
    """One job's outcome before verification: a target text, or why there is none."""

    target: str | None
    reason: str | None = None  # parse or teacher reason: the job becomes a reject
    failure: str | None = None  # the request failed ("kind: message"): not a reject, a rerun retries it
    usage: dict = field(default_factory=dict)
    finish_reason: str | None = None
    raw: str | None = None  # the completion before parsing (kept in rejects, to see what went wrong)


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


# --- teachers -----------------------------------------------------------------------------------------
class OfflineTeacher:
    """`symbolic` or `gold`: targets written directly in the style's format, nothing to parse or pay."""

    def __init__(self, cfg: TeachConfig):
        self.kind = cfg.teacher.kind
        if self.kind == "symbolic":
            from distill_jax.teacher.symbolic import SymbolicTeacher

            self.impl = SymbolicTeacher(cfg.teacher.error_rate, cfg.seed)
            self.model = f"symbolic(error_rate={cfg.teacher.error_rate:g},seed={cfg.seed})"
        else:
            from distill_jax.teacher.gold import GOLD_VERSION, GoldTeacher

            self.impl = GoldTeacher()
            self.model = GOLD_VERSION

    def prompt_version(self, style: str) -> str:
        # An offline teacher's "prompt" is its code: the hash changes whenever what it writes may change.
        source = Path(sys.modules[type(self.impl).__module__].__file__).read_bytes()
        return f"{self.kind}:{style}#{hashlib.sha256(source).hexdigest()[:12]}"

    def draft(self, style: str, jobs: list[tuple[Problem, int]]) -> list[Draft]:
        out = []
        for problem, sample in jobs:
            try:
                result = self.impl.rationale(problem, style, sample=sample)
            except (ValueError, KeyError, NotImplementedError) as e:
                out.append(Draft(None, reason=f"teacher: {e}"))
                continue
            text, reason = (result.text, result.reason) if hasattr(result, "reason") else (result, None)
            out.append(Draft(text, reason=None if text else (reason or "teacher: no rationale")))
        return out

    def new_problem(self, problem: Problem, kind: str, sample: int) -> Problem:
        if self.kind != "symbolic":
            raise ConfigError(f"teacher.kind: the {self.kind} teacher cannot write new problems (FDD)")
        return self.impl.new_problem(problem, kind=kind, sample=sample)


class LLMTeacher:
    """An OpenAI-compatible endpoint through the cached client; completions are parsed into targets."""

    def __init__(self, cfg: TeachConfig, client: TeacherClient):
        self.cfg, self.client = cfg, client
        self.model = cfg.teacher.model

    def prompt_version(self, style: str) -> str:
        return prompt_version(style, self.cfg.prompt_dir)

    def _request(self, template_name: str, sample: int, temperature: float, **fields: Any) -> ChatRequest:
        template = get_template(template_name, self.cfg.prompt_dir)
        return ChatRequest.make(list(template.render(**fields)), sample=sample, temperature=temperature,
                                max_tokens=self.cfg.max_tokens)

    def requests(self, style: str, jobs: list[tuple[Problem, int]], temperature: float,
                 stage_fields: list[dict] | None = None) -> list[ChatRequest]:
        """The first-stage requests of a style (decomposition: the plans), or a later stage with its fields."""
        names = STYLE_TEMPLATES[style]
        name = names[0] if stage_fields is None else names[1]
        return [self._request(name, s, temperature, question=p.question, **(stage_fields[i] if stage_fields else {}))
                for i, (p, s) in enumerate(jobs)]

    def draft(self, style: str, jobs: list[tuple[Problem, int]]) -> list[Draft]:
        from distill_jax.teacher.parse import clean_subanswers, clean_subquestions, parse_completion

        temperature = self.cfg.temperature_for(style)
        results = self.client.run_sync(self.requests(style, jobs, temperature))
        if style != "decomp":
            return [_draft_from(r, lambda text: parse_completion(text, style)) for r in results]
        plans = [_draft_from(r, clean_subquestions) for r in results]
        todo = [i for i, d in enumerate(plans) if d.target is not None]
        solves = self.client.run_sync(self.requests(
            style, [jobs[i] for i in todo], temperature, [{"subquestions": plans[i].target} for i in todo]))
        for i, result in zip(todo, solves):
            solved = _draft_from(result, lambda text, plan=plans[i].target: clean_subanswers(text, plan))
            solved.usage = _add_usage(plans[i].usage, solved.usage)
            plans[i] = solved
        return plans

    def new_problem_requests(self, problems: list[Problem], kind: str) -> list[ChatRequest]:
        temperature = self.cfg.temperature_for(f"fdd_{kind}", samples=2)
        return [self._request(FDD_TEMPLATES[kind], s, temperature, question=p.question, answer=p.answer)
                for p in problems for s in range(self.cfg.fdd.per_problem)]


def _add_usage(a: dict, b: dict) -> dict:
    return {k: int(a.get(k) or 0) + int(b.get(k) or 0) for k in set(a) | set(b)}


def _draft_from(result: ChatResult, parser: Callable[[str], Any]) -> Draft:
    if result.error is not None:
        return Draft(None, failure=result.error, usage=result.usage)
    parsed = parser(result.text or "")
    return Draft(parsed.text, reason=parsed.error, usage=result.usage, finish_reason=result.finish_reason,
                 raw=result.text)


# --- verification -------------------------------------------------------------------------------------
def verify(style: str, targets: list[str], golds: list[str | None],
           timeout_s: float = 2.0) -> list[tuple[str | None, str | None]]:
    """(prediction, reject reason or None) per target, in one batch (PoT programs run in the sandbox pool);
    a gold of None (a generated problem) only asks for the prediction."""
    out = []
    for answer, gold in zip(get_style(style).answers(targets, timeout_s=timeout_s), golds):
        if answer.answer is None:
            out.append((None, f"no answer: {answer.error or 'nothing to read'}"))
        elif gold is not None and not answers_match(answer.answer, gold):
            out.append((answer.answer, f"wrong answer: got {answer.answer}, gold {gold}"))
        else:
            out.append((answer.answer, None))
    return out


# --- the run ------------------------------------------------------------------------------------------
def _progress_bar(enabled: bool) -> Progress:
    """kept / rejected / failed / cost per style while it runs (disabled for library use)."""
    return progress_bar("{task.description:>8}", "kept {task.fields[kept]}  rejected {task.fields[rejected]}  "
                        "failed {task.fields[failed]}  ${task.fields[cost]:.4f}", enabled=enabled, elapsed=True)


def open_client(cfg: TeachConfig) -> TeacherClient:
    path = Path(cfg.run_dir) / "teacher" / "cache.sqlite"
    # A dry run reads an existing cache (to count hits) but leaves no files behind.
    cache = ResponseCache(":memory:" if cfg.teacher.dry_run and not path.exists() else path)
    return TeacherClient(cfg.teacher.client_config(), cache)


def load_teach_problems(cfg: TeachConfig) -> list[Problem]:
    try:
        problems = load_problems(cfg.problems, cfg.data_dir)
    except DataError as e:  # the CLI reports a config error cleanly, without a traceback
        raise ConfigError(f"problems: {e}") from e
    return problems[: cfg.limit] if cfg.limit is not None else problems


def teach(cfg: TeachConfig, problems: list[Problem] | None = None, progress: bool = False) -> TeachSummary:
    """Run the teacher over problems x styles x samples and write the run directory (see the module doc)."""
    configure_sandbox(cfg.sandbox)
    problems = load_teach_problems(cfg) if problems is None else problems[: cfg.limit]
    run = Path(cfg.run_dir)
    kind = cfg.teacher.kind
    client = open_client(cfg) if kind == "openai" else None
    teacher: OfflineTeacher | LLMTeacher = LLMTeacher(cfg, client) if client else OfflineTeacher(cfg)
    summary = TeachSummary(str(run), cfg.round, kind, teacher.model)
    try:
        if cfg.teacher.dry_run:
            summary.estimate = dry_run_estimate(cfg, problems, teacher)
            return summary
        config_lib.save_resolved(cfg, run / "teacher" / f"config_r{cfg.round}.yaml")
        with _progress_bar(progress) as bar:
            for style in cfg.styles:
                summary.styles[style] = _teach_style(cfg, style, problems, teacher, summary, bar)
                if summary.stopped:
                    break
        if client is not None:
            summary.usage = client.usage.to_dict()
    finally:
        if client is not None:
            client.cache.close()
    write_json_atomic(run / "teacher" / "summary.json", summary.to_dict())
    if summary.styles:
        write_card(run / "rationales" / f"r{cfg.round}")  # README.md: the round as a Hugging Face dataset
    return summary


def _teach_style(cfg: TeachConfig, style: str, problems: list[Problem], teacher: OfflineTeacher | LLMTeacher,
                 summary: TeachSummary, bar: Any) -> StyleSummary:
    stats = StyleSummary()
    jobs = [(p, s) for p in problems for s in range(cfg.samples)]
    stats.jobs = len(jobs)
    version = teacher.prompt_version(style)
    kept: list[dict] = []
    rejected: list[dict] = []
    seen: set[tuple[str, str]] = set()
    task = bar.add_task(style, total=len(jobs), kept=0, rejected=0, failed=0, cost=0.0)
    client = teacher.client if isinstance(teacher, LLMTeacher) else None
    if client is not None:  # live progress and cost while a chunk's requests are out
        client.on_result = lambda _: bar.update(task, advance=1, cost=client.usage.cost_usd)
    # A Batch API job can take hours: one batch per style, not one per chunk.
    size = (len(jobs) or 1) if client is not None and cfg.teacher.batch_api else cfg.chunk
    for start in range(0, len(jobs), size):
        chunk = jobs[start: start + size]
        drafts = teacher.draft(style, chunk)
        ready = [i for i, d in enumerate(drafts) if d.target is not None]
        checks = dict(zip(ready, verify(style, [drafts[i].target for i in ready], [chunk[i][0].answer for i in ready],
                                        cfg.verify_timeout_s)))
        for i, ((problem, sample), draft) in enumerate(zip(chunk, drafts)):
            if draft.failure is not None:
                fkind = failure_kind(draft.failure)
                stats.failures[fkind] = stats.failures.get(fkind, 0) + 1
                summary.errors.setdefault(fkind, draft.failure)
                if fkind in _STOPPING_FAILURES:
                    summary.stopped = draft.failure
                continue
            prediction, reason = checks.get(i, (None, draft.reason))
            text = draft.target if draft.target is not None else ""
            if (problem.id, text) in seen and draft.target is not None:
                stats.duplicates += 1
                continue
            seen.add((problem.id, text))
            # Nothing run-dependent (cache hit or not) goes in a record: a rerun writes the same bytes.
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
        bar.update(task, completed=start + len(chunk), kept=stats.kept, rejected=sum(stats.rejected.values()),
                   failed=sum(stats.failures.values()), cost=client.usage.cost_usd if client else 0.0)
        if summary.stopped:
            break
    run = Path(cfg.run_dir)
    write_jsonl(run / "rationales" / f"r{cfg.round}" / f"{style}.jsonl", kept)
    write_jsonl(run / "rejects" / f"r{cfg.round}" / f"{style}.jsonl", rejected)
    return stats


def _completion_guess(style: str, cfg: TeachConfig) -> int:
    """Completion tokens per request, guessed from the exemplar answers (~4 characters a token, 1.5x slack,
    at most max_tokens): max_tokens itself would overstate the cost several times over."""
    outputs = [ex.output for t in templates_for_style(style, cfg.prompt_dir) for ex in t.exemplars]
    guess = int(1.5 * max(len(o) for o in outputs) / 4) if outputs else cfg.max_tokens
    return min(cfg.max_tokens, max(guess, 16))


def dry_run_estimate(cfg: TeachConfig, problems: list[Problem], teacher: OfflineTeacher | LLMTeacher) -> dict[str, Any]:
    """Per style: requests, cached, to send, tokens, cost; nothing is sent (an offline teacher costs nothing).
    Decomposition's solve stage is estimated with an exemplar plan standing in for the plan it will get."""
    jobs = [(p, s) for p in problems for s in range(cfg.samples)]
    rows = {}
    for style in cfg.styles:
        if isinstance(teacher, OfflineTeacher):
            rows[style] = {"requests": len(jobs), "cached": 0, "to_send": 0, "http_requests": 0,
                           "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
            continue
        temperature = cfg.temperature_for(style)
        requests = teacher.requests(style, jobs, temperature)
        if style == "decomp":
            plan = get_template("decomp_plan", cfg.prompt_dir).exemplars[0].output
            requests += teacher.requests(style, jobs, temperature, [{"subquestions": plan}] * len(jobs))
        est = teacher.client.estimate(requests, est_completion_tokens=_completion_guess(style, cfg))
        rows[style] = dataclasses.asdict(est)
    total = {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()), {})}
    return {"styles": rows, "total": total, "model": cfg.teacher.model, "batch_api": cfg.teacher.batch_api}
