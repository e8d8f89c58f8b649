"""Request pacing: token buckets for requests/tokens per minute, Retry-After parsing, full-jitter backoff."""
from __future__ import annotations

import asyncio
import random
import time
from email.utils import parsedate_to_datetime


class TokenBucket:
    """`per_minute` units refilled continuously; holds at most one second's worth, so bursts stay small."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.last = time.monotonic()
        self._lock = asyncio.Lock()  # FIFO: waiters are served in arrival order

    async def acquire(self, amount: float = 1.0) -> None:
        if self.rate <= 0:
            return
        amount = min(amount, self.capacity)
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= amount:
                    self.tokens -= amount
                    return
                await asyncio.sleep((amount - self.tokens) / self.rate)

    def debit(self, amount: float) -> None:
        """Charge usage beyond what was acquired (may go negative: later requests wait)."""
        if self.rate > 0:
            self.tokens -= amount


def parse_retry_after(value: str | None) -> float | None:
    """Seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter: uniform(0, min(max_s, base_s * 2**attempt)), attempt from 0."""
    return random.uniform(0, min(max_s, base_s * 2 ** attempt))
