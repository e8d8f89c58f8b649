"""TeacherClient against a real HTTP server (the fake OpenAI-compatible one): retries, permanent failures,
`n`, rate limits, budget cap, dry run, key hygiene."""
from __future__ import annotations

import email.utils
import json
import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from distill_jax.config import ConfigError
from distill_jax.teacher.cache import ResponseCache
from distill_jax.teacher.client import TeacherClient
from distill_jax.teacher.client_config import ClientConfig
from distill_jax.teacher.request import ChatRequest
from distill_jax.teacher.ratelimit import parse_retry_after
from distill_jax.testing.fake_server import FakeServer, content_key, default_reply

MODEL = "fake-model"
SECRET = "sk-fake-DISTILLSECRET-0123456789abcdef"


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


def make_client(server: FakeServer, tmp_path: Path, **overrides) -> TeacherClient:
    cfg = dict(base_url=server.url, model=MODEL, concurrency=4, timeout_s=2.0, backoff_base_s=0.02,
               backoff_max_s=0.2, max_retries=4)
    cfg.update(overrides)
    return TeacherClient(ClientConfig(**cfg), ResponseCache(tmp_path / "cache.sqlite"))


def prompts(count: int, samples: int = 1, **params) -> list[ChatRequest]:
    return [ChatRequest.make([{"role": "system", "content": "Solve it."}, {"role": "user", "content": f"q{i}"}],
                             sample=j, meta={"id": i}, **params) for i in range(count) for j in range(samples)]


def served_for(server: FakeServer, request: ChatRequest) -> int:
    """Samples the server returned successfully for this prompt (what was paid)."""
    return server.served[request.content_key(MODEL)]


def received_for(server: FakeServer, request: ChatRequest) -> int:
    """Requests the server received for this prompt, failed ones included."""
    return server.received[request.content_key(MODEL)]


def test_retry_after_429_is_honoured(server, tmp_path):
    server.add_fault("429", retry_after="0.6")
    client = make_client(server, tmp_path)
    start = time.monotonic()
    [result] = client.run_sync(prompts(1))
    elapsed = time.monotonic() - start
    assert result.ok and result.text == default_reply({"messages": list(result.request.messages)}, 0)
    assert elapsed >= 0.6, f"retried after {elapsed:.3f} s, before Retry-After"
    assert received_for(server, result.request) == 2 and client.usage.retries == 1


def test_retry_after_http_date():
    in_5s = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.5 <= parse_retry_after(in_5s) <= 5.01
    assert parse_retry_after("2") == 2.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None


@pytest.fixture(params=["httpx2", "aiohttp"])
def backend(request) -> str:
    """Both of the SDK's HTTP clients (aiohttp: the SDK's `aiohttp` extra)."""
    if request.param == "aiohttp":
        pytest.importorskip("aiohttp", reason="the SDK's aiohttp extra is not installed")
    return request.param


@pytest.mark.parametrize("fault", ["500", "503", "drop", "malformed", "truncated", "empty", "timeout"])
def test_transient_faults_are_retried(server, tmp_path, fault, backend):
    server.hang_s = 1.5  # the hung request sleeps past the client's timeout, then drops the connection
    server.add_fault(fault)
    client = make_client(server, tmp_path, timeout_s=0.5 if fault == "timeout" else 5.0, http_backend=backend)
    results = client.run_sync(prompts(3))
    assert all(r.ok for r in results), [r.error for r in results]
    assert client.usage.retries == 1 and client.usage.requests_sent == 4
    assert sum(server.received.values()) == 4
    # each prompt paid once: a faulty reply is never counted as served
    assert [served_for(server, r.request) for r in results] == [1, 1, 1]
    assert len(client.cache) == 3


def test_permanent_failures_are_per_request_and_not_retried(server, tmp_path, backend):
    server.add_fault("401", match="q1")
    server.add_fault("400", match="q2")
    server.add_fault("context_length", match="q3")
    server.add_fault("quota", match="q4")
    client = make_client(server, tmp_path, http_backend=backend)
    results = client.run_sync(prompts(6))
    kinds = [r.error_kind for r in results]
    assert kinds == [None, "auth", "bad_request", "context_length", "rate_limited", None]
    assert "maximum context length" in results[3].error and "quota" in results[4].error
    assert [received_for(server, r.request) for r in results] == [1] * 6
    assert client.usage.failures == {"auth": 1, "bad_request": 1, "context_length": 1, "rate_limited": 1}
    assert len(client.cache) == 2  # failures are not cached: a rerun asks again


