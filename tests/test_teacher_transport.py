"""The SDK transport against real protocol variety on loopback: TLS trusted only through SSL_CERT_FILE, an HTTP
CONNECT proxy (HTTPS_PROXY, NO_PROXY), Azure OpenAI's shape, IPv6, the server's pacing headers, and an
endpoint that cannot be reached (said at once, before any work; mid-run a short bounded retry)."""
from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import trustme

from distill_jax.config import ConfigError
from distill_jax.teacher.cache import ResponseCache
from distill_jax.teacher.client import TeacherClient
from distill_jax.teacher.client_config import ClientConfig
from distill_jax.teacher.ratelimit import TokenBucket, parse_duration, server_wait
from distill_jax.teacher.request import ChatRequest
from distill_jax.teacher.transport import EndpointError
from distill_jax.testing.fake_server import FakeServer

MODEL = "fake-model"
SECRET = "sk-fake-TRANSPORTSECRET-0123456789abcdef"
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "all_proxy",
               "no_proxy")


@pytest.fixture(params=["httpx2", "aiohttp"])
def backend(request) -> str:
    """Both of the SDK's HTTP clients (aiohttp: the SDK's `aiohttp` extra)."""
    if request.param == "aiohttp":
        pytest.importorskip("aiohttp", reason="the SDK's aiohttp extra is not installed")
    return request.param


@pytest.fixture(autouse=True)
def _no_proxy_from_the_host(monkeypatch):
    """Loopback only: a proxy set on the machine running the tests must not catch these requests."""
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


def prompts(count: int, **params) -> list[ChatRequest]:
    return [ChatRequest.make([{"role": "user", "content": f"q{i}"}], **params) for i in range(count)]


def make_client(url: str, tmp_path: Path, **overrides) -> TeacherClient:
    cfg = dict(base_url=url, model=MODEL, concurrency=4, timeout_s=5.0, connect_timeout_s=2.0, backoff_base_s=0.02,
               backoff_max_s=0.2, max_retries=3)
    if "backend" in overrides:
        cfg["http_backend"] = overrides.pop("backend")
    cfg.update(overrides)
    return TeacherClient(ClientConfig(**cfg), ResponseCache(tmp_path / "cache.sqlite"))


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A test CA, a server context for 127.0.0.1 / ::1 / localhost, and the CA's PEM file."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(server_ctx)
    pem = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return server_ctx, pem


class ConnectProxy:
    """A small HTTP CONNECT proxy on 127.0.0.1 that records the tunnels it opens."""

    def __init__(self):
        self.tunnels: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> "ConnectProxy":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", 0), self._loop).result()
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target = head.decode("latin-1").split(" ")[:2]
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        self.tunnels.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_https_trusted_only_through_ssl_cert_file(tls, tmp_path, monkeypatch, backend):
    server_ctx, pem = tls
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with FakeServer(ssl=server_ctx, api_key=SECRET) as server:
        monkeypatch.setenv("FAKE_KEY", SECRET)
        assert server.url.startswith("https://127.0.0.1:")
        monkeypatch.setenv("SSL_CERT_FILE", str(pem))
        client = make_client(server.url, tmp_path, backend=backend, api_key_env="FAKE_KEY")
        results = client.run_sync(prompts(3, temperature=0.0))
        assert all(r.ok for r in results) and client.usage.requests_reached == 3
        # Trusting another CA only: refused at the preflight, in seconds, saying why.
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        monkeypatch.setenv("SSL_CERT_FILE", str(other))
        start = time.monotonic()
        with pytest.raises(EndpointError, match="TLS certificate not trusted") as refused:
            make_client(server.url, tmp_path, backend=backend, api_key_env="FAKE_KEY").open()
        assert time.monotonic() - start < 5 and server.url in str(refused.value)
        assert server.stats()["requests"] == 3
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="SSL_CERT_FILE"):
        make_client("https://127.0.0.1:1/v1", tmp_path, backend=backend, api_key_env="FAKE_KEY").open()


def test_https_through_a_connect_proxy_and_no_proxy(tls, tmp_path, monkeypatch, backend):
    server_ctx, pem = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with FakeServer(ssl=server_ctx) as server, ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        results = make_client(server.url, tmp_path, backend=backend).run_sync(prompts(4, temperature=0.0))
        assert all(r.ok for r in results), [r.error for r in results]
        assert proxy.tunnels and set(proxy.tunnels) == {f"127.0.0.1:{server.port}"}
        tunnels = len(proxy.tunnels)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        again = make_client(server.url, tmp_path / "b", backend=backend).run_sync(prompts(4, temperature=0.5))
        assert all(r.ok for r in again) and len(proxy.tunnels) == tunnels  # straight to the server
        assert server.stats()["requests"] == 8


def test_azure_endpoint_path_api_version_and_api_key(tmp_path, monkeypatch, backend):
    monkeypatch.setenv("AZURE_KEY", SECRET)
    with FakeServer(azure=True, api_key=SECRET, supports_n=True) as server:
        client = make_client("https://unused.example/v1", tmp_path, backend=backend, azure_endpoint=server.url,
                             api_version="2024-10-21", model="my-gpt4o-deployment", api_key_env="AZURE_KEY",
                             default_headers={"X-Title": "distill_jax"}, default_query={"trace": "1"})
        results = client.run_sync(prompts(2, temperature=0.7) + [
            ChatRequest.make([{"role": "user", "content": "q0"}], sample=1, temperature=0.7)])
        assert all(r.ok for r in results), [r.error for r in results]
    chats = [s for s in server.seen if s.method == "POST"]
    assert {s.path for s in chats} == {"/openai/deployments/my-gpt4o-deployment/chat/completions"}
    assert all(s.query == {"api-version": "2024-10-21", "trace": "1"} for s in server.seen)
    assert all(s.headers.get("x-title") == "distill_jax" for s in server.seen)
    assert set(server.auth_headers) == {SECRET}  # the api-key header, not a bearer token
    assert [s.path for s in server.seen][0] == "/openai/models"  # the preflight
    assert client.usage.requests_sent == 2  # q0's two samples in one n=2 request


