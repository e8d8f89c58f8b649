"""Run PoT programs (teacher or student output, so hostile by default) in a pool of locked-down workers.

A program sets `ans` (or defines `solution()` returning it), optionally inside a markdown code fence and
optionally followed by `print(ans)`. Each program runs in one of a few persistent worker processes
(_sandbox_worker.py: AST screen, restricted builtins, per-program module copies, rlimits, no privileges);
this side owns the wall clock: a worker that passes the deadline, crashes or blows its memory is killed and
replaced, the program is reported with a reason, and the pool carries on.

Allowed imports: math, cmath, fractions, decimal, datetime, statistics, itertools, functools (without
update_wrapper/wraps/total_ordering), collections, operator (without attrgetter/methodcaller), re, heapq,
bisect; `re` is in because programs parse numbers out of strings, and a catastrophic regex is just a timeout.
Not allowed: other imports (numpy, sympy, random, os, ...), classes, async, attribute assignment,
`str.format` on anything but a literal, and names or attributes starting with `_` (except `__name__`).
Limits per worker: 256 MiB address space, CPU time a little over the timeout, no fork, no new file.

No program can change what the next one sees (fresh globals, builtins and module copies; attribute assignment
is rejected; the decimal context is reset; garbage is collected before the reply), so workers are reused;
they are still recycled after `max_programs_per_worker` programs and after any MemoryError.

ProgramResult.error kinds: "timeout", "memory", "syntax error: ...", "forbidden import 'os'",
"forbidden name 'open'", "forbidden attribute '__class__'", "forbidden attribute assignment '.x'",
"forbidden syntax: class", "forbidden format field '{0.x}'", "runtime error: ZeroDivisionError",
"no ans", "non-numeric ans: str", "program too long (N characters)", "worker crashed (SIGSEGV)".
"""
from __future__ import annotations

import atexit
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from distill_jax.reasoning import _sandbox_worker
from distill_jax.reasoning.answers import normalize_number

MAX_CODE_CHARS = 50_000
_REPLY_LIMIT = 1 << 20  # bytes; a reply is at most ~10 kB of stdout plus a short repr
_START_TIMEOUT_S = 60.0
_WORKER_SCRIPT = _sandbox_worker.__file__
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_SIGNAL_REASONS = {signal.SIGXCPU: "timeout", signal.SIGXFSZ: "forbidden file write"}


@dataclass(frozen=True)
class ProgramResult:
    answer: str | None  # canonical number string (answers.normalize_number)
    value: str | None  # repr of the program's raw `ans`, cut to 200 characters
    error: str | None  # None when the program produced a numeric answer
    stdout: str  # the program's output, capped at 10,000 characters


ProgressFn = Callable[[int, int], None]  # progress(done, total), called after every finished program


def extract_code(text: str) -> str:
    """The program in `text`: the first ```python fence (else the first fence, else all of it), dedented."""
    blocks = _FENCE.findall(text)
    if blocks:
        python = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
        text = python[0] if python else blocks[0][1]
    return textwrap.dedent(text).strip("\n") + "\n"


def _result_from_reply(reply: dict) -> ProgramResult:
    """Turn a worker's JSON reply into a result; every field is re-typed since the worker is not trusted."""
    stdout = str(reply.get("stdout", ""))
    value = None if reply.get("value") is None else str(reply["value"])
    if reply.get("error") is not None:
        return ProgramResult(None, value, str(reply["error"]), stdout)
    answer = normalize_number(str(reply.get("text", "")))
    if answer is None:
        kind = str(reply.get("type"))
        detail = kind if kind == "str" else f"{kind} out of range"  # numbers past answers.MAX_INT_DIGITS
        return ProgramResult(None, value, f"non-numeric ans: {detail}", stdout)
    return ProgramResult(answer, value, None, stdout)


