"""Batches built ahead on a background thread, so the device never waits for the host to pad and transfer one.

Our own small thread rather than a data-loading library: a batch here is a few numpy fills and one
`make_array_from_process_local_data` per array (batches.py), the order is a pure function of (seed, epoch)
that must not change, and the position each batch leaves the iterator at must travel with it so that a
checkpoint records what the loop consumed, not what the thread built ahead. flax's `prefetch_to_device` is
for pmap; grain would bring a second data model for the same work.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Protocol


class PositionedIterator(Protocol):
    """An endless batch iterator whose `position` (after `next`) is where a resume continues."""

    @property
    def position(self) -> dict: ...

    def __next__(self) -> Any: ...


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """next() -> (batch, position after it), `depth` batches built ahead; close() stops the thread."""

    def __init__(self, batches: PositionedIterator, depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._batches = batches
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._failed: _Failed | None = None
        self._thread = threading.Thread(target=self._fill, name="distill_jax-batches", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            while self._put((next(self._batches), dict(self._batches.position))):
                pass
        except BaseException as e:  # handed to the consumer, who raises it where the batch was wanted
            self._put(_Failed(e))

    def __iter__(self) -> Iterator[tuple[Any, dict]]:
        return self

    def __next__(self) -> tuple[Any, dict]:
        item = self._failed or self._queue.get()
        if isinstance(item, _Failed):
            self._failed = item  # the thread has ended: every later call raises the same error
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Prefetcher", "PositionedIterator"]