def test_azure_endpoint_given_as_base_url_is_a_config_error():
    with pytest.raises(ValueError, match="azure_endpoint"):
        ClientConfig(base_url="https://myres.openai.azure.com/openai/deployments/x")
    with pytest.raises(ValueError, match="api_version"):
        ClientConfig(azure_endpoint="https://myres.openai.azure.com")


def test_ipv6_loopback(tmp_path):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    with FakeServer(host="::1") as server:
        assert server.url.startswith("http://[::1]:")
        results = make_client(server.url, tmp_path).run_sync(prompts(2))
        assert all(r.ok for r in results) and server.stats()["requests"] == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url, cause", [(None, "connection refused"),
                                        ("http://no-such-teacher.invalid/v1", "host name not resolved")])
def test_unreachable_endpoint_fails_at_once_with_url_and_cause(tmp_path, monkeypatch, backend, url, cause):
    monkeypatch.setenv("FAKE_KEY", SECRET)
    url = url or f"http://127.0.0.1:{_closed_port()}/v1"
    client = make_client(url, tmp_path, backend=backend, api_key_env="FAKE_KEY")
    start = time.monotonic()
    with pytest.raises(EndpointError) as failed:
        client.run_sync(prompts(10))
    assert time.monotonic() - start < 5
    assert url in str(failed.value) and cause in str(failed.value)
    assert client.usage.requests_sent == 0


def test_refused_mid_run_gets_a_short_bounded_retry_then_stops(tmp_path, backend):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    client = make_client(url, tmp_path, backend=backend, preflight=False, concurrency=2, connect_retries=2, connect_backoff_s=0.05,
                         max_retries=8, backoff_base_s=5.0)
    start = time.monotonic()
    results = client.run_sync(prompts(10))
    assert time.monotonic() - start < 3  # not the 5xx schedule (8 retries, 5 s backoff base)
    assert all(r.error_kind == "unreachable" for r in results)
    assert "connection refused" in results[0].error and url in results[0].error
    assert client.usage.requests_reached == 0
    assert client.usage.requests_sent <= 2 * 3  # the two in flight, three attempts each; the rest never sent
    assert client.stopped.startswith("unreachable")


def test_dry_run_can_check_reachability(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    assert make_client(url, tmp_path, dry_run=True).run_sync(prompts(2))[0].error_kind == "dry_run"
    with pytest.raises(EndpointError, match="connection refused"):
        make_client(url, tmp_path, dry_run=True, dry_run_preflight=True).run_sync(prompts(2))
    with FakeServer() as server:
        results = make_client(server.url, tmp_path, dry_run=True, dry_run_preflight=True).run_sync(prompts(2))
        assert [r.error_kind for r in results] == ["dry_run"] * 2
        assert [s.path for s in server.seen] == ["/v1/models"]  # reachability only; no chat request


def test_429_with_x_ratelimit_headers_waits_for_the_reset(tmp_path, backend):
    with FakeServer() as server:
        server.add_fault("429", headers={"x-ratelimit-remaining-requests": "0",
                                         "x-ratelimit-reset-requests": "600ms", "x-ratelimit-reset-tokens": "1ms"})
        client = make_client(server.url, tmp_path, backend=backend)
        start = time.monotonic()
        [result] = client.run_sync(prompts(1))
        assert result.ok and time.monotonic() - start >= 0.6 and client.usage.retries == 1


def test_pacing_headers_parse():
    assert parse_duration("6m0s") == 360 and parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5) and parse_duration("2") == 2
    assert parse_duration("soon") is None and parse_duration(None) is None
    headers = {"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s",
               "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2.5s"}
    assert server_wait(headers) == 2.5 and server_wait(headers, exhausted_only=True) == 2.5
    assert server_wait({**headers, "x-ratelimit-remaining-tokens": "9"}, exhausted_only=True) is None
    assert server_wait({**headers, "retry-after": "7"}) == 7 and server_wait({"retry-after-ms": "250"}) == 0.25


def test_tpm_charges_a_large_request_in_full():
    async def main() -> tuple[float, float]:
        bucket = TokenBucket(30_000)  # 500 tokens a second; holds 500
        start = time.monotonic()
        await bucket.acquire(800)  # larger than the bucket: goes at once, 300 in debt
        after_first = bucket.tokens
        await bucket.acquire(800)  # waits for a full bucket: (500 + 300) / 500 = 1.6 s
        return after_first, time.monotonic() - start

    after_first, elapsed = asyncio.run(main())
    assert after_first == pytest.approx(-300, abs=5)  # charged 800, not clamped to 500
    assert 1.5 <= elapsed <= 3.0


def test_an_attempt_that_never_reached_the_server_gives_its_tokens_back(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    # 600 tokens a second, each attempt charged ~10 prompt + 500 max_tokens: without the credit, the three
    # attempts of each of the 4 prompts would queue behind one another for ~10 s.
    client = make_client(url, tmp_path, preflight=False, concurrency=4, tokens_per_minute=36_000,
                         connect_retries=2, connect_backoff_s=0.05)
    start = time.monotonic()
    results = client.run_sync(prompts(4, max_tokens=500))
    assert all(r.error_kind == "unreachable" for r in results) and time.monotonic() - start < 5
