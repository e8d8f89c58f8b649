"""Async client for OpenAI-compatible chat endpoints: cache first, bounded concurrency, RPM/TPM limits,
retries that honour Retry-After, `n` samples per request, usage/cost accounting, a budget cap, a dry run.

Every response is committed to the `ResponseCache` as it arrives, so a crash loses only the calls in flight
and a rerun sends only what is missing. The API key is read from the environment at request time and is
scrubbed from every error text; it is never stored.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from distill_jax.config import ConfigError
from distill_jax.teacher.cache import ResponseCache, TickCommitter
from distill_jax.teacher.http import Endpoint, HttpPool, TransportError
from distill_jax.teacher.ratelimit import TokenBucket, backoff_delay, parse_retry_after

log = logging.getLogger("distill_jax.teacher")

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
ERROR_KINDS = ("auth", "bad_request", "context_length", "server_error", "timeout", "rate_limited", "budget",
               "malformed", "dry_run")
_CONTEXT_RE = re.compile(r"context_length_exceeded|maximum context length|context window", re.I)
_KEYLIKE_RE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{3})[A-Za-z0-9_\-]{5,}")


@dataclass(frozen=True)
class ClientConfig:
    """Fields are config keys under `teacher.` in teach configs."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the env var; the key itself is never stored anywhere
    concurrency: int = 16
    requests_per_minute: float = 0.0  # 0 = unlimited
    tokens_per_minute: float = 0.0
    timeout_s: float = 120.0
    max_retries: int = 8
    use_n: bool = True  # ask for n samples in one request when the server supports `n`
    budget_usd: float = 0.0  # 0 = no cap
    dry_run: bool = False
    batch_api: bool = False
    prices: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_PRICES.items()})
    est_completion_tokens: int = 256  # completion estimate (dry run, budget, TPM) when max_tokens is not set
    backoff_base_s: float = 1.0  # full-jitter backoff: uniform(0, min(backoff_max_s, base * 2**attempt))
    backoff_max_s: float = 60.0
    batch_poll_s: float = 30.0  # Batch API status polling interval

    def __post_init__(self) -> None:
        Endpoint.parse(self.base_url)
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0 or self.timeout_s <= 0:
            raise ValueError("max_retries must be >= 0 and timeout_s > 0")
        for name, value in self.prices.items():
            if len(value) != 2:
                raise ValueError(f"prices.{name} must be [usd per 1M prompt tokens, usd per 1M completion tokens]")

    def price(self) -> list[float] | None:
        """The model's price; a dated snapshot (gpt-4o-mini-2024-07-18) falls back to its longest known prefix."""
        best = max((m for m in self.prices if self.model.startswith(m)), key=len, default=None)
        return self.prices[best] if best else None

    def cost(self, prompt_tokens: float, completion_tokens: float, discount: float = 1.0) -> float:
        price = self.price() or [0.0, 0.0]
        return discount * (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[dict, ...]  # ({"role": ..., "content": ...}, ...)
    params: tuple[tuple[str, Any], ...] = ()  # sorted sampling params: temperature, top_p, max_tokens, ...
    sample: int = 0  # sample index (0..n-1)
    meta: dict = field(default_factory=dict, compare=False)  # caller's bookkeeping; not part of the key

    @classmethod
    def make(cls, messages: list[dict], *, sample: int = 0, meta: dict | None = None, **params: Any) -> "ChatRequest":
        return cls(tuple(dict(m) for m in messages), tuple(sorted(params.items())), sample, dict(meta or {}))

    def canonical(self, model: str) -> dict[str, Any]:
        """What the cache key hashes and the cache stores: no headers, no secrets."""
        return {"model": model, "messages": list(self.messages), "params": dict(self.params), "sample": self.sample}

    def key(self, model: str) -> str:
        """sha256 of the canonical JSON of `canonical(model)`."""
        return self.keys(model)[0]

    def content_key(self, model: str) -> str:
        """Same for every sample of one prompt: the unit that one `n`-request can serve."""
        return self.keys(model)[1]

    def keys(self, model: str) -> tuple[str, str]:
        """(key, content_key) from one serialisation: "sample" sorts after every content field, so the
        canonical JSON of the whole request is the content's with the sample appended."""
        content = canonical_json({"model": model, "messages": list(self.messages), "params": dict(self.params)})
        whole = f'{content[:-1]},"sample":{int(self.sample)}}}'
        return _sha256(whole), _sha256(content)

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def prompt_chars(self) -> int:
        return sum(len(str(m.get("content") or "")) for m in self.messages)


def chat_body(model: str, request: ChatRequest, n: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": list(request.messages), **dict(request.params)}
    if n > 1:
        body["n"] = n
    return body


@dataclass
class ChatResult:
    key: str
    text: str | None
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens
    cached: bool = False
    error: str | None = None  # "<kind>: <message>", kind in ERROR_KINDS
    finish_reason: str | None = None
    request: ChatRequest | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_kind(self) -> str | None:
        return self.error.split(":", 1)[0] if self.error else None


@dataclass
class UsageTotals:
    requests_sent: int = 0  # HTTP chat requests, retries included
    retries: int = 0
    cached_hits: int = 0
    results_ok: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)  # kind -> count

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


@dataclass
class Failure:
    """One attempt's failure; `kind` is one of ERROR_KINDS."""

    kind: str
    message: str
    retryable: bool
    retry_after: float | None = None


@dataclass
class Choices:
    """A successful completion: its choices in index order and the billed usage."""

    items: list[tuple[str, str | None]]  # (text, finish_reason)
    usage: dict[str, int]


class TeacherClient:
    """Runs lists of `ChatRequest`s: cache hits first, the rest over HTTP (or the Batch API), each response
    committed to the cache as it arrives. `usage` accumulates over the client's lifetime; `on_result` is called
    once per result (cached ones too), on the event-loop thread."""

    def __init__(self, cfg: ClientConfig, cache: ResponseCache,
                 on_result: Callable[[ChatResult], None] | None = None):
        self.cfg = cfg
        self.cache = cache
        self.on_result = on_result
        self.endpoint = Endpoint.parse(cfg.base_url)
        if cfg.budget_usd > 0 and cfg.price() is None:
            raise ConfigError(f"teacher.budget_usd is set but teacher.prices has no entry for model {cfg.model!r}")
        self.usage = UsageTotals()
        self.last_estimate: Estimate | None = None
        self._n_supported = True
        self._inflight_usd = 0.0
        self._budget_hit = False
        self._pause_until = 0.0

    # --- secrets -------------------------------------------------------------------------------------
    def _api_key(self) -> str | None:
        return os.environ.get(self.cfg.api_key_env) or None

    def check_key(self) -> None:
        """A missing key fails before any request; local endpoints (tests, vLLM on 127.0.0.1) may run without."""
        if self._api_key() is None and not self.endpoint.is_local:
            raise ConfigError(f"teacher.api_key_env: environment variable {self.cfg.api_key_env} is not set "
                              f"(needed for {self.cfg.base_url})")

    def scrub(self, text: str) -> str:
        key = self._api_key()
        if key:
            text = text.replace(key, "***")
        return _KEYLIKE_RE.sub(r"\1***", text)

    def headers(self) -> dict[str, str]:
        key = self._api_key()
        out = {"Content-Type": "application/json"}
        if key:
            out["Authorization"] = f"Bearer {key}"
        return out

    # --- public API ----------------------------------------------------------------------------------
    def run_sync(self, requests: list[ChatRequest]) -> list[ChatResult]:
        return asyncio.run(self.run(requests))

    async def run(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """Results in request order. Cached ones come first (no request sent); `on_result` sees every result."""
        model = self.cfg.model
        results: list[ChatResult | None] = [None] * len(requests)
        where: dict[str, list[int]] = {}  # key -> indices of the requests it answers (duplicates are sent once)
        content_of: dict[str, str] = {}
        for i, r in enumerate(requests):
            k, content = r.keys(model)
            content_of[k] = content
            where.setdefault(k, []).append(i)

        def deliver(result: ChatResult) -> None:
            for i in where[result.key]:
                results[i] = result if result.request is requests[i] else _with_request(result, requests[i])
                if self.on_result:
                    self.on_result(results[i])
            if result.cached:
                self.usage.cached_hits += 1
            elif result.ok:
                self.usage.results_ok += 1
            else:
                kind = result.error_kind or "unknown"
                self.usage.failures[kind] = self.usage.failures.get(kind, 0) + 1

        hits = self.cache.get_many(where)
        for k, row in hits.items():
            deliver(ChatResult(k, row["text"], row["usage"], True, None, row["finish_reason"], requests[where[k][0]]))
        pending = [(k, requests[idx[0]]) for k, idx in where.items() if k not in hits]
        if not pending:
            return results  # type: ignore[return-value]
        if self.cfg.dry_run:
            self.last_estimate = self.estimate(requests)
            for k, r in pending:
                deliver(ChatResult(k, None, {}, False, "dry_run: not sent", None, r))
            return results  # type: ignore[return-value]
        self.check_key()
        pool = HttpPool(self.endpoint)
        try:
            if self.cfg.batch_api:
                from distill_jax.teacher.batch_api import run_batch

                failed = await run_batch(self, pool, [r for _, r in pending])
                rows = self.cache.get_many(k for k, _ in pending)
                for k, r in pending:
                    if k in rows:
                        row = rows[k]
                        deliver(ChatResult(k, row["text"], row["usage"], False, None, row["finish_reason"], r))
                    else:
                        deliver(ChatResult(k, None, {}, False, failed.get(k, "server_error: no batch result"), None, r))
            else:
                groups: dict[str, list[tuple[str, ChatRequest]]] = {}
                for k, r in pending:
                    groups.setdefault(content_of[k] if self.cfg.use_n else k, []).append((k, r))
                self._committer = TickCommitter(self.cache)
                self._rpm = TokenBucket(self.cfg.requests_per_minute)
                self._tpm = TokenBucket(self.cfg.tokens_per_minute)
                queue = deque(sorted(g, key=lambda kr: kr[1].sample) for g in groups.values())

                async def worker() -> None:
                    # A fixed pool of workers, not a task per group: the first requests go out at once, and
                    # 100k pending requests need no more tasks than the concurrency.
                    while queue:
                        await self._run_group(pool, queue.popleft(), deliver)

                await asyncio.gather(*(worker() for _ in range(min(self.cfg.concurrency, len(queue)))))
        finally:
            await pool.close()
        return results  # type: ignore[return-value]

    def estimate(self, requests: list[ChatRequest], est_prompt_tokens_fn: Callable[[ChatRequest], int] | None = None,
                 est_completion_tokens: int | None = None) -> Estimate:
        """Dry run: what a run would send and cost (prompts ~ chars/4); nothing is sent."""
        model = self.cfg.model
        unique = {r.key(model): r for r in requests}
        hits = self.cache.get_many(unique)
        todo = [r for k, r in unique.items() if k not in hits]
        groups: dict[str, list[ChatRequest]] = {}
        for r in todo:
            groups.setdefault(r.content_key(model) if self.cfg.use_n else r.key(model), []).append(r)
        prompt = completion = 0
        for group in groups.values():
            prompt += est_prompt_tokens_fn(group[0]) if est_prompt_tokens_fn else self._est_prompt(group[0])
            completion += len(group) * (est_completion_tokens or self._est_completion(group[0]))
        discount = BATCH_DISCOUNT if self.cfg.batch_api else 1.0
        return Estimate(len(unique), len(hits), len(todo), len(groups), prompt, completion,
                        self.cfg.cost(prompt, completion, discount))

    # --- internals -----------------------------------------------------------------------------------
    @staticmethod
    def _est_prompt(request: ChatRequest) -> int:
        return request.prompt_chars() // 4 + 4 * len(request.messages)

    def _est_completion(self, request: ChatRequest) -> int:
        return int(request.param("max_tokens") or request.param("max_completion_tokens")
                   or self.cfg.est_completion_tokens)

    def add_usage(self, usage: dict, discount: float = 1.0) -> None:
        p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        self.usage.prompt_tokens += p
        self.usage.completion_tokens += c
        self.usage.cost_usd += self.cfg.cost(p, c, discount)

    async def _run_group(self, pool: HttpPool, group: list[tuple[str, ChatRequest]],
                         deliver: Callable[[ChatResult], None]) -> None:
        """All samples of one prompt (key, request): one `n`-request where possible, single ones as the fallback."""
        model = self.cfg.model
        remaining = list(group)
        single = not self.cfg.use_n
        while remaining:
            n = 1 if (single or not self._n_supported) else len(remaining)
            outcome = await self._call(pool, remaining[0][1], n)
            if isinstance(outcome, Failure):
                if n > 1 and outcome.kind == "bad_request":
                    log.warning("server rejected n=%d (%s); sending samples separately", n, outcome.message)
                    self._n_supported = False
                    continue
                for k, r in remaining[:n]:
                    deliver(ChatResult(k, None, {}, False, f"{outcome.kind}: {outcome.message}", None, r))
                remaining = remaining[n:]
                continue
            answered = list(zip(remaining, outcome.items, _split_usage(outcome.usage, len(outcome.items))))
            await self._committer.put_many([(k, r.canonical(model), {"text": text, "usage": usage,
                                                                     "finish_reason": finish})
                                            for (k, r), (text, finish), usage in answered])
            for (k, r), (text, finish), usage in answered:
                deliver(ChatResult(k, text, usage, False, None, finish, r))
            if len(outcome.items) < n:  # the server ignored part of `n`: ask for the rest one by one
                single = True
            remaining = remaining[len(outcome.items):]

    def _reserve_budget(self, est_usd: float) -> bool:
        """Stop sending once what is spent plus what is in flight reaches the cap (no await: atomic)."""
        if self.cfg.budget_usd <= 0:
            return True
        if self._budget_hit or self.usage.cost_usd + self._inflight_usd >= self.cfg.budget_usd:
            self._budget_hit = True
            return False
        self._inflight_usd += est_usd
        return True

    async def _call(self, pool: HttpPool, request: ChatRequest, n: int) -> Choices | Failure:
        cfg = self.cfg
        payload = canonical_json(chat_body(cfg.model, request, n)).encode("utf-8")
        est_prompt, est_completion = self._est_prompt(request), n * self._est_completion(request)
        est_usd = cfg.cost(est_prompt, est_completion) if cfg.budget_usd > 0 else 0.0
        failure = Failure("server_error", "not attempted", False)
        for attempt in range(cfg.max_retries + 1):
            if not self._reserve_budget(est_usd):
                return Failure("budget", f"budget of ${cfg.budget_usd:g} reached (spent ${self.usage.cost_usd:.4f})",
                                False)
            try:
                pause = self._pause_until - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                await self._rpm.acquire(1)
                await self._tpm.acquire(est_prompt + est_completion)
                self.usage.requests_sent += 1
                try:
                    resp = await pool.request("POST", "/chat/completions", self.headers(), payload, cfg.timeout_s)
                except asyncio.TimeoutError:
                    failure = Failure("timeout", f"no response within {cfg.timeout_s:g} s", True)
                except TransportError as e:
                    failure = Failure("server_error", str(e), True)
                else:
                    outcome = self.classify(resp.status, resp.headers, resp.body, n)
                    if isinstance(outcome, Choices):
                        self.add_usage(outcome.usage)
                        # Servers count max_tokens against TPM up front, so only an excess over the estimate
                        # is charged after the fact; nothing is credited back.
                        self._tpm.debit(max(0, sum(outcome.usage.values()) - est_prompt - est_completion))
                        return outcome
                    failure = outcome
            finally:
                if cfg.budget_usd > 0:
                    self._inflight_usd -= est_usd
            failure.message = self.scrub(failure.message)
            if not failure.retryable or attempt == cfg.max_retries:
                break
            self.usage.retries += 1
            if failure.retry_after is not None:
                # Everyone waits: a 429 means the whole account is over its limit, not this one request. The
                # jitter on top spreads the restart so that the waiters do not all hit the server at once.
                self._pause_until = max(self._pause_until, time.monotonic() + failure.retry_after)
                delay = failure.retry_after + random.uniform(0, cfg.backoff_base_s)
            else:
                delay = backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s)
            log.warning("teacher request %s (%s: %s); retry %d/%d in %.2f s", request.key(cfg.model)[:12],
                        failure.kind, failure.message, attempt + 1, cfg.max_retries, delay)
            await asyncio.sleep(delay)
        if failure.retryable:
            failure.message += f" (gave up after {cfg.max_retries + 1} attempts)"
        return failure

    def classify(self, status: int, headers: dict[str, str], body: bytes, n: int) -> Choices | Failure:
        """Map one HTTP reply onto choices or a failure kind (retryable or not); also used for Batch API lines."""
        text = body.decode("utf-8", "replace")
        if status == 200:
            try:
                doc = json.loads(text)
                choices = sorted(doc["choices"], key=lambda c: c.get("index", 0))
                items = [((c.get("message") or {}).get("content") or "", c.get("finish_reason")) for c in choices]
            except (ValueError, KeyError, TypeError, AttributeError):
                return Failure("malformed", f"unparseable response body ({len(body)} bytes): {text[:120]!r}", True)
            if not items:
                return Failure("malformed", "response has no choices", True)
            usage = doc.get("usage") or {}
            return Choices(items[:n], {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                                        "completion_tokens": int(usage.get("completion_tokens") or 0)})
        message, code = _error_message(text)
        detail = f"HTTP {status}: {message}"
        retry_after = parse_retry_after(headers.get("retry-after"))
        if status == 429:
            if code == "insufficient_quota":  # billing, not speed: retrying cannot help
                return Failure("rate_limited", detail, False)
            return Failure("rate_limited", detail, True, retry_after)
        if status in (401, 403):
            return Failure("auth", detail, False)
        if _CONTEXT_RE.search(text):
            return Failure("context_length", detail, False)
        if status in (408, 409) or status >= 500:
            return Failure("server_error" if status >= 500 else "timeout", detail, True,
                            retry_after if status == 503 else None)
        return Failure("bad_request", detail, False)


def _error_message(text: str) -> tuple[str, str | None]:
    try:
        err = json.loads(text).get("error") or {}
        if isinstance(err, dict):
            return str(err.get("message") or text)[:300], err.get("code") or err.get("type")
        return str(err)[:300], None
    except (ValueError, AttributeError):
        return text[:300], None


def _split_usage(usage: dict[str, int], parts: int) -> list[dict[str, int]]:
    """One response's usage spread over its samples so that per-row usages sum to the billed totals."""
    out = []
    for i in range(parts):
        row = {}
        for name, total in usage.items():
            share, rest = divmod(total, parts)
            row[name] = share + (1 if i < rest else 0)
        out.append(row)
    return out


def _with_request(result: ChatResult, request: ChatRequest) -> ChatResult:
    return ChatResult(result.key, result.text, result.usage, result.cached, result.error, result.finish_reason, request)
