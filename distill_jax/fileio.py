"""Atomic file writes: a temp file beside the target, fsynced, then renamed over it.

A reader (a resumed run, another host, the report) never sees a half-written marker, config or result, and a
crash mid-write leaves the previous version in place. No dependencies: every layer uses it.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any, Iterator


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[str]]:
    """Open `path` for writing text; the file appears (whole) only when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_writer(path) as f:
        f.write(text)


def write_json_atomic(path: str | Path, doc: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(doc, indent=indent, ensure_ascii=False, default=str) + "\n")
