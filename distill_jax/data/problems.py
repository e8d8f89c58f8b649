"""The Problem record and its loaders: a JSONL path, a benchmark name, or a Hugging Face `datasets` name.

`load_problems(spec)` accepts
- a path to a JSONL file (keys `id`, `question`, `answer`; any other key is kept in `Problem.extra`),
- a benchmark name resolved in the data directory (argument, else env DISTILL_JAX_DATA): see BENCHMARKS,
- `hf:<dataset>[:<config>][:<split>]` for users who are online (e.g. `hf:openai/gsm8k:main:test`).

Every numeric answer is normalised with `reasoning.answers.normalize_number`. A bad row (invalid JSON, missing
question, non-numeric answer, duplicate id) raises DataError naming file and line; with `skip_invalid=True`
it is counted in a LoadReport instead (`load_problems_report` returns it; `load_problems` logs it).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from distill_jax.data.records import DataError, iter_jsonl
from distill_jax.reasoning.answers import normalize_number

log = logging.getLogger(__name__)

DATA_ENV = "DISTILL_JAX_DATA"

# benchmark name -> file relative to the data directory (../shared/data/README.md describes each file).
BENCHMARKS: dict[str, str] = {
    "gsm8k": "gsm8k/test.jsonl",
    "gsm8k_test": "gsm8k/test.jsonl",
    "gsm8k_train": "gsm8k/train.jsonl",
    "svamp": "svamp/test.jsonl",
    "asdiv": "asdiv/test.jsonl",
    "multiarith": "multiarith/test.jsonl",
    "addsub": "addsub/test.jsonl",
    "singleeq": "singleeq/test.jsonl",
    "aqua": "aqua/test.jsonl",
}
# Multiple-choice benchmarks: the answer is an option letter, checked against the row's `options`.
CHOICE_BENCHMARKS = {"aqua"}
CHOICE_LETTERS = "ABCDE"

_KEYS = ("id", "question", "answer", "source")


@dataclass(frozen=True)
class Problem:
    """One math word problem. `answer` is a canonical number string (an option letter for multiple choice)."""

    id: str
    question: str
    answer: str
    source: str
    # Excluded from hashing: a dict cannot be hashed, and id/question/answer/source identify a problem.
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_row(self) -> dict[str, Any]:
        """The JSONL row `load_problems` reads back (extra keys after the four fixed ones)."""
        return {"id": self.id, "question": self.question, "answer": self.answer, "source": self.source, **self.extra}


@dataclass
class LoadReport:
    """What a load read: rows kept and rows skipped per reason (with their line numbers) under skip_invalid."""

    spec: str
    loaded: int = 0
    skipped: dict[str, list[int]] = field(default_factory=dict)

    @property
    def n_skipped(self) -> int:
        return sum(len(lines) for lines in self.skipped.values())

    def summary(self) -> str:
        parts = [f"{reason}: {len(lines)} (lines {_short_list(lines)})" for reason, lines in sorted(self.skipped.items())]
        return f"{self.spec}: {self.loaded} problems loaded" + (f", {self.n_skipped} skipped ({'; '.join(parts)})" if parts else "")


def _short_list(lines: list[int], limit: int = 5) -> str:
    head = ", ".join(str(n) for n in lines[:limit])
    return head + (", ..." if len(lines) > limit else "")


class _RowError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def load_problems(spec: str, data_dir: str | os.PathLike | None = None, skip_invalid: bool = False) -> list[Problem]:
    """Problems from a JSONL path, a benchmark name or `hf:<dataset>[:<config>][:<split>]` (module docstring)."""
    problems, report = load_problems_report(spec, data_dir, skip_invalid)
    if report.n_skipped:
        log.warning("%s", report.summary())
    return problems


def load_problems_report(
    spec: str, data_dir: str | os.PathLike | None = None, skip_invalid: bool = False
) -> tuple[list[Problem], LoadReport]:
    """As load_problems, and also the LoadReport that says what was skipped and where."""
    if spec.startswith("hf:"):
        return load_hf(spec, skip_invalid=skip_invalid)
    name = spec.lower()
    if name in BENCHMARKS:
        path = resolve_benchmark(name, data_dir)
        return _load_jsonl(path, spec, default_source=name.split("_")[0], skip_invalid=skip_invalid,
                           choice=name in CHOICE_BENCHMARKS)
    path = Path(spec)
    if path.suffix in (".jsonl", ".json") or path.exists():
        return _load_jsonl(path, spec, default_source=path.stem, skip_invalid=skip_invalid, choice=False)
    raise DataError(
        f"{spec!r} is neither an existing JSONL file, a benchmark name ({', '.join(sorted(BENCHMARKS))}) "
        "nor hf:<dataset>[:<config>][:<split>]"
    )


def resolve_benchmark(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The file of a benchmark in the data directory (argument, else $DISTILL_JAX_DATA); clear errors if absent."""
    root = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    if not root:
        raise DataError(f"benchmark {name!r} needs a data directory: pass data_dir or set {DATA_ENV}")
    path = Path(root) / BENCHMARKS[name]
    if not path.is_file():
        raise DataError(f"benchmark {name!r}: {path} not found (looked for {BENCHMARKS[name]} under {root})")
    return path


