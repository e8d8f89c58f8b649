"""`distill-jax verify`: read rationales of one style, compute each one's answer, compare with gold.

Input JSONL rows have `id`, `rationale` and optionally a gold `answer`; each output row is the input row plus
`prediction` (canonical number string or null), `correct` (bool; null without gold) and `error` (why there is
no prediction; null otherwise). The whole input is checked first (invalid JSON or a row without a string
`rationale` stops the run with file:line before anything is written), then rows go through the style's
batched API in chunks and each chunk is appended to the output as soon as it is done.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distill_jax.config import ConfigError
from distill_jax.data.records import DataError, JsonlAppender, iter_jsonl
from distill_jax.progress import progress_bar
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.styles import STYLES, get_style

DEFAULT_CHUNK = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--style", required=True, choices=sorted(STYLES), help="rationale style")
    parser.add_argument("--input", required=True, type=Path, help="JSONL rows with id, rationale[, answer]")
    parser.add_argument("--output", required=True, type=Path, help="JSONL: input rows + prediction, correct, error")
    parser.add_argument("--workers", type=int, default=None, help="worker processes for pot/eot (default: CPUs)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per program / equation system")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="rows per batch and per append")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _gold(row: dict) -> str | None:
    value = row.get("answer")
    return None if value is None or str(value).strip() == "" else str(value)


def _check_input(path: Path) -> int:
    """Validate every row before any work; returns the row count."""
    n = 0
    for lineno, row in iter_jsonl(path):
        if not isinstance(row.get("rationale"), str):
            what = "lacks 'rationale'" if "rationale" not in row else "has a non-string 'rationale'"
            raise DataError(f"{path}:{lineno}: row {what}")
        n += 1
    return n


def _error_kind(error: str) -> str:
    """`runtime error: ZeroDivisionError` -> `runtime error`; `line 3: not an equation (...)` -> `not an equation`."""
    kind = error.split(": ", 1)[1] if error.startswith("line ") and ": " in error else error
    return kind.split(":", 1)[0].split(" (", 1)[0].strip()


def verify_file(style_name: str, input_path: Path, output_path: Path, *, workers: int | None = None,
                timeout_s: float = 2.0, chunk_size: int = DEFAULT_CHUNK, progress: bool = True) -> dict:
    """Verify every row of `input_path` into `output_path` (overwritten); returns the summary counts."""
    style = get_style(style_name)
    if input_path.resolve() == output_path.resolve():
        raise DataError(f"{output_path}: output must differ from the input")
    total = _check_input(input_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text("", encoding="utf-8")
    stats: Counter = Counter()
    errors: Counter = Counter()
    with progress_bar(f"verify {style_name}", enabled=progress) as bar, JsonlAppender(output_path) as out:
        task = bar.add_task("rows", total=total)
        chunk: list[dict] = []

        def flush() -> None:
            done_before = bar.tasks[0].completed
            results = style.answers([row["rationale"] for row in chunk], timeout_s=timeout_s, workers=workers,
                                    progress=lambda done, _n: bar.update(task, completed=done_before + done))
            for row, result in zip(chunk, results):
                gold = _gold(row)
                correct = None if gold is None else answers_match(result.answer, gold)
                out.write({**row, "prediction": result.answer, "correct": correct, "error": result.error})
                stats["rows"] += 1
                stats["predicted"] += result.answer is not None
                if gold is not None:
                    stats["with_gold"] += 1
                    stats["correct"] += bool(correct)
                if result.error:
                    errors[_error_kind(result.error)] += 1
            bar.update(task, completed=done_before + len(chunk))
            chunk.clear()

        for _, row in iter_jsonl(input_path):
            chunk.append(row)
            if len(chunk) >= chunk_size:
                flush()
        if chunk:
            flush()
    return {**stats, "errors": dict(errors)}


def _print_summary(summary: dict, style: str, output: Path, console: Console) -> None:
    table = Table(title=f"verify {style} -> {output}")
    table.add_column("")
    table.add_column("count", justify="right")
    rows, gold = summary.get("rows", 0), summary.get("with_gold", 0)
    table.add_row("rows", str(rows))
    table.add_row("with a prediction", str(summary.get("predicted", 0)))
    table.add_row("with gold", str(gold))
    table.add_row("correct", str(summary.get("correct", 0)))
    if gold:
        table.add_row("accuracy", f"{summary.get('correct', 0) / gold:.2%}")
    for kind, count in sorted(summary["errors"].items(), key=lambda kv: -kv[1]):
        table.add_row(f"error: {kind}", str(count))
    console.print(table)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    if args.chunk_size < 1 or not args.timeout > 0 or (args.workers is not None and args.workers < 1):
        raise ConfigError("--chunk-size and --workers must be >= 1 and --timeout > 0")
    try:
        summary = verify_file(args.style, args.input, args.output, workers=args.workers, timeout_s=args.timeout,
                              chunk_size=args.chunk_size, progress=not args.no_progress)
    except DataError as e:
        print(f"distill-jax verify: error: {e}", file=sys.stderr)  # plain: rich would wrap the file:line
        return 2
    _print_summary(summary, args.style, args.output, console)
    return 0