def _death_reason(returncode: int) -> str:
    if returncode == _sandbox_worker.MEMORY_EXIT_CODE:
        return "memory"
    if returncode < 0:
        sig = signal.Signals(-returncode)
        return _SIGNAL_REASONS.get(sig, f"worker crashed ({sig.name})")
    return f"worker crashed (exit {returncode})"


class SandboxError(RuntimeError):
    """The pool itself cannot work (a worker does not start); never raised for anything a program does."""


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        # -P/-S/-s/-B and an empty environment: nothing but the standard library, no .pyc writes.
        flags = ["-P"] if sys.version_info >= (3, 11) else []
        settings = json.dumps({"memory_mb": memory_mb})
        self.proc = subprocess.Popen(
            [sys.executable, *flags, "-S", "-s", "-B", _WORKER_SCRIPT, settings],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={"PYTHONHASHSEED": "0"}, start_new_session=True, close_fds=True,
        )
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.ready = False
        self.started = time.monotonic()
        self.job: tuple[int, float] | None = None  # (program index, wall-clock deadline)
        self.served = 0

    def send(self, index: int, code: str, timeout_s: float) -> None:
        self.proc.stdin.write((json.dumps({"code": code, "timeout_s": timeout_s}) + "\n").encode())
        self.proc.stdin.flush()
        self.job = (index, time.monotonic() + timeout_s)
        self.served += 1

    def read(self) -> list[dict] | None:
        """Complete messages received so far; None when the worker is gone or misbehaves."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > _REPLY_LIMIT:
            return None
        try:
            messages = [json.loads(line) for line in lines]
        except ValueError:
            return None
        return messages if all(isinstance(m, dict) for m in messages) else None

    def kill(self) -> int:
        """Kill and reap (no zombie); returns the exit status, negative for a signal."""
        if self.proc.poll() is None:
            self.proc.kill()
        returncode = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        return returncode


class SandboxPool:
    """Persistent sandbox workers. Use as a context manager or call close(); thread-safe, fork-aware."""

    def __init__(self, workers: int | None = None, memory_mb: int = 256, max_programs_per_worker: int = 500):
        self.size = max(1, workers or os.cpu_count() or 1)
        self.memory_mb = memory_mb
        self.max_programs_per_worker = max_programs_per_worker
        self._workers: list[_Worker] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        with self._lock:
            if os.getpid() == self._pid:
                for worker in self._workers:
                    worker.kill()
            self._workers = []

    def run(self, codes: list[str], timeout_s: float = 2.0, progress: ProgressFn | None = None
            ) -> list[ProgramResult]:
        """Results in input order. timeout_s is wall-clock per program, from the moment a worker gets it."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        with self._lock:
            if os.getpid() != self._pid:  # forked: the workers (and their pipes) belong to the parent
                self._workers, self._pid = [], os.getpid()
            return _Run(self, codes, timeout_s, progress).execute()