def test_gives_up_after_max_retries(server, tmp_path):
    server.add_fault("500", times=10)
    client = make_client(server, tmp_path, max_retries=2)
    [result] = client.run_sync(prompts(1))
    assert result.error_kind == "server_error" and "gave up after 3 attempts" in result.error
    assert received_for(server, result.request) == 3


def test_n_samples_in_one_request(server, tmp_path):
    client = make_client(server, tmp_path)
    results = client.run_sync(prompts(2, samples=4, temperature=0.7))
    assert all(r.ok for r in results)
    assert client.usage.requests_sent == 2  # one request with n=4 per prompt
    first = results[0].request  # the server counts per prompt as the client groups them, `n` aside
    assert content_key({"model": MODEL, "messages": list(first.messages), "temperature": 0.7, "n": 4}) == \
        first.content_key(MODEL)
    assert [r.text.endswith(f"[choice {r.request.sample}]") for r in results] == [True] * 8
    assert len({r.key for r in results}) == 8 and len(client.cache) == 8
    rows = client.cache.get_many(r.key for r in results)
    assert sum(row["usage"]["completion_tokens"] for row in rows.values()) == client.usage.completion_tokens


def test_n_partly_cached_asks_only_for_missing_samples(server, tmp_path):
    client = make_client(server, tmp_path)
    client.run_sync(prompts(1, samples=2, temperature=0.7))
    results = client.run_sync(prompts(1, samples=5, temperature=0.7))
    assert [r.cached for r in results] == [True, True, False, False, False]
    assert served_for(server, results[0].request) == 5 and client.usage.requests_sent == 2


def test_chunked_responses(tmp_path):
    with FakeServer(chunked=True) as server:
        client = make_client(server, tmp_path)
        results = client.run_sync(prompts(3, samples=2, temperature=0.7))
        assert all(r.ok for r in results) and results[1].text.endswith("[choice 1]")
        assert client.usage.retries == 0


@pytest.mark.parametrize("server_kwargs", [{"supports_n": False}, {"max_choices": 2}, {"max_choices": 1}])
def test_n_fallback_to_separate_requests(tmp_path, server_kwargs):
    with FakeServer(**server_kwargs) as server:
        client = make_client(server, tmp_path)
        results = client.run_sync(prompts(2, samples=4, temperature=0.7))
        assert all(r.ok for r in results), [r.error for r in results]
        assert [served_for(server, results[i].request) for i in (0, 4)] == [4, 4]
        assert len(client.cache) == 8


def test_results_stream_in_as_they_arrive(tmp_path):
    """One slow request holds up nothing but itself: the others arrive (and can be verified) meanwhile."""
    with FakeServer(hang_s=1.0) as server:
        server.add_fault("timeout", match="q0")  # hangs 1 s, then drops: retried
        client = make_client(server, tmp_path, timeout_s=3.0)
        arrived = []
        start = time.monotonic()
        with client:
            for batch in client.stream(prompts(10), batch=4):
                arrived += [(r.request.meta["id"], time.monotonic() - start) for r in batch]
        assert sorted(i for i, _ in arrived) == list(range(10))
        assert arrived[-1][0] == 0 and arrived[-1][1] >= 1.0
        assert max(t for i, t in arrived if i != 0) < 0.8
        assert [s.path for s in server.seen].count("/v1/models") == 1  # one session: one preflight


def test_requests_per_minute_limit(server, tmp_path):
    client = make_client(server, tmp_path, concurrency=8, requests_per_minute=600)  # 10/s, burst of 10
    start = time.monotonic()
    results = client.run_sync(prompts(25))
    elapsed = time.monotonic() - start
    assert all(r.ok for r in results)
    assert 1.4 <= elapsed <= 4.0, f"25 requests at 10/s with a burst of 10 took {elapsed:.2f} s"


def test_tokens_per_minute_limit(server, tmp_path):
    # 500 tokens/s; each request is charged ~10 prompt + max_tokens 90 = 100 up front: a burst of 5, then 5/s
    client = make_client(server, tmp_path, concurrency=8, tokens_per_minute=30000)
    start = time.monotonic()
    results = client.run_sync(prompts(10, max_tokens=90))
    elapsed = time.monotonic() - start
    assert all(r.ok for r in results)
    assert 0.9 <= elapsed <= 4.0, f"10 requests of 100 tokens at 500 tokens/s took {elapsed:.2f} s"


