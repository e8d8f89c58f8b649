"""`MethodConfig`: what `distill-jax distill` runs, one section per method (configs/<method>_*.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from distill_jax.config import ConfigError, at_least
from distill_jax.evaluate.config import DecodingConfig
from distill_jax.reasoning.sandbox import SandboxConfig
from distill_jax.reasoning.styles import STYLES
from distill_jax.teacher.teach_config import TeachConfig
from distill_jax.train.config import TrainConfig

METHODS = ("kpdd", "etd", "pad", "dss", "decompose")
ETD_DEFAULT_WEIGHTS = {"pot": 1.0, "eot": 1.0, "cot": 1.0}  # also the vote's tie-break order


@dataclass(frozen=True)
class MethodEvalConfig:
    problems: tuple[str, ...] = ()  # test JSONL files (each reported under its file stem)
    benchmarks: tuple[str, ...] = ()  # or benchmark names (gsm8k_test, svamp, ...)
    styles: tuple[str, ...] = ()  # empty: the method's own (kpdd kp_<solution>, etd its mixture, pad pot, dss dss)
    vote: bool = True  # majority over the styles (ETD's voting)
    limit: int | None = field(default=None, metadata=at_least(1))  # first N problems of each test set (None: all)
    data_dir: str | None = None
    decoding: DecodingConfig = field(default_factory=DecodingConfig)


@dataclass(frozen=True)
class KpddSection:
    solution: Literal["cot", "pot"] = "pot"  # the Solution section's style: kp_cot or kp_pot
    check: bool = True  # keep only records whose key points pass methods/kpdd.check_key_points


@dataclass(frozen=True)
class EtdSection:
    weights: dict[str, float] = field(default_factory=dict)  # style -> share; empty: pot, eot, cot equally
    total: int | None = None  # mixed-set size (None: the largest no style has to repeat for)
    seed: int = 0


@dataclass(frozen=True)
class PadSection:
    refine: bool = True  # add self-refinement records (error injection into correct programs)
    per_program: int = 2  # faulty versions kept per program
    tries: int = 6  # edits tried per program
    seed: int = 0
    stepwise: bool = False  # eval also decodes with the step-wise verified beam (methods/pad_verify.py)
    beam: int = 4
    # where the proposed lines come from: the student's beam search (every beam, each line with its real
    # log-probability given the lines before it) or its sampled programs (lines with their log-frequency)
    proposals: Literal["beam", "sample"] = "beam"
    samples: int = 8  # how many programs the student proposes: beams, or samples (at `temperature`)
    temperature: float = 0.7
    max_steps: int = 16
    lm_weight: float = 0.0  # weight of the proposals' log-frequency beside the verifier's score


@dataclass(frozen=True)
class DssSection:
    rationale_weight: float = 1.0  # the paper's lambda: loss = label + lambda * rationale
    label_weight: float = 1.0
    source_style: Literal["cot", "dss"] = "cot"  # which teacher rationales the two tasks come from
    keep_label_in_rationale: bool = False


@dataclass(frozen=True)
class DecomposeSection:
    solver: Literal["symbolic", "teacher"] = "symbolic"  # filters decompositions and answers them at eval
    student_solver: bool = False  # the student also learns the solver task and is scored as its own solver


@dataclass(frozen=True)
class MethodConfig:
    run_dir: str
    method: Literal["kpdd", "etd", "pad", "dss", "decompose"]
    teach: TeachConfig = field(default_factory=TeachConfig)  # styles are set by the method
    train: TrainConfig = field(default_factory=lambda: TrainConfig(run_dir="-", steps=1))
    eval: MethodEvalConfig = field(default_factory=MethodEvalConfig)
    kpdd: KpddSection = field(default_factory=KpddSection)
    etd: EtdSection = field(default_factory=EtdSection)
    pad: PadSection = field(default_factory=PadSection)
    dss: DssSection = field(default_factory=DssSection)
    decompose: DecomposeSection = field(default_factory=DecomposeSection)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)

    def __post_init__(self) -> None:
        unknown = [s for s in self.eval.styles if s not in STYLES]
        if unknown:
            raise ConfigError(f"eval.styles: unknown {unknown}; known: {sorted(STYLES)}", key="eval.styles")
        bad = [s for s in self.etd.weights if s not in ("cot", "pot", "eot")]
        if bad:
            raise ConfigError(f"etd.weights: {bad} are not ETD styles (cot, pot, eot)", key="etd.weights")
        if self.etd.weights and (min(self.etd.weights.values()) < 0 or sum(self.etd.weights.values()) <= 0):
            raise ConfigError(f"etd.weights must be >= 0 with a positive sum, got {self.etd.weights}", key="etd.weights")
        if self.pad.beam < 1 or self.pad.samples < 1 or self.pad.max_steps < 1:
            raise ConfigError("pad.beam, pad.samples and pad.max_steps must be >= 1", key="pad")
        if self.pad.stepwise and self.pad.temperature <= 0:
            raise ConfigError("pad.temperature must be > 0 (the beam proposes lines of sampled programs)",
                              key="pad.temperature")
        if self.dss.rationale_weight < 0 or self.dss.label_weight < 0:
            raise ConfigError("dss.rationale_weight and dss.label_weight must be >= 0", key="dss")
        if self.method == "decompose" and self.decompose.solver == "teacher" and self.teach.teacher.kind != "openai":
            raise ConfigError("decompose.solver: 'teacher' needs an endpoint (teach.teacher.kind: openai)",
                              key="decompose.solver")

    @property
    def etd_weights(self) -> dict[str, float]:
        return dict(self.etd.weights or ETD_DEFAULT_WEIGHTS)

    def teach_styles(self) -> tuple[str, ...]:
        return {"kpdd": (f"kp_{self.kpdd.solution}",), "etd": tuple(s for s, w in self.etd_weights.items() if w > 0),
                "pad": ("pot",), "dss": (self.dss.source_style,), "decompose": ("decomp",)}[self.method]

    def eval_styles(self) -> tuple[str, ...]:
        """The styles evaluate.evaluate scores (Divide-or-Conquer has its own eval: none)."""
        if self.method == "decompose":
            return ()
        return self.eval.styles or {"kpdd": self.teach_styles(), "etd": self.teach_styles(), "pad": ("pot",),
                                    "dss": ("dss",)}[self.method]
