"""Metrics sinks: RUN/logs/metrics.jsonl always, TensorBoard (tensorboardX) when it is installed.

Only process 0 writes; the others get a tracker that drops everything, so callers never branch on rank.
A run that resumes at step S first cuts both logs back to S (rows after the checkpoint it restored are the
lost steps, which it is about to train again), so every step appears once.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from distill_jax.fileio import write_text_atomic

log = logging.getLogger(__name__)


def _rows_up_to(path: Path, step: int) -> tuple[list[str], int]:
    """(lines of `path` whose step is <= step, how many were cut). A torn last line (a killed writer) is cut."""
    kept, cut = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            cut += 1
            continue
        if row_step <= step:
            kept.append(line)
        else:
            cut += 1
    return kept, cut


class Tracker:
    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True, start_step: int = 0):
        """start_step: the step training starts from (the restored checkpoint's; 0 for a fresh run)."""
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        logs = Path(run_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / "metrics.jsonl"
        if path.is_file():
            kept, cut = _rows_up_to(path, start_step)
            if cut:
                log.info("%s: %d rows after step %d removed (they are trained again)", path, cut, start_step)
                write_text_atomic(path, "".join(line + "\n" for line in kept))
        self._jsonl = path.open("a", encoding="utf-8")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                log.info("tensorboardX not installed: metrics go to logs/metrics.jsonl only")
            else:
                # purge_step hides the events a previous attempt wrote after the restored step
                self._tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=start_step + 1)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, (int, float)) or hasattr(v, "item") else v) for k, v in metrics.items()}
        row = {"step": step, **{k: (v if not (isinstance(v, float) and not math.isfinite(v)) else str(v))
                                for k, v in clean.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, float):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


__all__ = ["Tracker"]
