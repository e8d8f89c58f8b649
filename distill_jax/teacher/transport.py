"""The run's one connection to the teacher endpoint: the official `openai` SDK client.

`openai.AsyncOpenAI` (or `AsyncAzureOpenAI` when `teacher.azure_endpoint` is set), created once per run, with
`max_retries=0`: the retry policy (failure kinds, full-jitter backoff, Retry-After and x-ratelimit-* headers,
a short bounded retry for refused connections) is teacher/client.py's, so the SDK must not retry underneath
it. Proxies (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY) and the CA bundle (SSL_CERT_FILE, SSL_CERT_DIR)
come from the environment, read by the SDK's HTTP client (httpx2) as it always does.

Chat requests go through `client.post(..., cast_to=httpx2.Response)`, the SDK's documented call for a body
it does not need to type: the body is already plain JSON, and the typed `chat.completions.create` would walk
every message through the SDK's TypedDict transform and parse every reply into pydantic models, which
benchmarks/teacher.py measures at a large share of the client's CPU per request. Auth, base URL, Azure
deployment routing, default headers and query, and the SDK's error types are the same on both paths.

The API key is read from the environment variable the config names, once, and lives only in the SDK client;
a loopback endpoint without a key gets a placeholder (the SDK insists on one), never a real key.
"""
from __future__ import annotations

import logging
import os
import ssl
from typing import Any

import httpx2
import openai

from distill_jax.config import ConfigError
from distill_jax.teacher.client_config import ClientConfig
from distill_jax.teacher.protocol import classify_exception, describe_connect_error, scrub

log = logging.getLogger("distill_jax.teacher")
LOCAL_PLACEHOLDER_KEY = "local-endpoint-no-key"


class EndpointError(ConfigError):
    """The endpoint cannot serve this run (unreachable, TLS, key refused): said before any work starts."""


class Transport:
    """One SDK client for a run; use from one event loop (its connection pool belongs to that loop)."""

    def __init__(self, cfg: ClientConfig):
        self.cfg = cfg
        self._key = os.environ.get(cfg.api_key_env) or None
        if self._key is None and not cfg.is_local:
            raise ConfigError(f"teacher.api_key_env: environment variable {cfg.api_key_env} is not set "
                              f"(needed for {cfg.url})")
        limits = httpx2.Limits(max_connections=max(cfg.concurrency, 8) + 4,
                               max_keepalive_connections=max(cfg.concurrency, 8) + 4)
        try:
            if cfg.http_backend == "aiohttp":
                http_client = openai.DefaultAioHttpClient(limits=limits)
            else:
                http_client = openai.DefaultAsyncHttpx2Client(limits=limits)
        except RuntimeError as e:  # the SDK's message when its aiohttp extra is not installed
            raise ConfigError(f"teacher.http_backend=aiohttp: {e} (pip install 'openai[aiohttp]')") from None
        except (OSError, ssl.SSLError) as e:  # SSL_CERT_FILE / SSL_CERT_DIR name something unreadable
            raise ConfigError(f"the CA bundle from the environment cannot be loaded (SSL_CERT_FILE="
                              f"{os.environ.get('SSL_CERT_FILE')!r}, SSL_CERT_DIR={os.environ.get('SSL_CERT_DIR')!r}):"
                              f" {e}") from None
        common: dict[str, Any] = dict(
            api_key=self._key or LOCAL_PLACEHOLDER_KEY, max_retries=0,
            timeout=httpx2.Timeout(cfg.timeout_s, connect=cfg.connect_timeout_s),
            default_headers=dict(cfg.default_headers) or None, default_query=dict(cfg.default_query) or None,
            http_client=http_client)
        if cfg.azure_endpoint:
            self.sdk: openai.AsyncOpenAI = openai.AsyncAzureOpenAI(
                azure_endpoint=cfg.azure_endpoint, api_version=cfg.api_version,
                azure_deployment=cfg.azure_deployment or None, **common)
        else:
            self.sdk = openai.AsyncOpenAI(base_url=cfg.base_url, **common)

    def scrub(self, text: str) -> str:
        return scrub(text, self._key)

    async def chat(self, body: dict[str, Any]) -> httpx2.Response:
        """POST one chat completion; a non-2xx reply raises the SDK's APIStatusError (headers and body kept)."""
        return await self.sdk.post("/chat/completions", cast_to=httpx2.Response, body=body,
                                   options={"timeout": httpx2.Timeout(self.cfg.timeout_s,
                                                                      connect=self.cfg.connect_timeout_s)})

    async def preflight(self) -> None:
        """One GET /models: raises EndpointError within about connect_timeout_s when the endpoint cannot be
        reached or refuses the key. A server without /models (a 404) is reachable, which is all this asks."""
        url = self.cfg.url
        try:
            page = await self.sdk.models.list(timeout=httpx2.Timeout(self.cfg.connect_timeout_s))
        except openai.APIStatusError as e:
            if e.status_code in (401, 403):
                failure = classify_exception(e, self.cfg.connect_timeout_s)
                raise EndpointError(self.scrub(f"{url}: {failure.kind}: {failure.message} (teacher.api_key_env="
                                               f"{self.cfg.api_key_env})")) from None
            log.debug("preflight: %s answered GET /models with HTTP %d; reachable", url, e.status_code)
            return
        except (openai.APIConnectionError, httpx2.TransportError) as e:
            failure = classify_exception(e, self.cfg.connect_timeout_s)
            cause = describe_connect_error(e) if failure.kind == "unreachable" else failure.message
            raise EndpointError(self.scrub(f"teacher endpoint {url} unreachable: {cause}")) from None
        served = [m.id for m in page.data]
        if served and not self.cfg.azure_endpoint and self.cfg.model not in served:
            log.warning("teacher.model %r is not among the %d models %s lists (e.g. %s)", self.cfg.model,
                        len(served), url, ", ".join(served[:5]))

    async def close(self) -> None:
        await self.sdk.close()
