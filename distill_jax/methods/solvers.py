"""Divide-or-Conquer's solvers: the synthetic world's own (offline) or the teacher endpoint, as the config names.

A solver answers `[(question, sub_questions), ...]` with decomp-format texts; methods/decompose.py filters the
teacher's decompositions with one, and the eval scores the student's decompositions with one.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from distill_jax.config import ConfigError
from distill_jax.data.problems import Problem
from distill_jax.methods.decompose import SymbolicSolver, decomposer_target
from distill_jax.methods.method_config import MethodConfig
from distill_jax.teacher.teach_config import TeachConfig
from distill_jax.teacher.teachers import LLMTeacher, open_client
from distill_jax.teacher.parse import clean_subanswers


class TeacherSolver:
    """Divide-or-Conquer's solver through the teacher endpoint: the `decomp_solve` prompt with the given
    sub-questions, its answers cleaned by teacher.parse.clean_subanswers. Calls go through the run's response
    cache (RUN/teacher/cache.sqlite), so a rerun pays for nothing twice."""

    def __init__(self, teach: TeachConfig):
        self.cfg = teach

    def __call__(self, items: list[tuple[str, list[str]]]) -> list[str]:
        plans = [decomposer_target(subs) for _, subs in items]
        jobs = [(Problem(f"solve-{i}", q, "", "decompose"), 0) for i, (q, _) in enumerate(items)]
        client = open_client(self.cfg)
        try:
            teacher = LLMTeacher(self.cfg, client)
            requests = teacher.requests("decomp", jobs, self.cfg.temperature_for("decomp"),
                                        [{"subquestions": p} for p in plans])
            results = client.run_sync(requests)
        finally:
            client.cache.close()
        failed = [r.error for r in results if r.error is not None]
        if results and len(failed) == len(results):
            raise RuntimeError(f"decompose: every teacher solver request failed, e.g. {failed[0]}")
        return ["" if r.error is not None else (clean_subanswers(r.text or "", plan).text or "")
                for r, plan in zip(results, plans)]


def make_solver(cfg: MethodConfig, run: Path, problems: list[Problem]):
    """The Divide-or-Conquer solver the config names: the synthetic world's, or the teacher endpoint."""
    if cfg.decompose.solver == "teacher":
        return TeacherSolver(dataclasses.replace(cfg.teach, run_dir=str(run)))
    try:
        return SymbolicSolver(problems)
    except ValueError as e:
        raise ConfigError(f"decompose.solver: symbolic needs synthetic problems ({e}); "
                          "use decompose.solver=teacher with an endpoint") from e
