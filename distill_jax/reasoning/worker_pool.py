"""A pool of persistent worker processes speaking JSON lines: the one pool behind the PoT sandbox (sandbox.py)
and the EoT solver (equations.py).

Each worker is a fresh interpreter started from the caller's argv (not multiprocessing: no fork of a process
that may hold JAX threads, no re-import of the caller's `__main__`). It writes one line, `{"ready": true, ...}`
(the rest is kept as the worker's `info`) or `{"fatal": "why"}`, then answers each request line with one reply
line. JSON rather than pickle: the parent must never unpickle what a hostile program may have forged.

The pool owns the wall clock: an item gets `timeout_s` from the moment a worker receives it. A worker past its
deadline, one that dies, or one that sends garbage is killed (and reaped, no zombie), its item comes back as
`Lost`, a fresh worker takes its place and the batch carries on. A worker is also replaced after `max_items`
items and after a reply that carries `"recycle": true`. An interrupted batch (Ctrl-C, a raising progress
callback) kills its busy workers, so no late reply is taken for the next batch's item. One batch at a time
(a lock); after a fork the child starts workers of its own.

Why our own: `concurrent.futures.ProcessPoolExecutor` cannot time out one task, breaks as a whole when a worker
dies, and pickles results; `multiprocessing.Pool` shares the last two.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, Protocol, Sequence, TypeVar

REPLY_LIMIT = 1 << 20  # bytes of one reply line; more means a misbehaving worker
START_TIMEOUT_S = 60.0

ProgressFn = Callable[[int, int], None]  # progress(done, total), called after every finished item


@dataclass(frozen=True)
class Lost:
    """An item without a reply: its worker passed the deadline, or died (returncode: negative for a signal)."""

    timeout: bool
    returncode: int | None  # None for a timeout


class WorkerStartError(RuntimeError):
    """A worker does not start; never raised for anything an item does."""


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return signal.Signals(-returncode).name
    return f"exit {returncode}"


class _Worker:
    def __init__(self, argv: Sequence[str], env: dict[str, str] | None) -> None:
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True, close_fds=True,
        )
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.info: dict | None = None  # the ready message, once it came
        self.started = time.monotonic()
        self.job: tuple[int, float] | None = None  # (item index, wall-clock deadline)
        self.served = 0

    def send(self, index: int, request: dict, timeout_s: float) -> None:
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
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
        if len(self.buffer) > REPLY_LIMIT:
            return None
        try:
            messages = [json.loads(line) for line in lines]
        except ValueError:
            return None
        return messages if all(isinstance(m, dict) for m in messages) else None

    def kill(self) -> int:
        """Kill and reap; returns the exit status, negative for a signal."""
        if self.proc.poll() is None:
            self.proc.kill()
        returncode = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        return returncode


class WorkerPool:
    """Persistent workers started from `argv`. Use as a context manager or call close()."""

    def __init__(self, argv: Sequence[str], size: int, *, env: dict[str, str] | None = None,
                 max_items: int | None = None, name: str = "worker",
                 error: type[WorkerStartError] = WorkerStartError,
                 on_ready: Callable[[dict], None] | None = None) -> None:
        self.argv, self.env = list(argv), env
        self.size = max(1, size)
        self.max_items = max_items
        self.name, self.error, self.on_ready = name, error, on_ready
        self._workers: list[_Worker] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __enter__(self) -> WorkerPool:
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

    def run(self, requests: Sequence[dict], timeout_s: float, progress: ProgressFn | None = None
            ) -> list[dict | Lost]:
        """One reply (or Lost) per request, in input order."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        with self._lock:
            if os.getpid() != self._pid:  # forked: the workers (and their pipes) belong to the parent
                self._workers, self._pid = [], os.getpid()
            return _Batch(self, requests, timeout_s, progress).execute()


