"""The eval's settings: what is scored (EvalConfig) and how the student decodes (DecodingConfig)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from distill_jax.config import RUNTIME, ConfigError, at_least
from distill_jax.reasoning.sandbox import SandboxConfig
from distill_jax.reasoning.styles import STYLES


@dataclass(frozen=True)
class DecodingConfig:
    mode: Literal["greedy", "sample", "beam"] = "greedy"
    max_new_tokens: int = 256
    batch_size: int = 32
    num_beams: int = 4
    length_penalty: float = 1.0
    samples: int = 1
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    calculator: bool = False  # force computed values into `<<expr=value>>` annotations (CoT)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if self.calculator and self.mode != "greedy":
            raise ValueError("calculator-aided decoding is greedy only")
        if self.mode == "sample" and self.temperature <= 0:
            raise ValueError("sampling needs temperature > 0")

    def tag(self) -> str:
        """A short, unique name for these settings; part of the output directory."""
        if self.mode == "greedy":
            base = "greedy"
        elif self.mode == "beam":
            base = f"beam{self.num_beams}-lp{self.length_penalty:g}"
        else:
            base = f"sample{self.samples}-t{self.temperature:g}-k{self.top_k}-p{self.top_p:g}-s{self.seed}"
        return base + ("+calc" if self.calculator else "") + f"-max{self.max_new_tokens}"


@dataclass(frozen=True)
class EvalConfig:
    run_dir: str | None = None  # a training run: checkpoints in RUN/ckpt, results in RUN/eval
    model: str | None = None  # or a bare Hugging Face directory (results in out_dir)
    out_dir: str | None = None  # where a bare model's results go (default: MODEL/eval)
    steps: str = "latest"  # "latest", "all", or comma-separated step numbers
    benchmarks: tuple[str, ...] = ("gsm8k_test",)
    problems: tuple[str, ...] = ()  # extra JSONL problem files, each scored as a benchmark named by its stem
    styles: tuple[str, ...] = ("cot",)
    vote: bool = True  # majority over styles (and samples) beside each single style
    limit: int | None = field(default=None, metadata=at_least(1))  # first N problems of each benchmark (None: all)
    data_dir: str | None = None
    report: bool = True
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    progress: bool = field(default=True, metadata=RUNTIME)  # a decoding progress bar

    def __post_init__(self) -> None:
        if (self.run_dir is None) == (self.model is None):
            raise ConfigError("give exactly one of run_dir (a training run) or model (a HF directory)", key="run_dir")
        unknown = [s for s in self.styles if s not in STYLES]
        if unknown:
            raise ConfigError(f"unknown style(s) {unknown}; known: {sorted(STYLES)}", key="styles")
        if not self.styles:
            raise ConfigError("styles is empty", key="styles")