def test_budget_cap_stops_sending(server, tmp_path):
    # $1 per 1k tokens: each reply costs ~$0.01; in-flight estimates use max_tokens=10
    client = make_client(server, tmp_path, concurrency=2, budget_usd=0.1, prices={MODEL: [1000.0, 1000.0]})
    results = client.run_sync(prompts(40, max_tokens=10))
    ok = [r for r in results if r.ok]
    assert 0 < len(ok) < 40
    assert all(r.error_kind == "budget" for r in results if not r.ok)
    per_reply = max(client.cfg.cost(r.usage["prompt_tokens"], r.usage["completion_tokens"]) for r in ok)
    # in-flight estimate per request: ~10 prompt tokens + max_tokens 10 = $0.02; two in flight
    assert client.usage.cost_usd >= 0.1 - 2 * 0.02 - 1e-9  # stopped near the cap, not long before it
    assert client.usage.cost_usd <= 0.1 + 2 * per_reply + 1e-9  # overshoot bounded by the in-flight requests
    assert sum(server.served.values()) == len(ok) == len(client.cache)  # all that was paid is cached


def test_budget_needs_a_price(server, tmp_path):
    with pytest.raises(ConfigError, match="prices"):
        make_client(server, tmp_path, model="unpriced", budget_usd=1.0)


def test_dry_run_sends_nothing(server, tmp_path):
    make_client(server, tmp_path).run_sync(prompts(2, max_tokens=100))
    before = sum(server.received.values())
    client = make_client(server, tmp_path, dry_run=True, prices={MODEL: [1.0, 2.0]})
    results = client.run_sync(prompts(6, samples=3, max_tokens=100))
    assert sum(server.received.values()) == before == 2
    est = client.last_estimate
    assert (est.requests, est.to_send, est.http_requests) == (18, 16, 6)  # q0, q1 sample 0 cached
    assert est.completion_tokens == 16 * 100 and est.prompt_tokens > 0 and est.cost_usd > 0
    assert [r.error_kind for r in results].count("dry_run") == 16


def test_api_key_sent_but_never_stored_or_logged(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FAKE_TEACHER_KEY", SECRET)
    server.add_fault("401", match="q1")  # the server echoes the key in its message, as real ones partly do
    server.add_fault("500", match="q2")
    caplog.set_level(logging.DEBUG)
    client = make_client(server, tmp_path, api_key_env="FAKE_TEACHER_KEY")
    results = client.run_sync(prompts(4))
    assert f"Bearer {SECRET}" in server.auth_headers
    assert results[1].error_kind == "auth" and SECRET not in results[1].error and "***" in results[1].error
    assert "retry 1/4" in caplog.text and SECRET not in caplog.text
    client.cache.close()
    for path in tmp_path.iterdir():  # the database, its WAL and shared-memory files
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in repr(client.cfg) + repr(client.usage) + repr(results)


def test_missing_key_for_remote_endpoint_fails_before_any_request(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_TEACHER_KEY", raising=False)
    cfg = ClientConfig(base_url="https://teacher.invalid/v1", api_key_env="NO_SUCH_TEACHER_KEY")
    client = TeacherClient(cfg, ResponseCache(tmp_path / "c.sqlite"))
    with pytest.raises(ConfigError, match="NO_SUCH_TEACHER_KEY"):
        client.run_sync(prompts(1))
    assert client.usage.requests_sent == 0


def test_duplicates_sent_once_and_on_result_sees_all(server, tmp_path):
    seen = []
    client = make_client(server, tmp_path)
    client.on_result = seen.append
    reqs = prompts(3)
    results = client.run_sync(reqs + reqs[:2])
    assert client.usage.requests_sent == 3 and len(seen) == 5
    assert [r.request.meta["id"] for r in results] == [0, 1, 2, 0, 1]
    assert results[3].text == results[0].text


def test_fake_server_runs_as_a_process(tmp_path):
    """The mode other tests and the benchmark use: prints its port, serves, reports counts on /_stats."""
    proc = subprocess.Popen([sys.executable, "-m", "distill_jax.testing.fake_server", "--port", "0",
                             "--latency-ms", "10", "--fault", "503:0.1"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        client = TeacherClient(ClientConfig(base_url=f"http://127.0.0.1:{port}/v1", model=MODEL),
                               ResponseCache(tmp_path / "c.sqlite"))
        results = client.run_sync(prompts(3, samples=2, temperature=0.7))
        assert all(r.ok for r in results) and client.usage.retries == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as resp:
            stats = json.load(resp)
        assert stats["requests"] == 4 and sorted(stats["served"].values()) == [2, 2, 2]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
