"""Prices, token estimates and the run's usage totals: what a request is expected to cost before it is sent
(dry run, budget reservation, TPM pacing) and what the replies cost after.

Prompt tokens are estimated at ~4 characters a token; completion tokens from `max_tokens` (or the config's
`est_completion_tokens`). Billed usage comes from each reply's `usage`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill_jax.teacher.request import ChatRequest

# USD per 1M tokens [prompt, completion] (OpenAI list prices, 2025). Override with `teacher.prices`.
DEFAULT_PRICES: dict[str, list[float]] = {
    "gpt-4o-mini": [0.15, 0.60],
    "gpt-4o": [2.50, 10.00],
    "gpt-4.1": [2.00, 8.00],
    "gpt-4.1-mini": [0.40, 1.60],
    "gpt-4.1-nano": [0.10, 0.40],
    "gpt-3.5-turbo": [0.50, 1.50],
}
BATCH_DISCOUNT = 0.5  # the Batch API bills half the synchronous price


def price_of(model: str, prices: dict[str, list[float]]) -> list[float] | None:
    """The model's price; a dated snapshot (gpt-4o-mini-2024-07-18) falls back to its longest known prefix."""
    best = max((m for m in prices if model.startswith(m)), key=len, default=None)
    return prices[best] if best else None


def cost_usd(price: list[float] | None, prompt_tokens: float, completion_tokens: float,
             discount: float = 1.0) -> float:
    price = price or [0.0, 0.0]
    return discount * (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


def est_prompt_tokens(request: ChatRequest) -> int:
    return request.prompt_chars() // 4 + 4 * len(request.messages)


def est_completion_tokens(request: ChatRequest, default: int) -> int:
    return int(request.param("max_tokens") or request.param("max_completion_tokens") or default)


@dataclass
class UsageTotals:
    requests_sent: int = 0  # chat requests attempted, retries included
    requests_reached: int = 0  # of those, the ones the server answered (any HTTP status)
    retries: int = 0
    cached_hits: int = 0
    results_ok: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)  # kind -> count

    def add(self, usage: dict, price: list[float] | None, discount: float = 1.0) -> None:
        """Count one reply's billed usage."""
        p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        self.prompt_tokens += p
        self.completion_tokens += c
        self.cost_usd += cost_usd(price, p, c, discount)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "failures": dict(self.failures), "cost_usd": round(self.cost_usd, 6)}


@dataclass
class Estimate:
    """What a run would send and cost (dry run)."""

    requests: int  # results asked for (distinct keys)
    cached: int
    to_send: int  # samples not in the cache
    http_requests: int  # after grouping samples into `n`-requests
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    def __str__(self) -> str:
        return (f"{self.requests} requests, {self.cached} cached, {self.to_send} to send in {self.http_requests} "
                f"HTTP requests: ~{self.prompt_tokens} prompt + ~{self.completion_tokens} completion tokens, "
                f"~${self.cost_usd:.4f}")


def split_usage(usage: dict[str, int], parts: int) -> list[dict[str, int]]:
    """One response's usage spread over its samples so that per-row usages sum to the billed totals."""
    out = []
    for i in range(parts):
        row = {}
        for name, total in usage.items():
            share, rest = divmod(total, parts)
            row[name] = share + (1 if i < rest else 0)
        out.append(row)
    return out