def _load_jsonl(path: Path, spec: str, *, default_source: str, skip_invalid: bool,
                choice: bool) -> tuple[list[Problem], LoadReport]:
    stats: dict = {}
    rows = ((f"{path}:{lineno}", lineno, row, dict(default_id=f"{path.stem}-{lineno:04d}",
                                                   default_source=default_source, choice=choice))
            for lineno, row in iter_jsonl(path, skip_invalid=skip_invalid, stats=stats))
    problems, report = _collect(rows, spec, skip_invalid)
    if stats.get("invalid"):
        report.skipped["invalid JSON"] = list(stats["invalid_lines"])
    return problems, report


def _collect(rows: Iterable[tuple[str, int, dict, dict]], spec: str,
             skip_invalid: bool) -> tuple[list[Problem], LoadReport]:
    """Validate (where, position, row, problem_from_row kwargs) rows: the first bad one raises DataError naming
    `where`, or with skip_invalid every bad one is counted by reason at its position; duplicate ids are bad."""
    report = LoadReport(spec)
    problems: list[Problem] = []
    seen: set[str] = set()
    for where, position, row, kwargs in rows:
        try:
            problem = problem_from_row(row, **kwargs)
            if problem.id in seen:
                raise _RowError("duplicate id", f"duplicate id {problem.id!r}")
        except _RowError as e:
            if not skip_invalid:
                raise DataError(f"{where}: {e}") from None
            report.skipped.setdefault(e.reason, []).append(position)
            continue
        seen.add(problem.id)
        problems.append(problem)
    report.loaded = len(problems)
    return problems, report


def problem_from_row(row: dict, *, default_id: str, default_source: str, choice: bool = False) -> Problem:
    """Validate one row into a Problem; raises _RowError(reason, detail) for the caller to place (file:line)."""
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _RowError("missing question", "missing or empty 'question'")
    pid = row.get("id", default_id)
    if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid) == "":
        raise _RowError("bad id", f"'id' must be a non-empty string, got {pid!r}")
    raw = row.get("answer")
    if raw is None or isinstance(raw, (bool, list, dict)):
        raise _RowError("bad answer", f"missing or non-numeric 'answer': {raw!r}")
    if choice:
        answer = _choice_answer(row, raw)
    else:
        answer = normalize_number(str(raw))
        if answer is None:
            raise _RowError("bad answer", f"non-numeric 'answer': {raw!r}")
    source = row.get("source") or default_source
    extra = {k: v for k, v in row.items() if k not in _KEYS}
    return Problem(str(pid), question.strip(), answer, str(source), extra)


def _choice_answer(row: dict, raw: Any) -> str:
    letter = str(raw).strip().upper()
    options = row.get("options")
    if letter not in CHOICE_LETTERS or not isinstance(options, list) or len(options) <= CHOICE_LETTERS.index(letter):
        raise _RowError("bad answer", f"multiple-choice 'answer' {raw!r} is not one of the row's option letters")
    return letter


