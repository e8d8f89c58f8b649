"""FDD question generation: teacher-written `harder` / `similar` problems, kept only when solutions agree.

A generated problem has no gold answer, so it is kept only when `fdd.agree` of `fdd.samples` independent
solutions (style `fdd.solve_style`) agree; the vote is recorded in the problem (`extra["fdd"]`).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from distill_jax.config import ConfigError
from distill_jax.data.problems import Problem
from distill_jax.data.records import write_jsonl
from distill_jax.teacher.parse import parse_new_problem
from distill_jax.teacher.prompts import FDD_TEMPLATES
from distill_jax.teacher.teach_config import TeachConfig
from distill_jax.teacher.teachers import LLMTeacher, OfflineTeacher, teacher_session
from distill_jax.teacher.verification import verify


def new_problems(problems: list[Problem], kind: str, cfg: TeachConfig) -> list[Problem]:
    """Teacher-written `harder` or `similar` variants of `problems`, each kept only when `fdd.agree` of
    `fdd.samples` independent solutions (style `fdd.solve_style`) agree; that answer becomes its answer.

    Accepted problems go to RUN/problems/r{round}/fdd_{kind}.jsonl, the others (with reason) to
    RUN/rejects/r{round}/fdd_{kind}.jsonl (both rebuilt each call; requests come from the cache on reruns).
    """
    if kind not in FDD_TEMPLATES:
        raise ConfigError(f"fdd kind must be one of {', '.join(FDD_TEMPLATES)}, got {kind!r}")
    with teacher_session(cfg) as teacher:
        # (parent, index, the new problem or None, the generator's own answer, why there is none)
        candidates: list[tuple[Problem, int, Problem | None, str | None, str | None]] = []
        pairs = [(p, j) for p in problems for j in range(cfg.fdd.per_problem)]
        if isinstance(teacher, LLMTeacher):
            results = teacher.client.run_sync(teacher.new_problem_requests(problems, kind))
            for (parent, j), result in zip(pairs, results):
                parsed = parse_new_problem(result.text or "") if result.error is None else None
                if parsed is None or not hasattr(parsed, "question"):
                    candidates.append((parent, j, None, None, result.error or parsed.error))
                    continue
                new = Problem(_fdd_id(parent, kind, cfg.round, j), parsed.question, "", f"fdd_{kind}")
                candidates.append((parent, j, new, parsed.answer, None))
        else:
            for parent, j in pairs:
                new = teacher.new_problem(parent, kind, j)
                new = dataclasses.replace(new, id=_fdd_id(parent, kind, cfg.round, j), source=f"fdd_{kind}")
                candidates.append((parent, j, new, new.answer, None))
        return _vote(cfg, kind, teacher, candidates)


def _fdd_id(parent: Problem, kind: str, round_: int, j: int) -> str:
    return f"{parent.id}.{kind}{round_}.{j}"


def _vote(cfg: TeachConfig, kind: str, teacher: OfflineTeacher | LLMTeacher, candidates: list) -> list[Problem]:
    style, n = cfg.fdd.solve_style, cfg.fdd.samples
    unsolved = [new for _, _, new, _, _ in candidates]
    jobs = [(p, s) for p in unsolved if p is not None for s in range(n)]
    if isinstance(teacher, LLMTeacher):
        # Voting needs diverse solutions: never greedy here.
        solve_cfg = dataclasses.replace(cfg, temperature={**cfg.temperature,
                                                          style: cfg.temperature_for(style, samples=max(n, 2))})
        drafts = LLMTeacher(solve_cfg, teacher.client).draft(style, jobs)
    else:
        drafts = teacher.draft(style, jobs)
    ready = [i for i, d in enumerate(drafts) if d.target is not None]
    checks = verify(style, [drafts[i].target for i in ready], [None] * len(ready), cfg.verify_timeout_s)
    answers = dict(zip(ready, (prediction for prediction, _ in checks)))
    answers_of: dict[int, list[str | None]] = {}  # candidate -> its n solutions' answers
    pos = 0
    for c, p in enumerate(unsolved):
        if p is not None:
            answers_of[c] = [answers.get(pos + s) for s in range(n)]
            pos += n
    accepted, rejected = [], []
    for c, (parent, j, new, gen_answer, reason) in enumerate(candidates):
        votes = Counter(a for a in answers_of.get(c, []) if a is not None)
        top, count = votes.most_common(1)[0] if votes else (None, 0)
        fdd = {"kind": kind, "parent": parent.id, "round": cfg.round, "votes": dict(votes), "samples": n,
               "agree": cfg.fdd.agree, "generator_answer": gen_answer}
        row = {"id": _fdd_id(parent, kind, cfg.round, j), "question": new.question if new else None,
               "answer": top, "source": f"fdd_{kind}", "fdd": fdd}
        if reason is None and count < cfg.fdd.agree:
            reason = f"no agreement: best answer {top} has {count} of {n} votes (need {cfg.fdd.agree})"
        if reason is not None:
            rejected.append({**row, "reason": reason})
            continue
        accepted.append(dataclasses.replace(new, answer=top, extra={**new.extra, "fdd": fdd}))
    run = Path(cfg.run_dir)
    write_jsonl(run / "problems" / f"r{cfg.round}" / f"fdd_{kind}.jsonl", [p.to_row() for p in accepted])
    write_jsonl(run / "rejects" / f"r{cfg.round}" / f"fdd_{kind}.jsonl", rejected)
    return accepted
