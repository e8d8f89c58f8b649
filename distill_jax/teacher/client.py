"""The teacher client: cache first, then the endpoint, for a stream of `ChatRequest`s.

One event loop and one SDK client (teacher/transport.py) serve a whole run: `with client:` opens them (after a
preflight that fails at once when the endpoint cannot be reached or refuses the key), `client.stream(...)`
yields results as they arrive, and the caller works on them (parsing, verifying) while the next requests are
out. The loop runs in a thread of its own, so callers stay synchronous; the groups of samples to send go
through a bounded queue to `concurrency` workers, so the slowest request holds up nothing but itself.

Every reply is committed to the `ResponseCache` before it is handed out (teacher/cache.py), so a crash loses
only the calls in flight and a rerun sends only what is missing. Retries follow one policy: failure kinds
from teacher/protocol.py, full-jitter backoff, the server's Retry-After / x-ratelimit-* waits shared by every
worker, a short bounded retry for a refused connection or a failed DNS lookup. A failure no later request
can avoid (an endpoint gone, the budget reached) stops the run: nothing more is sent, and the
rest is answered with that failure (a refused key stops `teach`, one level up: here each request keeps
its own outcome). The key is only in the SDK client and is scrubbed from every message.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from distill_jax.config import ConfigError
from distill_jax.teacher.batch_api import run_batch
from distill_jax.teacher.cache import ResponseCache, TickCommitter
from distill_jax.teacher.client_config import ClientConfig
from distill_jax.teacher.pricing import (BATCH_DISCOUNT, Estimate, UsageTotals, est_completion_tokens,
                                         est_prompt_tokens, split_usage)
from distill_jax.teacher.protocol import Choices, Failure, classify_exception, classify_reply
from distill_jax.teacher.ratelimit import TokenBucket, backoff_delay, server_wait
from distill_jax.teacher.request import ChatRequest, ChatResult, chat_body
from distill_jax.teacher.transport import Transport

log = logging.getLogger("distill_jax.teacher")
_LOOKUP_SLICE = 512  # cache keys per lookup: the first hits go out before a 100k-request lookup finishes
_END = object()
Group = list[tuple[str, ChatRequest]]  # the samples of one prompt: (key, request), sample order


class _Handoff:
    """Results from the loop thread to the caller's: one wake-up per loop tick, not one per result (each
    wake-up of the caller's thread takes the GIL from the loop in the middle of its work)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._items: collections.deque = collections.deque()
        self._ready = threading.Event()
        self._waking = False

    def put(self, item: Any) -> None:
        """From the loop thread only."""
        self._items.append(item)
        if not self._waking:
            self._waking = True
            self._loop.call_soon(self._wake)

    def _wake(self) -> None:
        self._waking = False
        self._ready.set()

    def take(self, most: int) -> list:
        """At least one item, at most `most` (blocks until one is there)."""
        items: list = []
        while not items:  # a wake-up may come for items an earlier take already had
            self._ready.wait()
            while self._items and len(items) < most:
                items.append(self._items.popleft())
            if not self._items:
                self._ready.clear()
                if self._items:  # put between the check and the clear: its wake-up may already have run
                    self._ready.set()
        return items


