"""The two kinds of teacher behind one interface: offline (`symbolic`, `gold`: targets written directly in the
style's format) and an LLM endpoint (`openai`: prompts through the cached client, completions parsed into
targets). Both hand out `Draft`s in batches as they are ready; teacher/generate.py verifies and records them.
"""
from __future__ import annotations

import contextlib
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from distill_jax.config import ConfigError
from distill_jax.data.problems import Problem
from distill_jax.teacher.cache import ResponseCache
from distill_jax.teacher.client import TeacherClient
from distill_jax.teacher.gold import GOLD_VERSION, GoldTeacher
from distill_jax.teacher.parse import clean_subanswers, clean_subquestions, parse_completion
from distill_jax.teacher.prompts import FDD_TEMPLATES, STYLE_TEMPLATES, get_template, prompt_version
from distill_jax.teacher.request import ChatRequest, ChatResult
from distill_jax.teacher.symbolic import SymbolicTeacher
from distill_jax.teacher.teach_config import TeachConfig

Job = tuple[Problem, int]  # (problem, sample index)


@dataclass
class Draft:
    """One job's outcome before verification: a target text, or why there is none."""

    target: str | None
    reason: str | None = None  # parse or teacher reason: the job becomes a reject
    failure: str | None = None  # the request failed ("kind: message"): not a reject, a rerun retries it
    usage: dict = field(default_factory=dict)
    finish_reason: str | None = None
    raw: str | None = None  # the completion before parsing (kept in rejects, to see what went wrong)


def check_teacher_problems(kind: str, problems: list[Problem], spec: str) -> None:
    """The symbolic teacher writes from a synthetic problem's graph: say so before any work when none has one."""
    if kind == "symbolic" and problems and not any(p.extra.get("graph") for p in problems):
        raise ConfigError(f"teacher.kind: the symbolic teacher writes rationales from the computation graph "
                          f"of synthetic problems (distill-jax synth), and {spec} has none (e.g. "
                          f"{problems[0].id}); use teacher.kind=openai (an endpoint) or teacher.kind=gold "
                          f"(GSM8K's own solutions)", key="teacher.kind")


class OfflineTeacher:
    """`symbolic` or `gold`: targets written directly in the style's format, nothing to parse or pay."""

    def __init__(self, cfg: TeachConfig):
        self.kind = cfg.teacher.kind
        self.impl: SymbolicTeacher | GoldTeacher
        if self.kind == "symbolic":
            self.impl = SymbolicTeacher(cfg.teacher.error_rate, cfg.seed)
            self.model = f"symbolic(error_rate={cfg.teacher.error_rate:g},seed={cfg.seed})"
        else:
            self.impl = GoldTeacher()
            self.model = GOLD_VERSION

    def check_problems(self, problems: list[Problem], spec: str) -> None:
        check_teacher_problems(self.kind, problems, spec)

    def prompt_version(self, style: str) -> str:
        # An offline teacher's "prompt" is its code: the hash changes whenever what it writes may change.
        source = Path(sys.modules[type(self.impl).__module__].__file__).read_bytes()
        return f"{self.kind}:{style}#{hashlib.sha256(source).hexdigest()[:12]}"

    def draft(self, style: str, jobs: list[Job]) -> list[Draft]:
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

    def drafts(self, style: str, jobs: list[Job], batch: int) -> Iterator[list[tuple[int, Draft]]]:
        """(job index, draft) in batches of `batch` jobs."""
        for start in range(0, len(jobs), batch):
            yield list(enumerate(self.draft(style, jobs[start:start + batch]), start))

    def new_problem(self, problem: Problem, kind: str, sample: int) -> Problem:
        if self.kind != "symbolic":
            raise ConfigError(f"teacher.kind: the {self.kind} teacher cannot write new problems (FDD)")
        return self.impl.new_problem(problem, kind=kind, sample=sample)


