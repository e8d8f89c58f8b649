"""Metrics sinks: RUN/logs/metrics.jsonl always, TensorBoard (tensorboardX) when it is installed.

Only process 0 writes; the others get a tracker that drops everything, so callers never branch on rank.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        logs = Path(run_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._jsonl = (logs / "metrics.jsonl").open("a", encoding="utf-8")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                log.info("tensorboardX not installed: metrics go to logs/metrics.jsonl only")
            else:
                self._tb = SummaryWriter(str(Path(run_dir) / "tb"))

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