class _Run:
    """One batch through the pool: dispatch to idle workers, collect replies, enforce deadlines."""

    def __init__(self, pool: SandboxPool, codes: list[str], timeout_s: float, progress: ProgressFn | None):
        self.pool, self.timeout_s, self.progress = pool, timeout_s, progress
        self.results: list[ProgramResult | None] = [None] * len(codes)
        self.pending: deque[tuple[int, str]] = deque()
        self.done = 0
        for index, text in enumerate(codes):
            code = extract_code(text)
            if len(code) > MAX_CODE_CHARS:
                self.finish(index, ProgramResult(None, None, f"program too long ({len(code)} characters)", ""))
            else:
                self.pending.append((index, code))
        self.selector = selectors.DefaultSelector()

    def finish(self, index: int, result: ProgramResult) -> None:
        self.results[index] = result
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, len(self.results))

    def execute(self) -> list[ProgramResult]:
        workers = self.pool._workers
        try:
            for worker in workers:
                self.selector.register(worker.fd, selectors.EVENT_READ, worker)
            while len(workers) < min(self.pool.size, max(1, len(self.pending))):
                self.spawn()
            while self.pending or any(w.job for w in workers):
                self.dispatch()
                self.wait()
        finally:
            # Interrupted (Ctrl-C, a raising progress callback): a busy worker's late reply must not be
            # taken for the next batch's program.
            for worker in [w for w in workers if w.job]:
                workers.remove(worker)
                worker.kill()
            self.selector.close()
        return self.results  # type: ignore[return-value]

    def spawn(self) -> None:
        worker = _Worker(self.pool.memory_mb)
        self.pool._workers.append(worker)
        self.selector.register(worker.fd, selectors.EVENT_READ, worker)

    def replace(self, worker: _Worker) -> int:
        self.selector.unregister(worker.fd)
        self.pool._workers.remove(worker)
        returncode = worker.kill()
        if self.pending or any(w.job for w in self.pool._workers):
            self.spawn()
        return returncode

    def dispatch(self) -> None:
        for worker in list(self.pool._workers):
            if not (worker.ready and worker.job is None and self.pending):
                continue
            index, code = self.pending.popleft()
            try:
                worker.send(index, code, self.timeout_s)
            except (BrokenPipeError, OSError):  # died while idle: the program never reached it
                self.pending.appendleft((index, code))
                worker.job = None
                self.replace(worker)

    def wait(self) -> None:
        now = time.monotonic()
        deadlines = [w.job[1] for w in self.pool._workers if w.job]
        deadlines += [w.started + _START_TIMEOUT_S for w in self.pool._workers if not w.ready]
        for key, _ in self.selector.select(max(0.0, min(deadlines, default=now + 1.0) - now)):
            self.on_readable(key.data)
        now = time.monotonic()
        for worker in list(self.pool._workers):
            if worker.job and now >= worker.job[1]:
                self.finish(worker.job[0], ProgramResult(None, None, "timeout", ""))
                worker.job = None
                self.replace(worker)
            elif not worker.ready and now >= worker.started + _START_TIMEOUT_S:
                self.replace(worker)
                raise SandboxError(f"sandbox worker did not start within {_START_TIMEOUT_S:.0f} s")

    def on_readable(self, worker: _Worker) -> None:
        messages = worker.read()
        if messages is None:
            job = worker.job
            returncode = self.replace(worker)
            if not worker.ready:
                raise SandboxError(f"sandbox worker exited during start-up ({_death_reason(returncode)})")
            if job:
                self.finish(job[0], ProgramResult(None, None, _death_reason(returncode), ""))
            return
        for message in messages:
            if "fatal" in message:
                self.replace(worker)
                raise SandboxError(f"sandbox worker failed to start: {message['fatal']}")
            if message.get("ready"):
                worker.ready = True
            elif worker.job:
                index, _ = worker.job
                worker.job = None
                self.finish(index, _result_from_reply(message))
                if message.get("recycle") or worker.served >= self.pool.max_programs_per_worker:
                    self.replace(worker)
                    return


_default_pool: SandboxPool | None = None
_default_lock = threading.Lock()


def _shared_pool(workers: int | None) -> SandboxPool:
    """The process-wide pool; resized when a caller names a different number of workers."""
    global _default_pool
    with _default_lock:
        if _default_pool is not None and workers is None:
            return _default_pool
        size = max(1, workers or os.cpu_count() or 1)
        if _default_pool is None or _default_pool.size != size:
            if _default_pool is not None:
                _default_pool.close()
            _default_pool = SandboxPool(size)
        return _default_pool


@atexit.register
def _close_shared_pool() -> None:
    if _default_pool is not None:
        _default_pool.close()


def run_programs(codes: list[str], timeout_s: float = 2.0, workers: int | None = None,
                 progress: ProgressFn | None = None) -> list[ProgramResult]:
    """Run many programs on the shared pool (workers=None: one per CPU); results keep the input order."""
    return _shared_pool(workers).run(list(codes), timeout_s, progress)


def run_program(code: str, timeout_s: float = 2.0) -> ProgramResult:
    """Run one program on the shared pool."""
    return run_programs([code], timeout_s)[0]
