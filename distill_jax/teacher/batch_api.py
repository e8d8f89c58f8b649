"""OpenAI Batch API mode (half price, up to 24 h): upload the requests not in the cache as JSONL
(custom_id = cache key), create a batch, poll it, download the output and error files, and put every result
into the cache.

The batch id is saved in a state file next to the cache (`<cache>.batch.json`) as soon as it exists, so a
crash while polling resumes the same paid batch instead of submitting (and paying for) it again. The last
submitted JSONL stays next to it (`<cache>.batch.input.jsonl`) for inspection; it holds no secrets. Each sample
is one JSONL line with n=1: custom_id must identify exactly one cache row.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console

from distill_jax.fileio import write_json_atomic
from distill_jax.teacher.client import BATCH_DISCOUNT, ChatRequest, Choices, chat_body
from distill_jax.teacher.http import HttpPool, TransportError
from distill_jax.teacher.ratelimit import backoff_delay

if TYPE_CHECKING:
    from distill_jax.teacher.client import TeacherClient

log = logging.getLogger("distill_jax.teacher")
TERMINAL = ("completed", "failed", "expired", "cancelled")
ENDPOINT = "/v1/chat/completions"


class BatchError(RuntimeError):
    """A Batch API management call failed for good (the state file is kept: a rerun resumes)."""


def state_path(cache_path: str | Path) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".batch.json")


def _save_state(path: Path, state: dict) -> None:
    write_json_atomic(path, state, indent=None)


async def run_batch(client: "TeacherClient", pool: HttpPool, requests: list[ChatRequest],
                    progress: Callable[[dict], None] | None = None) -> dict[str, str]:
    """Results go to `client.cache`; returns {cache key: "<kind>: <message>"} for the requests that failed."""
    model = client.cfg.model
    path = state_path(client.cache.path)
    failed: dict[str, str] = {}
    if path.is_file():
        state = json.loads(path.read_text(encoding="utf-8"))
        log.warning("resuming batch %s from %s", state.get("batch_id") or "(not yet created)", path)
        failed.update(await _finish(client, pool, state, path, progress))
        path.unlink()
    todo = {r.key(model): r for r in requests}
    todo = {k: r for k, r in todo.items() if k not in client.cache and k not in failed}
    if not todo:
        return failed
    if client.cfg.budget_usd > 0:
        est = client.estimate(list(todo.values()))
        if client.usage.cost_usd + est.cost_usd > client.cfg.budget_usd:
            msg = f"budget: batch estimate ${est.cost_usd:.4f} exceeds the budget of ${client.cfg.budget_usd:g}"
            return {**failed, **{k: msg for k in todo}}
    lines = "".join(json.dumps({"custom_id": k, "method": "POST", "url": ENDPOINT, "body": chat_body(model, r)},
                               ensure_ascii=False) + "\n" for k, r in todo.items())
    state: dict[str, Any] = {"model": model, "requests": {k: r.canonical(model) for k, r in todo.items()},
                             "input_file_id": None, "batch_id": None}
    jsonl = path.with_name(path.name.replace(".json", ".input.jsonl"))  # what was submitted, for inspection
    jsonl.write_text(lines, encoding="utf-8")
    state["input_file_id"] = (await _upload(client, pool, lines.encode("utf-8")))["id"]
    _save_state(path, state)
    failed.update(await _finish(client, pool, state, path, progress))
    path.unlink()
    return failed


async def _finish(client: "TeacherClient", pool: HttpPool, state: dict, path: Path,
                  progress: Callable[[dict], None] | None) -> dict[str, str]:
    """Create the batch if the crash came before that, poll it to the end, ingest its files."""
    if not state.get("batch_id"):
        doc = await _api(client, pool, "POST", "/batches", json.dumps(
            {"input_file_id": state["input_file_id"], "endpoint": ENDPOINT, "completion_window": "24h"}).encode(),
            {"Content-Type": "application/json"})
        state["batch_id"] = doc["id"]
        _save_state(path, state)
        log.info("created batch %s with %d requests", doc["id"], len(state["requests"]))
    batch_id = state["batch_id"]
    console, last = Console(stderr=True), ""
    while True:
        batch = await _api(client, pool, "GET", f"/batches/{batch_id}")
        counts = batch.get("request_counts") or {}
        line = (f"batch {batch_id}: {batch.get('status')}, {counts.get('completed', 0)}/{counts.get('total', '?')} "
                f"done, {counts.get('failed', 0)} failed")
        if line != last:  # a 24 h batch polls often: print changes only
            console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {line}", highlight=False)
            last = line
        if progress:
            progress(batch)
        if batch.get("status") in TERMINAL:
            break
        await asyncio.sleep(client.cfg.batch_poll_s)
    failed: dict[str, str] = {}
    for field in ("output_file_id", "error_file_id"):
        if batch.get(field):
            data = await _api(client, pool, "GET", f"/files/{batch[field]}/content", raw=True)
            for line in data.decode("utf-8").splitlines():
                if line.strip():
                    _ingest(client, state, json.loads(line), failed)
    status = batch.get("status")
    for key in state["requests"]:
        if key not in failed and key not in client.cache:
            errors = client.scrub(json.dumps(batch.get("errors") or {}))[:200]
            failed[key] = f"server_error: no result in batch {batch_id} (status {status}) {errors}".rstrip()
    if failed:
        example = next(iter(failed.values()))
        console.print(f"batch {batch_id}: {len(failed)} of {len(state['requests'])} requests failed "
                      f"(e.g. {example}); a rerun resubmits only those", highlight=False)
    return failed


def _ingest(client: "TeacherClient", state: dict, line: dict, failed: dict[str, str]) -> None:
    key = line.get("custom_id")
    request = state["requests"].get(key)
    if request is None:
        return  # not ours (a line of some other batch output)
    response = line.get("response") or {}
    if line.get("error"):
        failed[key] = f"bad_request: {client.scrub(json.dumps(line['error']))[:300]}"
        return
    body = json.dumps(response.get("body") or {}).encode("utf-8")
    outcome = client.classify(int(response.get("status_code") or 0), {}, body, 1)
    if isinstance(outcome, Choices):
        text, finish = outcome.items[0]
        client.cache.put(key, request, {"text": text, "usage": outcome.usage, "finish_reason": finish})
        client.add_usage(outcome.usage, BATCH_DISCOUNT)
    else:
        failed[key] = f"{outcome.kind}: {client.scrub(outcome.message)}"


async def _upload(client: "TeacherClient", pool: HttpPool, jsonl: bytes) -> dict:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="batch.jsonl"\r\n'
            f"Content-Type: application/jsonl\r\n\r\n").encode() + jsonl + f"\r\n--{boundary}--\r\n".encode()
    return await _api(client, pool, "POST", "/files", body,
                      {"Content-Type": f"multipart/form-data; boundary={boundary}"})


async def _api(client: "TeacherClient", pool: HttpPool, method: str, path: str, body: bytes = b"",
               headers: dict[str, str] | None = None, raw: bool = False) -> Any:
    """A management call, retried on transport errors, 429 and 5xx; BatchError otherwise."""
    cfg = client.cfg
    auth = {k: v for k, v in client.headers().items() if k == "Authorization"}
    problem = ""
    for attempt in range(cfg.max_retries + 1):
        try:
            resp = await pool.request(method, path, {**auth, **(headers or {})}, body, cfg.timeout_s)
        except (TransportError, asyncio.TimeoutError) as e:
            problem = f"{type(e).__name__}: {e}"
        else:
            if resp.status == 200:
                return resp.body if raw else json.loads(resp.body)
            problem = f"HTTP {resp.status}: {resp.body[:300].decode('utf-8', 'replace')}"
            if resp.status != 429 and resp.status < 500:
                break
        if attempt < cfg.max_retries:
            await asyncio.sleep(backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s))
    raise BatchError(client.scrub(f"batch API {method} {path} failed: {problem}"))
