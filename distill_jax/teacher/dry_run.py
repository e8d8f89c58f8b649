"""The dry run of `teach`: per style, what would be sent and what it would cost; nothing is sent."""
from __future__ import annotations

import dataclasses
from typing import Any

from distill_jax.data.problems import Problem
from distill_jax.teacher.prompts import get_template, templates_for_style
from distill_jax.teacher.teach_config import TeachConfig
from distill_jax.teacher.teachers import LLMTeacher, OfflineTeacher


def _completion_guess(style: str, cfg: TeachConfig) -> int:
    """Completion tokens per request, guessed from the exemplar answers (~4 characters a token, 1.5x slack,
    at most max_tokens): max_tokens itself would overstate the cost several times over."""
    outputs = [ex.output for t in templates_for_style(style, cfg.prompt_dir) for ex in t.exemplars]
    guess = int(1.5 * max(len(o) for o in outputs) / 4) if outputs else cfg.max_tokens
    return min(cfg.max_tokens, max(guess, 16))


def dry_run_estimate(cfg: TeachConfig, problems: list[Problem], teacher: OfflineTeacher | LLMTeacher) -> dict[str, Any]:
    """Per style: requests, cached, to send, tokens, cost (an offline teacher costs nothing). Decomposition's
    solve stage is estimated with an exemplar plan standing in for the plan it will get."""
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
        est = teacher.client.estimate(requests, est_completion=_completion_guess(style, cfg))
        rows[style] = dataclasses.asdict(est)
    total = {k: sum(r[k] for r in rows.values()) for k in next(iter(rows.values()), {})}
    return {"styles": rows, "total": total, "model": cfg.teacher.model, "batch_api": cfg.teacher.batch_api}
