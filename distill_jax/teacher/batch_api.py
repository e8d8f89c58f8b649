"""Batch API mode (half price, results within 24 h) through the SDK's `files` and `batches` resources.

The requests not in the cache become JSONL lines (custom_id = cache key, one sample per line: a custom_id must
name exactly one cache row), split into input files of at most `teacher.batch_max_requests` lines and
`teacher.batch_max_bytes` bytes (OpenAI's caps: 50,000 requests, 200 MB). Each part is uploaded and its batch
created, and every id is written to the state file next to the cache (`<cache>.batch.json`) the moment it
exists, so a crash at any point resumes every open batch instead of submitting (and paying for) it again;
a part whose file was uploaded but whose batch id was not yet saved is matched against the account's batches
by input file id before anything is created. Each part's JSONL stays next to the cache
(`<cache>.batch.part<i>.jsonl`) for inspection; it holds no secrets.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import openai
from rich.console import Console

from distill_jax.fileio import write_json_atomic
from distill_jax.teacher.cache import ResponseCache
from distill_jax.teacher.pricing import BATCH_DISCOUNT, UsageTotals, est_completion_tokens, est_prompt_tokens
from distill_jax.teacher.protocol import Choices, classify_exception, classify_reply
from distill_jax.teacher.ratelimit import backoff_delay
from distill_jax.teacher.request import ChatRequest, chat_body
from distill_jax.teacher.transport import Transport

log = logging.getLogger("distill_jax.teacher")
TERMINAL = ("completed", "failed", "expired", "cancelled")


class BatchError(RuntimeError):
    """A Batch API management call failed for good (the state file is kept: a rerun resumes)."""


def state_path(cache_path: str | Path) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".batch.json")


def split_lines(lines: list[tuple[str, bytes]], max_requests: int, max_bytes: int) -> list[list[tuple[str, bytes]]]:
    """(key, JSONL line) split into parts of at most max_requests lines and max_bytes bytes, in order."""
    parts: list[list[tuple[str, bytes]]] = []
    size = 0
    for key, line in lines:
        if len(line) > max_bytes:
            raise BatchError(f"one batch line is {len(line)} bytes, over teacher.batch_max_bytes={max_bytes}")
        if not parts or len(parts[-1]) >= max_requests or size + len(line) > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append((key, line))
        size += len(line)
    return parts


async def run_batch(transport: Transport, cache: ResponseCache, usage: UsageTotals,
                    requests: list[ChatRequest]) -> dict[str, str]:
    """Results go to `cache` (usage counted at the batch discount); returns {cache key: "<kind>: <message>"}
    for the requests that failed. Resumes the batches of an earlier run first."""
    cfg = transport.cfg
    path = state_path(cache.path)
    failed: dict[str, str] = {}
    if path.is_file():
        state = json.loads(path.read_text(encoding="utf-8"))
        log.warning("resuming %d batch part(s) from %s", len(state["parts"]), path)
        failed.update(await _Batches(transport, cache, usage, state, path).finish())
        path.unlink()
    todo = {r.key(cfg.model): r for r in requests}
    todo = {k: r for k, r in todo.items() if k not in cache and k not in failed}
    if not todo:
        return failed
    if cfg.budget_usd > 0:
        prompt = sum(est_prompt_tokens(r) for r in todo.values())
        completion = sum(est_completion_tokens(r, cfg.est_completion_tokens) for r in todo.values())
        est = cfg.cost(prompt, completion, BATCH_DISCOUNT)
        if usage.cost_usd + est > cfg.budget_usd:
            msg = f"budget: batch estimate ${est:.4f} exceeds the budget of ${cfg.budget_usd:g}"
            return {**failed, **{k: msg for k in todo}}
    url = "/chat/completions" if cfg.azure_endpoint else "/v1/chat/completions"
    lines = [(k, (json.dumps({"custom_id": k, "method": "POST", "url": url, "body": chat_body(cfg.model, r)},
                             ensure_ascii=False) + "\n").encode("utf-8")) for k, r in todo.items()]
    parts = split_lines(lines, cfg.batch_max_requests, cfg.batch_max_bytes)
    state: dict[str, Any] = {"model": cfg.model, "endpoint": url, "parts": [
        {"requests": {k: todo[k].canonical(cfg.model) for k, _ in part}, "input_file_id": None, "batch_id": None}
        for part in parts]}
    for i, part in enumerate(parts):
        path.with_name(f"{path.name[:-len('.json')]}.part{i}.jsonl").write_bytes(b"".join(line for _, line in part))
    write_json_atomic(path, state, indent=None)  # before any upload: a crash from here on resumes these parts
    failed.update(await _Batches(transport, cache, usage, state, path).finish())
    path.unlink()
    return failed


class _Batches:
    """The open parts of one state file: submit what is not submitted yet, poll every batch to its end, ingest."""

    def __init__(self, transport: Transport, cache: ResponseCache, usage: UsageTotals, state: dict, path: Path):
        self.transport, self.cache, self.usage, self.state, self.path = transport, cache, usage, state, path
        self.sdk = transport.sdk
        self.console = Console(stderr=True)

    def _save(self) -> None:
        write_json_atomic(self.path, self.state, indent=None)

    async def finish(self) -> dict[str, str]:
        for i, part in enumerate(self.state["parts"]):
            await self._submit(i, part)
        batches = await self._poll()
        failed: dict[str, str] = {}
        for part, batch in zip(self.state["parts"], batches):
            failed.update(await self._ingest(part, batch))
        if failed:
            example = next(iter(failed.values()))
            total = sum(len(p["requests"]) for p in self.state["parts"])
            self.console.print(f"batch: {len(failed)} of {total} requests failed (e.g. {example}); a rerun "
                               f"resubmits only those", highlight=False)
        return failed

    async def _submit(self, i: int, part: dict) -> None:
        if part["batch_id"]:
            return
        if part["input_file_id"]:  # uploaded before a crash: its batch may exist though its id was not saved
            part["batch_id"] = await self._find_batch(part["input_file_id"])
        if not part["input_file_id"]:
            data = self.path.with_name(f"{self.path.name[:-len('.json')]}.part{i}.jsonl").read_bytes()
            uploaded = await self._api(f"upload part {i}", lambda: self.sdk.files.create(
                file=(f"distill_jax-batch-part{i}.jsonl", data, "application/jsonl"), purpose="batch"))
            part["input_file_id"] = uploaded.id
            self._save()
        if not part["batch_id"]:
            created = await self._api(f"create batch for part {i}", lambda: self.sdk.batches.create(
                input_file_id=part["input_file_id"], endpoint=self.state["endpoint"], completion_window="24h"))
            part["batch_id"] = created.id
            log.info("created batch %s with %d requests", created.id, len(part["requests"]))
        self._save()

    async def _find_batch(self, input_file_id: str) -> str | None:
        async def scan() -> str | None:
            async for batch in self.sdk.batches.list(limit=100):
                if batch.input_file_id == input_file_id:
                    return batch.id
            return None

        return await self._api("list batches", scan)

    async def _poll(self) -> list[Any]:
        """Every part's batch, polled until all are terminal; prints status changes only (a 24 h batch
        polls often)."""
        last: dict[str, str] = {}
        while True:
            batches = [await self._api(f"poll {p['batch_id']}", lambda p=p: self.sdk.batches.retrieve(p["batch_id"]))
                       for p in self.state["parts"]]
            for batch in batches:
                counts = batch.request_counts
                line = (f"batch {batch.id}: {batch.status}, {counts.completed if counts else 0}/"
                        f"{counts.total if counts else '?'} done, {counts.failed if counts else 0} failed")
                if last.get(batch.id) != line:
                    self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {line}", highlight=False)
                    last[batch.id] = line
            if all(b.status in TERMINAL for b in batches):
                return batches
            await asyncio.sleep(self.transport.cfg.batch_poll_s)

    async def _ingest(self, part: dict, batch: Any) -> dict[str, str]:
        failed: dict[str, str] = {}
        scrub = self.transport.scrub
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._api(f"download {file_id}", lambda f=file_id: self.sdk.files.content(f))
            for text in content.text.splitlines():
                if not text.strip():
                    continue
                line = json.loads(text)
                key = line.get("custom_id")
                request = part["requests"].get(key)
                if request is None:
                    continue  # not ours (a line of some other batch output)
                if line.get("error"):
                    failed[key] = f"bad_request: {scrub(json.dumps(line['error']))[:300]}"
                    continue
                response = line.get("response") or {}
                body = json.dumps(response.get("body") or {}).encode("utf-8")
                outcome = classify_reply(int(response.get("status_code") or 0), {}, body, 1)
                if isinstance(outcome, Choices):
                    text_, finish = outcome.items[0]
                    self.cache.put(key, request, {"text": text_, "usage": outcome.usage, "finish_reason": finish})
                    self.usage.add(outcome.usage, self.transport.cfg.price(), BATCH_DISCOUNT)
                else:
                    failed[key] = f"{outcome.kind}: {scrub(outcome.message)}"
        for key in part["requests"]:
            if key not in failed and key not in self.cache:
                errors = scrub(json.dumps(batch.errors.model_dump() if batch.errors else {}))[:200]
                failed[key] = f"server_error: no result in batch {batch.id} (status {batch.status}) {errors}".rstrip()
        return failed

    async def _api(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """A management call, retried on connection errors, 429 and 5xx; BatchError otherwise."""
        cfg = self.transport.cfg
        for attempt in range(cfg.max_retries + 1):
            try:
                return await call()
            except (openai.APIError, OSError) as e:
                failure = classify_exception(e, cfg.timeout_s) if isinstance(e, openai.APIError) else None
                problem = f"{failure.kind}: {failure.message}" if failure else f"{type(e).__name__}: {e}"
                if failure is None or not failure.retryable or attempt == cfg.max_retries:
                    raise BatchError(self.transport.scrub(f"batch API: {what} failed: {problem}")) from None
            await asyncio.sleep(backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s))