class _Batch:
    """One batch through the pool: dispatch to idle workers, collect replies, enforce deadlines."""

    def __init__(self, pool: WorkerPool, requests: Sequence[dict], timeout_s: float, progress: ProgressFn | None):
        self.pool, self.timeout_s, self.progress = pool, timeout_s, progress
        self.workers = pool._workers
        self.results: list[dict | Lost | None] = [None] * len(requests)
        self.pending: deque[tuple[int, dict]] = deque(enumerate(requests))
        self.done = 0
        self.selector = selectors.DefaultSelector()

    def finish(self, index: int, result: dict | Lost) -> None:
        self.results[index] = result
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, len(self.results))

    def execute(self) -> list[dict | Lost]:
        try:
            for worker in self.workers:
                self.selector.register(worker.fd, selectors.EVENT_READ, worker)
            while len(self.workers) < min(self.pool.size, len(self.pending)):
                self.spawn()
            while self.pending or any(w.job for w in self.workers):
                self.dispatch()
                self.wait()
        finally:
            # Interrupted: a busy worker's late reply must not be taken for the next batch's item.
            for worker in [w for w in self.workers if w.job]:
                self.workers.remove(worker)
                worker.kill()
            self.selector.close()
        return self.results  # type: ignore[return-value]

    def spawn(self) -> None:
        worker = _Worker(self.pool.argv, self.pool.env)
        self.workers.append(worker)
        self.selector.register(worker.fd, selectors.EVENT_READ, worker)

    def retire(self, worker: _Worker) -> int:
        self.selector.unregister(worker.fd)
        self.workers.remove(worker)
        return worker.kill()

    def replace(self, worker: _Worker) -> int:
        returncode = self.retire(worker)
        if self.pending or any(w.job for w in self.workers):
            self.spawn()
        return returncode

    def start_failed(self, worker: _Worker, why: str) -> WorkerStartError:
        """A worker that does not start will not start again: stop it (no replacement) and say why."""
        self.retire(worker)
        return self.pool.error(f"{self.pool.name} worker {why}")

    def dispatch(self) -> None:
        for worker in list(self.workers):
            if not (worker.info is not None and worker.job is None and self.pending):
                continue
            index, request = self.pending.popleft()
            try:
                worker.send(index, request, self.timeout_s)
            except OSError:  # died while idle (BrokenPipeError): the item never reached it
                self.pending.appendleft((index, request))
                worker.job = None
                self.replace(worker)

    def wait(self) -> None:
        now = time.monotonic()
        deadlines = [w.job[1] for w in self.workers if w.job]
        deadlines += [w.started + START_TIMEOUT_S for w in self.workers if w.info is None]
        for key, _ in self.selector.select(max(0.0, min(deadlines, default=now + 1.0) - now)):
            self.on_readable(key.data)
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.job and now >= worker.job[1]:
                self.finish(worker.job[0], Lost(timeout=True, returncode=None))
                worker.job = None
                self.replace(worker)
            elif worker.info is None and now >= worker.started + START_TIMEOUT_S:
                raise self.start_failed(worker, f"did not start within {START_TIMEOUT_S:.0f} s")

    def on_readable(self, worker: _Worker) -> None:
        messages = worker.read()
        if messages is None:
            if worker.info is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(timeout=5)  # its pipe closed: let it finish exiting, so its status says why
                status = worker.proc.poll()
                raise self.start_failed(worker, "exited during start-up"
                                        f" ({'pipe closed' if status is None else describe_exit(status)})")
            job = worker.job
            returncode = self.replace(worker)
            if job:
                self.finish(job[0], Lost(timeout=False, returncode=returncode))
            return
        for message in messages:
            if worker.info is None:
                if not message.get("ready"):
                    raise self.start_failed(worker, f"failed to start: {message.get('fatal', message)}")
                worker.info = message
                if self.pool.on_ready is not None:
                    self.pool.on_ready(message)
            elif worker.job:
                index, _ = worker.job
                worker.job = None
                self.finish(index, message)
                if message.get("recycle") or (self.pool.max_items and worker.served >= self.pool.max_items):
                    self.replace(worker)
                    return


class _Pool(Protocol):
    size: int

    def close(self) -> None: ...


P = TypeVar("P", bound=_Pool)


class SharedPool(Generic[P]):
    """A process-wide pool, made on first use and kept (its start-up is paid once); remade when a caller names
    another size or other settings (`key`); closed at exit."""

    def __init__(self, make: Callable[[int, Hashable], P], default_size: Callable[[], int]) -> None:
        self._make, self._default_size = make, default_size
        self._pool: P | None = None
        self._key: Hashable = None
        self._lock = threading.Lock()
        atexit.register(self.close)

    def get(self, workers: int | None = None, key: Hashable = None) -> P:
        with self._lock:
            current = self._pool
            if current is not None and workers is None and key == self._key:
                return current
            size = max(1, workers or (current.size if current is not None else self._default_size()))
            if current is None or current.size != size or key != self._key:
                if current is not None:
                    current.close()
                self._pool, self._key = self._make(size, key), key
            return self._pool  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
