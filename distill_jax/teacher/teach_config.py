"""The `teach` config: which problems, styles, samples and sampling, and which teacher (`teacher.*`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from distill_jax import config as config_lib
from distill_jax.reasoning.sandbox import SandboxConfig
from distill_jax.teacher.client_config import ClientConfig
from distill_jax.teacher.prompts import STYLE_TEMPLATES

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
    chunk: int = 256  # most results verified in one batch (PoT programs go to the sandbox pool together)
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
