"""ResponseCache and crash safety: put/get, WAL, a client killed with SIGKILL mid-run resumes without paying
twice, and the Batch API round trip including resume after a crash while polling.

The killed runs execute this file as a script (`python tests/test_teacher_cache.py URL CACHE MODE COUNT`), so
parent and child build the very same requests.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill_jax.teacher.batch_api import state_path
from distill_jax.teacher.cache import ResponseCache, TickCommitter
from distill_jax.teacher.client import TeacherClient
from distill_jax.teacher.client_config import ClientConfig
from distill_jax.teacher.pricing import BATCH_DISCOUNT
from distill_jax.teacher.request import ChatRequest
from distill_jax.testing.fake_server import FakeServer

MODEL = "fake-model"
SECRET = "sk-fake-BATCHSECRET-0123456789abcdef"


def problems(count: int) -> list[ChatRequest]:
    return [ChatRequest.make([{"role": "user", "content": f"problem {i}: what is {i} + {i}?"}], temperature=0.0,
                             meta={"id": i}) for i in range(count)]


def make_client(url: str, cache_path: Path, batch: bool = False, **overrides) -> TeacherClient:
    cfg = ClientConfig(base_url=url, model=MODEL, concurrency=4, timeout_s=5.0, backoff_base_s=0.02,
                       batch_api=batch, batch_poll_s=0.05, prices={MODEL: [1.0, 2.0]}, **overrides)
    return TeacherClient(cfg, ResponseCache(cache_path))


def served(server: FakeServer, request: ChatRequest) -> int:
    return server.served[request.content_key(MODEL)]


def start_child(url: str, cache_path: Path, mode: str, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, url, str(cache_path), mode, str(count)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(condition, child: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert child.poll() is None, f"child exited early: {child.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def rows_in(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0


def test_put_get_roundtrip_and_wal(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache.journal_mode() == "wal" and len(cache) == 0
        request = problems(1)[0]
        key = request.key(MODEL)
        cache.put(key, request.canonical(MODEL), {"text": "x = 2\nans = x", "usage": {"prompt_tokens": 3,
                                                                                     "completion_tokens": 5},
                                                  "finish_reason": "stop"})
        row = cache.get(key)
        assert row["text"] == "x = 2\nans = x" and row["usage"]["completion_tokens"] == 5
        assert row["request"] == request.canonical(MODEL) and row["model"] == MODEL and row["finish_reason"] == "stop"
        assert cache.get("missing") is None and key in cache and len(cache) == 1
        assert cache.get_many([key, "missing"]).keys() == {key}
    with ResponseCache(tmp_path / "c.sqlite") as again:  # durable across connections
        assert again.get(key)["text"] == "x = 2\nans = x"


def test_tick_committer_groups_one_tick_into_one_transaction(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    transactions = []
    put_many = cache.put_many
    cache.put_many = lambda rows: (transactions.append(len(rows)), put_many(rows))[1]
    committer = TickCommitter(cache)
    reqs = problems(5)
    rows = [(r.key(MODEL), r.canonical(MODEL), {"text": f"t{i}", "usage": {}, "finish_reason": "stop"})
            for i, r in enumerate(reqs)]

    async def main() -> None:
        await asyncio.gather(*(committer.put_many([row]) for row in rows[:3]))  # same tick: one COMMIT
        await committer.put_many(rows[3:])

    asyncio.run(main())
    assert transactions == [3, 2]
    assert rows_in(tmp_path / "c.sqlite") == 5  # visible to another connection: committed


def test_key_covers_model_messages_params_sample_not_meta():
    base = ChatRequest.make([{"role": "user", "content": "q"}], sample=0, meta={"id": 1}, temperature=0.7, top_p=1)
    same = ChatRequest.make([{"role": "user", "content": "q"}], sample=0, meta={"id": 2}, top_p=1, temperature=0.7)
    assert base.key(MODEL) == same.key(MODEL)
    canonical = json.dumps(base.canonical(MODEL), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert base.key(MODEL) == hashlib.sha256(canonical.encode()).hexdigest()
    variants = [
        ChatRequest.make([{"role": "user", "content": "q!"}], temperature=0.7, top_p=1),
        ChatRequest.make([{"role": "user", "content": "q"}], temperature=0.8, top_p=1),
        ChatRequest.make([{"role": "user", "content": "q"}], sample=1, temperature=0.7, top_p=1),
    ]
    keys = {base.key(MODEL), base.key("other-model")} | {v.key(MODEL) for v in variants}
    assert len(keys) == 5
    assert base.content_key(MODEL) == variants[2].content_key(MODEL)


def test_sigkill_mid_run_then_rerun_sends_only_missing(tmp_path):
    count, cache_path = 60, tmp_path / "cache.sqlite"
    with FakeServer(latency_s=0.05) as server:
        child = start_child(server.url, cache_path, "chat", count)
        try:
            wait_for(lambda: rows_in(cache_path) >= 15, child)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        with ResponseCache(cache_path) as cache:
            saved = cache.keys()
        assert 15 <= len(saved) < count
        paid_before = sum(server.served.values())
        assert paid_before <= len(saved) + 4  # at most the 4 calls in flight were lost

        client = make_client(server.url, cache_path)
        results = client.run_sync(problems(count))
        assert all(r.ok for r in results) and len(client.cache) == count
        assert client.usage.requests_sent == count - len(saved)
        assert sum(r.cached for r in results) == len(saved)
        for r in results:
            # a saved answer is never asked for again; others at most twice (the first lost in flight)
            assert served(server, r.request) == 1 if r.key in saved else served(server, r.request) <= 2
        assert sum(server.served.values()) <= count + 4


def test_batch_round_trip_with_failed_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeServer(batch_line_s=0.005) as server:
        server.add_fault("400", match="problem 3:")  # that batch line fails
        client = make_client(server.url, tmp_path / "cache.sqlite", batch=True)
        reqs = problems(8)
        results = client.run_sync(reqs)
        assert [r.ok for r in results] == [True] * 3 + [False] + [True] * 4
        assert results[3].error_kind == "bad_request"
        assert results[0].text.startswith("Answer to: problem 0")
        assert server.batches_created == 1 and server.files_uploaded == 1 and len(client.cache) == 7
        assert not state_path(client.cache.path).exists()
        submitted = (tmp_path / "cache.sqlite.batch.part0.jsonl").read_text().splitlines()
        assert [json.loads(line)["custom_id"] for line in submitted] == [r.key(MODEL) for r in reqs]
        full = client.cfg.cost(client.usage.prompt_tokens, client.usage.completion_tokens)
        assert client.usage.cost_usd == pytest.approx(BATCH_DISCOUNT * full)
        # a rerun resubmits only what failed
        again = make_client(server.url, tmp_path / "cache.sqlite", batch=True).run_sync(reqs)
        assert all(r.ok for r in again) and server.batches_created == 2 and served(server, reqs[3]) == 1
        assert server.auth_headers and set(server.auth_headers) == {f"Bearer {SECRET}"}
    for path in tmp_path.iterdir():  # cache, WAL, submitted JSONL: the key is sent, never written
        assert SECRET.encode() not in path.read_bytes(), path


def test_batch_split_into_parts_within_the_caps(tmp_path):
    from distill_jax.teacher.batch_api import split_lines

    lines = [(f"k{i}", b"x" * 100) for i in range(7)]
    assert [len(p) for p in split_lines(lines, 3, 10_000)] == [3, 3, 1]
    assert [len(p) for p in split_lines(lines, 50_000, 250)] == [2, 2, 2, 1]
    with FakeServer(batch_line_s=0.002) as server:
        client = make_client(server.url, tmp_path / "cache.sqlite", batch=True, batch_max_requests=3)
        results = client.run_sync(problems(8))
        assert all(r.ok for r in results) and len(client.cache) == 8
        assert server.batches_created == 3 and server.files_uploaded == 3
        parts = [(tmp_path / f"cache.sqlite.batch.part{i}.jsonl").read_text().splitlines() for i in range(3)]
        assert [len(p) for p in parts] == [3, 3, 2]
        assert [json.loads(line)["custom_id"] for p in parts for line in p] == [r.key(MODEL) for r in problems(8)]


def test_batch_resumes_after_crash_mid_poll(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # the child inherits it
    count, cache_path = 12, tmp_path / "cache.sqlite"
    with FakeServer(batch_line_s=0.1) as server:
        child = start_child(server.url, cache_path, "batch", count)
        state = state_path(cache_path)
        try:
            wait_for(lambda: state.exists() and state.read_text().count('"batch_id": "batch_') == 3, child)
            time.sleep(0.2)  # the child is polling now
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert rows_in(cache_path) == 0 and server.batches_created == 3
        assert SECRET not in state.read_text()

        client = make_client(server.url, cache_path, batch=True)
        results = client.run_sync(problems(count))
        assert all(r.ok for r in results) and len(client.cache) == count
        assert server.batches_created == 3 and server.files_uploaded == 3  # the same 3 batches, paid once
        assert all(served(server, r.request) == 1 for r in results)
        assert not state.exists()


if __name__ == "__main__":  # the child process of the SIGKILL tests
    url, cache_arg, mode, n = sys.argv[1:5]
    make_client(url, Path(cache_arg), batch=(mode == "batch"), batch_max_requests=5).run_sync(problems(int(n)))
