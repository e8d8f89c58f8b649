"""JSONL io shared by every stage, and the rationale record schema (DESIGN.md "Records").

Reading names the file and line of any bad row; writing is append-only and flushed per record, so a
crash never loses rows already paid for; whole-file rewrites go through a temp file and an atomic rename.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from distill_jax.fileio import ClosesOnExit, atomic_writer

RATIONALE_KEYS = ("problem_id", "question", "answer", "style", "rationale", "prediction", "correct", "round")


class DataError(ValueError):
    """A data file or row is malformed; the message names the file and (1-based) line."""


def iter_jsonl(path: str | Path, *, skip_invalid: bool = False, stats: dict | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, row) for each non-blank line; invalid JSON raises DataError naming file:line.

    With `skip_invalid`, bad lines are counted in `stats["invalid"]` (and their line numbers in
    `stats["invalid_lines"]`) instead of raising.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except ValueError as e:
                if skip_invalid:
                    if stats is not None:
                        stats["invalid"] = stats.get("invalid", 0) + 1
                        stats.setdefault("invalid_lines", []).append(lineno)
                    continue
                raise DataError(f"{path}:{lineno}: invalid JSON: {e}") from e
            yield lineno, row


def read_jsonl(path: str | Path, **kwargs: Any) -> list[dict]:
    return [row for _, row in iter_jsonl(path, **kwargs)]


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write all rows atomically (temp file + rename): readers never see a half-written file."""
    n = 0
    with atomic_writer(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


class JsonlAppender(ClosesOnExit):
    """Append rows one at a time, flushed per row; a torn last line from a crash is repaired on open."""

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        _repair_torn_tail(self.path)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def _repair_torn_tail(path: Path) -> None:
    """Drop an unterminated last line (a write cut by a crash) so appends start on a clean line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        cut = f.read().rfind(b"\n") + 1
        f.truncate(cut)


def rationale_record(
    *,
    problem_id: str,
    question: str,
    answer: str | None,
    style: str,
    rationale: str,
    prediction: str | None,
    correct: bool | None,
    round: int = 0,
    teacher: dict | None = None,
    meta: dict | None = None,
) -> dict:
    """One rationale record in the DESIGN.md schema; `rationale` is exactly the student's target text."""
    return {
        "problem_id": problem_id,
        "question": question,
        "answer": answer,
        "style": style,
        "rationale": rationale,
        "prediction": prediction,
        "correct": correct,
        "round": round,
        "teacher": teacher or {},
        "meta": meta or {},
    }


def check_rationale_record(row: dict, where: str) -> dict:
    """Raise DataError naming `where` (file:line) when a rationale record lacks a field training needs."""
    missing = [k for k in ("problem_id", "question", "style", "rationale") if k not in row]
    if missing:
        raise DataError(f"{where}: rationale record lacks {', '.join(missing)}")
    for key in ("question", "rationale", "style"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise DataError(f"{where}: field {key!r} must be a non-empty string")
    return row