class LLMTeacher:
    """An OpenAI-compatible endpoint through the cached client; completions are parsed into targets."""

    def __init__(self, cfg: TeachConfig, client: TeacherClient):
        self.cfg, self.client = cfg, client
        self.model = cfg.teacher.model

    def check_problems(self, problems: list[Problem], spec: str) -> None:
        """Any problem can be put to an endpoint."""

    def prompt_version(self, style: str) -> str:
        return prompt_version(style, self.cfg.prompt_dir)

    def _request(self, template_name: str, sample: int, temperature: float, **fields: Any) -> ChatRequest:
        template = get_template(template_name, self.cfg.prompt_dir)
        return ChatRequest.make(list(template.render(**fields)), sample=sample, temperature=temperature,
                                max_tokens=self.cfg.max_tokens)

    def requests(self, style: str, jobs: list[Job], temperature: float,
                 stage_fields: list[dict] | None = None) -> list[ChatRequest]:
        """The first-stage requests of a style (decomposition: the plans), or a later stage with its fields."""
        names = STYLE_TEMPLATES[style]
        name = names[0] if stage_fields is None else names[1]
        return [self._request(name, s, temperature, question=p.question, **(stage_fields[i] if stage_fields else {}))
                for i, (p, s) in enumerate(jobs)]

    def drafts(self, style: str, jobs: list[Job], batch: int) -> Iterator[list[tuple[int, Draft]]]:
        """(job index, draft) in batches of at most `batch`, as the replies arrive. Decomposition asks for the
        plans first; each parsable plan becomes a solve request once every plan is in."""
        temperature = self.cfg.temperature_for(style)
        if style != "decomp":
            yield from self._stream(self.requests(style, jobs, temperature), range(len(jobs)), batch,
                                    lambda i, text: parse_completion(text, style))
            return
        plans: dict[int, Draft] = {}
        for ready in self._stream(self.requests(style, jobs, temperature), range(len(jobs)), batch,
                                  lambda i, text: clean_subquestions(text)):
            failed = [(i, d) for i, d in ready if d.target is None]
            plans.update((i, d) for i, d in ready if d.target is not None)
            if failed:
                yield failed
        todo = sorted(plans)
        solves = self.requests(style, [jobs[i] for i in todo], temperature,
                               [{"subquestions": plans[i].target} for i in todo])
        for ready in self._stream(solves, todo, batch, lambda i, text: clean_subanswers(text, plans[i].target)):
            for i, solved in ready:
                solved.usage = _add_usage(plans[i].usage, solved.usage)
            yield ready

    def _stream(self, requests: list[ChatRequest], indices: Any, batch: int,
                parser: Callable[[int, str], Any]) -> Iterator[list[tuple[int, Draft]]]:
        index_of = {id(r): i for r, i in zip(requests, indices)}
        with contextlib.closing(self.client.stream(requests, batch)) as results:
            for ready in results:
                yield [(index_of[id(r.request)], _draft_from(r, lambda text, i=index_of[id(r.request)]: parser(i, text)))
                       for r in ready]

    def draft(self, style: str, jobs: list[Job]) -> list[Draft]:
        """Every job's draft, in job order."""
        out: list[Draft | None] = [None] * len(jobs)
        for ready in self.drafts(style, jobs, max(len(jobs), 1)):
            for i, d in ready:
                out[i] = d
        return out  # type: ignore[return-value]

    def new_problem_requests(self, problems: list[Problem], kind: str) -> list[ChatRequest]:
        temperature = self.cfg.temperature_for(f"fdd_{kind}", samples=2)
        return [self._request(FDD_TEMPLATES[kind], s, temperature, question=p.question, answer=p.answer)
                for p in problems for s in range(self.cfg.fdd.per_problem)]


def open_client(cfg: TeachConfig) -> TeacherClient:
    """The run's client over RUN/teacher/cache.sqlite (not yet open: `with client:` starts its session)."""
    path = Path(cfg.run_dir) / "teacher" / "cache.sqlite"
    # A dry run reads an existing cache (to count hits) but leaves no files behind.
    cache = ResponseCache(":memory:" if cfg.teacher.dry_run and not path.exists() else path)
    return TeacherClient(cfg.teacher.client_config(), cache)


def make_teacher(cfg: TeachConfig) -> OfflineTeacher | LLMTeacher:
    """The teacher `teacher.kind` names (an LLM teacher's client is not open yet)."""
    return LLMTeacher(cfg, open_client(cfg)) if cfg.teacher.kind == "openai" else OfflineTeacher(cfg)


@contextlib.contextmanager
def teacher_session(cfg: TeachConfig) -> Iterator[OfflineTeacher | LLMTeacher]:
    """The teacher, with an LLM teacher's client session open (and its cache closed) around the block."""
    teacher = make_teacher(cfg)
    if not isinstance(teacher, LLMTeacher):
        yield teacher
        return
    try:
        with teacher.client:
            yield teacher
    finally:
        teacher.client.cache.close()


def _add_usage(a: dict, b: dict) -> dict:
    return {k: int(a.get(k) or 0) + int(b.get(k) or 0) for k in set(a) | set(b)}


def _draft_from(result: ChatResult, parser: Callable[[str], Any]) -> Draft:
    if result.error is not None:
        return Draft(None, failure=result.error, usage=result.usage)
    parsed = parser(result.text or "")
    return Draft(parsed.text, reason=parsed.error, usage=result.usage, finish_reason=result.finish_reason,
                 raw=result.text)
