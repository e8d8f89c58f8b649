"""Atomic file writes: a temp file beside the target, fsynced, then renamed over it; and file hashes.

A reader (a resumed run, another host, the report) never sees a half-written marker, config or result, and a
crash mid-write leaves the previous version in place. No dependencies: every layer uses it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import IO, Any, Iterator, TypeVar

T = TypeVar("T", bound="ClosesOnExit")


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


def sha256_file(path: str | Path) -> str:
    """The file's sha256; for a directory, of every file below it (relative names and contents, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if path.is_dir():
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class ClosesOnExit:
    """`with obj:` calls `obj.close()` at the end: the file-backed writers and stores (JSONL appender, cache)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
