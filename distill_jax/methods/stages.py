"""Resumable stages for the method pipelines: each finished stage leaves RUN/stages/NAME.json.

A rerun of a pipeline skips every stage whose marker exists and returns the summary saved in it, so an
interrupted run continues at the first unfinished stage and never repays for teacher calls or training.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from distill_jax.data.problems import load_problems
from distill_jax.data.records import write_jsonl
from distill_jax.fileio import write_json_atomic


class Stages:
    """Markers of finished stages; each holds the stage's summary so a rerun can report without redoing it."""

    def __init__(self, run_dir: Path, log: Callable[[str], None]):
        self.dir = run_dir / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = log

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        marker = self._marker(name)
        if marker.is_file():
            self.log(f"[dim]stage {name}: done earlier, skipped[/dim]")
            return json.loads(marker.read_text(encoding="utf-8"))["result"]
        self.log(f"[bold]stage {name}[/bold]")
        start = time.perf_counter()
        result = fn()
        write_json_atomic(marker, {"result": result, "seconds": round(time.perf_counter() - start, 1)})
        return result

    def done(self, name: str) -> bool:
        return self._marker(name).is_file()

    def _marker(self, name: str) -> Path:
        return self.dir / f"{name}.json"


def copy_seed_problems(problems: str, data_dir: str | None, limit: int | None, seed_file: Path) -> int:
    """A pipeline's first stage: its seed problems copied into RUN, so the run is self-contained and later
    stages (and reruns) read the same problems even when the source file changes."""
    return write_jsonl(seed_file, (p.to_row() for p in load_problems(problems, data_dir)[:limit]))