class TeacherClient:
    """Runs `ChatRequest`s: cache hits first, the rest over the endpoint (or the Batch API), each reply committed
    to the cache as it arrives. `usage` accumulates over the client's lifetime; `on_result` is called once per
    result (cached ones too) on the caller's thread. `stopped` says why the client stopped sending, if it did."""

    def __init__(self, cfg: ClientConfig, cache: ResponseCache,
                 on_result: Callable[[ChatResult], None] | None = None):
        if cfg.budget_usd > 0 and cfg.price() is None:
            raise ConfigError(f"teacher.budget_usd is set but teacher.prices has no entry for model {cfg.model!r}")
        self.cfg = cfg
        self.cache = cache
        self.on_result = on_result
        self.usage = UsageTotals()
        self.last_estimate: Estimate | None = None
        self.stopped: str | None = None  # "<kind>: <message>" once a failure stopped the run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._transport: Transport | None = None
        self._n_supported = True
        self._inflight_usd = 0.0
        self._pause_until = 0.0
        self._rpm = self._tpm = TokenBucket(0)  # made per session: their locks belong to its loop
        self._committer = TickCommitter(cache)

    # --- the session: one event loop thread and one SDK client ---------------------------------------
    def open(self) -> "TeacherClient":
        """Start the run's event loop and SDK client; check the endpoint first (teacher.preflight). A dry run
        sends nothing and needs neither, unless teacher.dry_run_preflight asks for the reachability check."""
        if self._loop is not None:
            return self
        if self.cfg.dry_run and not self.cfg.dry_run_preflight:
            return self
        transport = Transport(self.cfg)  # reads the key: a missing one fails here, before the loop starts
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True, name="teacher-client")
        thread.start()
        self._loop, self._thread, self._transport = loop, thread, transport
        self._rpm = TokenBucket(self.cfg.requests_per_minute)
        self._tpm = TokenBucket(self.cfg.tokens_per_minute)
        try:
            if self.cfg.preflight or self.cfg.dry_run:
                self._call_soon(transport.preflight()).result()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close the SDK client and stop the loop (the cache stays open: it belongs to the caller)."""
        if self._loop is None:
            return
        loop, thread, transport = self._loop, self._thread, self._transport
        self._loop = self._thread = self._transport = None
        try:
            asyncio.run_coroutine_threadsafe(transport.close(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            loop.close()

    def __enter__(self) -> "TeacherClient":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call_soon(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # --- public API ----------------------------------------------------------------------------------
    def run_sync(self, requests: list[ChatRequest]) -> list[ChatResult]:
        """Results in request order (opens a session for the call when none is open)."""
        out: list[ChatResult | None] = [None] * len(requests)
        positions: dict[int, list[int]] = {}
        for i, r in enumerate(requests):
            positions.setdefault(id(r), []).append(i)
        owned = self._loop is None
        if owned:
            self.open()
        try:
            for batch in self.stream(requests, batch=len(requests) or 1):
                for result in batch:
                    out[positions[id(result.request)].pop(0)] = result
        finally:
            if owned:
                self.close()
        return out  # type: ignore[return-value]

    def stream(self, requests: Iterable[ChatRequest], batch: int = 1) -> Iterator[list[ChatResult]]:
        """Results as they arrive, in lists of at most `batch` (whatever has arrived, never waiting to fill
        one); every request is answered once, duplicates included. Leaving the loop early stops sending: the
        requests in flight still finish and are cached."""
        requests = list(requests)
        if self.cfg.dry_run:
            yield from self._dry_run(requests, batch)
            return
        if self._loop is None:
            raise RuntimeError("TeacherClient.stream needs an open session: use `with client:` (or run_sync)")
        out = _Handoff(self._loop)
        halt = asyncio.Event()
        future = self._call_soon(self._serve(requests, out.put, halt))
        done = False
        try:
            while not done:
                items = out.take(batch)
                if items[-1] is _END:
                    items.pop()
                    done = True
                if items:
                    for result in items:
                        if self.on_result:
                            self.on_result(result)
                    yield items
        except KeyboardInterrupt:
            future.cancel()  # Ctrl-C: drop what is in flight (it is not cached, so a rerun asks again)
            raise
        finally:
            if not done:
                self._loop.call_soon_threadsafe(halt.set)
            if not future.cancelled():
                future.result()  # waits for the requests in flight; re-raises what went wrong in the loop

    def estimate(self, requests: list[ChatRequest], est_completion: int | None = None) -> Estimate:
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
            prompt += est_prompt_tokens(group[0])
            completion += len(group) * (est_completion or est_completion_tokens(group[0],
                                                                                self.cfg.est_completion_tokens))
        discount = BATCH_DISCOUNT if self.cfg.batch_api else 1.0
        return Estimate(len(unique), len(hits), len(todo), len(groups), prompt, completion,
                        self.cfg.cost(prompt, completion, discount))

    # --- the loop side -------------------------------------------------------------------------------
    def _dry_run(self, requests: list[ChatRequest], batch: int) -> Iterator[list[ChatResult]]:
        model = self.cfg.model
        self.last_estimate = self.estimate(requests)
        hits = self.cache.get_many(r.key(model) for r in requests)
        results = []
        for r in requests:
            k = r.key(model)
            row = hits.get(k)
            if row is not None:
                self.usage.cached_hits += 1
                results.append(ChatResult(k, row["text"], row["usage"], True, None, row["finish_reason"], r))
            else:
                results.append(ChatResult(k, None, {}, False, "dry_run: not sent", None, r))
        for start in range(0, len(results), batch):
            chunk = results[start:start + batch]
            for result in chunk:
                if self.on_result:
                    self.on_result(result)
            yield chunk

    async def _serve(self, requests: list[ChatRequest], put: Callable, halt: asyncio.Event) -> None:
        """Answer every request through `put` (then _END): cache hits, then the groups through the workers."""
        try:
            model = self.cfg.model
            where: dict[str, list[ChatRequest]] = {}  # key -> the requests it answers (duplicates sent once)
            content_of: dict[str, str] = {}
            for r in requests:
                k, content = r.keys(model)
                content_of.setdefault(k, content)
                where.setdefault(k, []).append(r)

            def deliver(result: ChatResult) -> None:
                if result.cached:
                    self.usage.cached_hits += 1
                elif result.ok:
                    self.usage.results_ok += 1
                else:
                    kind = result.error_kind or "unknown"
                    self.usage.failures[kind] = self.usage.failures.get(kind, 0) + 1
                for r in where[result.key]:
                    put(result if result.request is r else ChatResult(
                        result.key, result.text, result.usage, result.cached, result.error, result.finish_reason, r))

            keys = list(where)
            pending: list[str] = []
            for start in range(0, len(keys), _LOOKUP_SLICE):
                part = keys[start:start + _LOOKUP_SLICE]
                hits = self.cache.get_many(part)
                for k in part:
                    row = hits.get(k)
                    if row is None:
                        pending.append(k)
                    else:
                        deliver(ChatResult(k, row["text"], row["usage"], True, None, row["finish_reason"],
                                           where[k][0]))
                await asyncio.sleep(0)  # let the consumer start on the hits
            if not pending:
                return
            if self.cfg.batch_api:
                await self._serve_batch([(k, where[k][0]) for k in pending], deliver)
                return
            groups: dict[str, Group] = {}
            for k in pending:
                groups.setdefault(content_of[k] if self.cfg.use_n else k, []).append((k, where[k][0]))
            jobs: asyncio.Queue = asyncio.Queue(maxsize=2 * self.cfg.concurrency)

            async def feed() -> None:
                for group in groups.values():
                    if halt.is_set():
                        break
                    await jobs.put(sorted(group, key=lambda kr: kr[1].sample))
                for _ in range(workers):
                    await jobs.put(None)

            async def work() -> None:
                while (group := await jobs.get()) is not None:
                    if halt.is_set():
                        continue  # the consumer left: drain without sending
                    await self._run_group(group, deliver)

            workers = min(self.cfg.concurrency, len(groups))
            await asyncio.gather(feed(), *(work() for _ in range(workers)))
        finally:
            put(_END)

    async def _serve_batch(self, pending: Group, deliver: Callable[[ChatResult], None]) -> None:
        failed = await run_batch(self._transport, self.cache, self.usage, [r for _, r in pending])
        rows = self.cache.get_many(k for k, _ in pending)
        for k, r in pending:
            if k in rows:
                row = rows[k]
                deliver(ChatResult(k, row["text"], row["usage"], False, None, row["finish_reason"], r))
            else:
                deliver(ChatResult(k, None, {}, False, failed.get(k, "server_error: no batch result"), None, r))

    async def _run_group(self, group: Group, deliver: Callable[[ChatResult], None]) -> None:
        """All samples of one prompt: one `n`-request where possible, single ones as the fallback."""
        model = self.cfg.model
        remaining = list(group)
        single = not self.cfg.use_n
        while remaining:
            n = 1 if (single or not self._n_supported) else len(remaining)
            outcome = await self._call(remaining[0][1], n)
            if isinstance(outcome, Failure):
                if n > 1 and outcome.kind == "bad_request":
                    log.warning("server rejected n=%d (%s); sending samples separately", n, outcome.message)
                    self._n_supported = False
                    continue
                for k, r in remaining[:n]:
                    deliver(ChatResult(k, None, {}, False, f"{outcome.kind}: {outcome.message}", None, r))
                remaining = remaining[n:]
                continue
            answered = list(zip(remaining, outcome.items, split_usage(outcome.usage, len(outcome.items))))
            await self._committer.put_many([(k, r.canonical(model), {"text": text, "usage": usage,
                                                                     "finish_reason": finish})
                                            for (k, r), (text, finish), usage in answered])
            for (k, r), (text, finish), usage in answered:
                deliver(ChatResult(k, text, usage, False, None, finish, r))
            if len(outcome.items) < n:  # the server ignored part of `n`: ask for the rest one by one
                single = True
            remaining = remaining[len(outcome.items):]

    def stop(self, reason: str) -> None:
        """Send nothing more ("<kind>: <message>"): the requests not yet sent are answered with that failure,
        those in flight still land (and are cached). Callable from any thread."""
        if self.stopped is None:
            self.stopped = reason
            log.warning("teacher: stopped sending (%s)", reason)

    def _stop(self, failure: Failure) -> None:
        self.stop(f"{failure.kind}: {failure.message}")

    def _reserve_budget(self, est_usd: float) -> bool:
        """Stop sending once what is spent plus what is in flight reaches the cap (no await: atomic)."""
        if self.cfg.budget_usd <= 0:
            return True
        if self.usage.cost_usd + self._inflight_usd >= self.cfg.budget_usd:
            self._stop(Failure("budget", f"budget of ${self.cfg.budget_usd:g} reached "
                                         f"(spent ${self.usage.cost_usd:.4f})", False))
            return False
        self._inflight_usd += est_usd
        return True

    async def _call(self, request: ChatRequest, n: int) -> Choices | Failure:
        """One chat completion with the retry policy; never raises for a failed request."""
        cfg = self.cfg
        body = chat_body(cfg.model, request, n)
        est_prompt = est_prompt_tokens(request)
        est_completion = n * est_completion_tokens(request, cfg.est_completion_tokens)
        est_usd = cfg.cost(est_prompt, est_completion) if cfg.budget_usd > 0 else 0.0
        failure = Failure("server_error", "not attempted", False)
        attempts = connects = 0
        while True:
            if self.stopped is not None or not self._reserve_budget(est_usd):
                kind, _, why = self.stopped.partition(": ")  # type: ignore[union-attr]
                return Failure(kind, why if kind == "budget" else f"not sent: the run stopped ({why})", False)
            try:
                pause = self._pause_until - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                await self._rpm.acquire(1)
                await self._tpm.acquire(est_prompt + est_completion)
                self.usage.requests_sent += 1
                try:
                    response = await self._transport.chat(body)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the SDK's and httpx2's exception types: classify_exception maps them
                    failure = classify_exception(e, cfg.timeout_s)
                else:
                    headers = dict(response.headers.items())  # one pass: httpx2's Headers scans on every get
                    outcome = classify_reply(response.status_code, headers, response.content, n)
                    wait = server_wait(headers, exhausted_only=True)
                    if wait:  # the server says a limit is used up: everyone waits for its reset
                        self._pause_until = max(self._pause_until, time.monotonic() + wait)
                    if isinstance(outcome, Choices):
                        self.usage.requests_reached += 1
                        self.usage.add(outcome.usage, cfg.price())
                        # Servers count max_tokens against TPM up front, so only an excess over the estimate
                        # is charged after the fact; nothing is credited back.
                        self._tpm.debit(max(0, sum(outcome.usage.values()) - est_prompt - est_completion))
                        return outcome
                    failure = outcome
                if failure.reached:
                    self.usage.requests_reached += 1
                else:  # a refused connection used none of the server's request or token budget
                    self._rpm.credit(1)
                    self._tpm.credit(est_prompt + est_completion)
            finally:
                if cfg.budget_usd > 0:
                    self._inflight_usd -= est_usd
            failure.message = self._transport.scrub(failure.message)
            if failure.kind == "unreachable":
                # Not the 5xx schedule: a refused connection or an unknown host rarely heals in minutes.
                if not failure.retryable or connects >= cfg.connect_retries:
                    failure.message += f" ({cfg.url}; gave up after {connects + 1} attempts)"
                    self._stop(failure)
                    return failure
                delay = cfg.connect_backoff_s * 2 ** connects
                connects += 1
                retry = f"connect retry {connects}/{cfg.connect_retries}"
            else:
                if not failure.retryable or attempts >= cfg.max_retries:
                    break
                if failure.retry_after is not None:
                    # Everyone waits: a 429 means the whole account is over its limit, not this one request.
                    # The jitter on top spreads the restart so the waiters do not all hit the server at once.
                    self._pause_until = max(self._pause_until, time.monotonic() + failure.retry_after)
                    delay = failure.retry_after + random.uniform(0, cfg.backoff_base_s)
                else:
                    delay = backoff_delay(attempts, cfg.backoff_base_s, cfg.backoff_max_s)
                attempts += 1
                retry = f"retry {attempts}/{cfg.max_retries}"
            self.usage.retries += 1
            log.warning("teacher request %s (%s: %s); %s in %.2f s", request.key(cfg.model)[:12], failure.kind,
                        failure.message, retry, delay)
            await asyncio.sleep(delay)
        if failure.retryable:
            failure.message += f" (gave up after {attempts + 1} attempts)"
        return failure