# ----------------------------------------------------------------------------------------- Hugging Face
# Known datasets: how their rows map onto question / answer / solution. Others need `question` and `answer`.
_GSM8K_NAMES = {"openai/gsm8k", "gsm8k"}
_SVAMP_NAMES = {"chilled/svamp", "svamp"}
_SPLIT_NAMES = {"train", "test", "validation", "dev"}


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """`hf:<dataset>[:<config>][:<split>]` -> (dataset, config, split); one extra part is a split if it names one."""
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3 or any(not p for p in parts):
        raise DataError(f"{spec!r}: expected hf:<dataset>[:<config>][:<split>]")
    dataset, rest = parts[0], parts[1:]
    if len(rest) == 2:
        return dataset, rest[0], rest[1]
    if len(rest) == 1:
        return (dataset, None, rest[0]) if rest[0] in _SPLIT_NAMES else (dataset, rest[0], "test")
    return dataset, ("main" if dataset.lower() in _GSM8K_NAMES else None), "test"


def hf_row_fields(dataset: str, row: dict) -> dict:
    """Map one row of a Hugging Face dataset onto our keys (question, answer, and solution where there is one)."""
    name = dataset.lower()
    if name in _GSM8K_NAMES or ("question" in row and isinstance(row.get("answer"), str) and "####" in row["answer"]):
        solution = row.get("answer")
        if not isinstance(solution, str) or "####" not in solution:
            return {"question": row.get("question"), "answer": None}
        answer = solution.rsplit("####", 1)[1].strip()
        # GSM8K writes thousands separators in some final answers ("#### 1,080").
        if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", answer):
            answer = answer.replace(",", "")
        return {"question": row.get("question"), "answer": answer, "solution": solution}
    if name in _SVAMP_NAMES or ("Body" in row and "Question" in row):
        body, ask = str(row.get("Body", "")).strip(), str(row.get("Question", "")).strip()
        return {"question": f"{body} {ask}".strip(), "answer": row.get("Answer")}
    question = next((row[k] for k in ("question", "problem", "Question") if k in row), None)
    answer = next((row[k] for k in ("answer", "Answer", "final_answer") if k in row), None)
    return {"question": question, "answer": answer}


def problems_from_hf_rows(rows: Iterable[dict], dataset: str, split: str, *, skip_invalid: bool = False,
                          spec: str | None = None) -> tuple[list[Problem], LoadReport]:
    """Problems from the rows of a `datasets.Dataset` (any iterable of dicts); errors name the row index."""
    spec = spec or f"hf:{dataset}:{split}"
    short = dataset.split("/")[-1].lower()

    def mapped(index: int, row: dict) -> tuple[str, int, dict, dict]:
        fields = hf_row_fields(dataset, row)
        if "id" in row or "ID" in row:
            fields["id"] = str(row.get("id", row.get("ID")))
        return (f"{spec} row {index}", index, fields,
                dict(default_id=f"{short}-{split}-{index + 1:04d}", default_source=short))

    return _collect((mapped(i, row) for i, row in enumerate(rows)), spec, skip_invalid)


def load_hf(spec: str, *, skip_invalid: bool = False) -> tuple[list[Problem], LoadReport]:
    """Download (or read from the HF cache) a dataset split with `datasets.load_dataset` and map its rows."""
    dataset, config, split = parse_hf_spec(spec)
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a declared dependency
        raise DataError(f"{spec}: the `datasets` package is needed for hf: specs ({e})") from e
    try:
        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as e:  # datasets raises many kinds (connection, not found, offline mode)
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        hint = ("HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set and the dataset is not in the local cache"
                if offline else "check the name, config and split, and that the Hub is reachable")
        raise DataError(
            f"{spec}: could not load Hugging Face dataset {dataset!r} (config={config!r}, split={split!r}): "
            f"{type(e).__name__}: {e}. {hint}; offline, use a JSONL path or a benchmark name instead"
        ) from e
    return problems_from_hf_rows(ds, dataset, split, skip_invalid=skip_invalid, spec=spec)
