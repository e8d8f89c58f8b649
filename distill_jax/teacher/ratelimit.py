"""Request pacing: token buckets for requests/tokens per minute, the server's pacing headers (Retry-After,
retry-after-ms, x-ratelimit-*), full-jitter backoff."""
from __future__ import annotations

import asyncio
import random
import re
import time
from email.utils import parsedate_to_datetime
from typing import Mapping

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class TokenBucket:
    """`per_minute` units refilled continuously; holds at most one second's worth, so bursts stay small.

    A request larger than the bucket is charged in full: it waits for a full bucket, then takes it below zero,
    and the deficit delays the requests after it. Clamping the charge to the capacity would under-count every
    request larger than one second of budget (an 800-token request at 30k TPM charged 500)."""

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.last = time.monotonic()
        self._lock = asyncio.Lock()  # FIFO: waiters are served in arrival order
        self._credited = asyncio.Event()  # wakes the waiter early when an attempt gives its share back

    async def acquire(self, amount: float = 1.0) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            need = min(amount, self.capacity)  # the most the bucket can ever hold
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
                self.last = now
                if self.tokens >= need:
                    self.tokens -= amount
                    return
                self._credited.clear()
                try:
                    await asyncio.wait_for(self._credited.wait(), (need - self.tokens) / self.rate)
                except asyncio.TimeoutError:
                    pass

    def credit(self, amount: float) -> None:
        """Give back what an attempt acquired but never used (it did not reach the server)."""
        if self.rate > 0:
            self.tokens = min(self.capacity, self.tokens + amount)
            self._credited.set()

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


def parse_duration(value: str | None) -> float | None:
    """OpenAI's x-ratelimit-reset-* values: "1s", "6m0s", "20ms", "1h2m3.5s", or plain seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_RE.findall(value)
    if not parts or "".join(a + u for a, u in parts) != value:
        return None
    return sum(float(a) * _UNIT_S[u] for a, u in parts)


def server_wait(headers: Mapping[str, str], exhausted_only: bool = False) -> float | None:
    """How long the server asks us to wait, from a reply's headers (lower-case names): Retry-After (or
    retry-after-ms), else the reset time of a limit whose remaining count is 0, else (for a 429,
    `exhausted_only=False`) the longest reset time given. None when the headers say nothing."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    after = parse_retry_after(headers.get("retry-after"))
    if after is not None:
        return after
    resets = {kind: parse_duration(headers.get(f"x-ratelimit-reset-{kind}")) for kind in ("requests", "tokens")}
    exhausted = [resets[k] for k in resets if resets[k] is not None
                 and (headers.get(f"x-ratelimit-remaining-{k}") or "").strip() == "0"]
    if exhausted:
        return max(exhausted)
    given = [v for v in resets.values() if v is not None]
    return max(given) if given and not exhausted_only else None


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter: uniform(0, min(max_s, base_s * 2**attempt)), attempt from 0."""
    return random.uniform(0, min(max_s, base_s * 2 ** attempt))
