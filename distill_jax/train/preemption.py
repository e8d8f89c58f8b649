"""When training stops early: SIGTERM (a spot machine's notice), Ctrl-C, or a pod-wide preemption.

Every case ends the same way: a checkpoint of the step just taken, then `TrainingStopped`, which the
`distill-jax` entry point turns into one line and exit code 0 (a preemption: the scheduler restarts the job)
or 130 (Ctrl-C). It derives from KeyboardInterrupt so that no `except Exception` on the way (a pipeline stage,
a library) mistakes it for a failure or marks a half-trained stage done.

One process: SIGTERM and SIGINT set a flag that the loop reads after each step; a second Ctrl-C interrupts at
once (KeyboardInterrupt, nothing saved) for when the checkpoint itself is what hangs.

Several processes (jax.distributed): a host that stops alone leaves the others in a collective that never
completes, and hosts that see the signal at different steps would save different steps. So the decision is
JAX's preemption sync point: JAX's own SIGTERM handler (installed by jax.distributed.initialize) tells the
coordination service, which picks the step every host reaches next; `multihost_utils.reached_preemption_sync_point`
turns true at that step on all hosts together. Our SIGTERM handler stays out of the way (it would replace
JAX's), and Ctrl-C on a host is forwarded to JAX's handler as SIGTERM.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 0
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C


class TrainingStopped(KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint at `step`; rerunning the same command resumes."""

    def __init__(self, cause: str, step: int, checkpoint: str, exit_code: int):
        verb = "interrupted" if exit_code == EXIT_INTERRUPTED else "preempted"
        super().__init__(f"{verb} at step {step} ({cause}): checkpoint {checkpoint} saved; "
                         "rerun the same command to resume")
        self.cause, self.step, self.checkpoint, self.exit_code = cause, step, checkpoint, exit_code


class StopSignals:
    """Context manager over the training loop: `should_stop(step)` after each step says save and stop."""

    def __init__(self) -> None:
        self.multi = jax.process_count() > 1
        self.cause: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be installed from the main thread
        self._install(signal.SIGINT, self._on_sigint)
        if not self.multi:
            self._install(signal.SIGTERM, self._on_sigterm)
        return self

    def _install(self, signum: int, handler: Any) -> None:
        self._previous[signum] = signal.signal(signum, handler)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM: saving a checkpoint after this step, then stopping")
        self.cause = "SIGTERM"

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.cause == "SIGINT":
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, without the checkpoint
        log.warning("Ctrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again: stop without it)")
        self.cause = "SIGINT"
        if self.multi:
            os.kill(os.getpid(), signal.SIGTERM)  # JAX's handler: every host stops at the same step

    def should_stop(self, step: int) -> bool:
        """Call after every step, with the step just taken (the same sequence on every host). Several processes:
        JAX raises here if jax_enable_preemption_service is off, since the hosts could not agree on a step."""
        if not self.multi:
            return self.cause is not None
        if not multihost_utils.reached_preemption_sync_point(step):
            return False
        self.cause = self.cause or "preemption notice (SIGTERM to a host of the job)"
        return True

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.cause == "SIGINT" else EXIT_PREEMPTED

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


__all__ = ["TrainingStopped", "StopSignals", "EXIT_PREEMPTED", "EXIT_INTERRUPTED"]
