"""`ClientConfig`: the `teacher.*` settings of the endpoint client (which server, how fast, how much)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from distill_jax.teacher.pricing import DEFAULT_PRICES, cost_usd, price_of

_AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
_LOCAL_HOSTS = ("localhost", "::1")


@dataclass(frozen=True)
class ClientConfig:
    """Fields are config keys under `teacher.` in teach configs."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"  # with Azure: the deployment name unless azure_deployment is set
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the env var; the key itself is never stored anywhere
    # Azure OpenAI: set azure_endpoint (https://NAME.openai.azure.com) and api_version; base_url is then unused.
    azure_endpoint: str = ""
    api_version: str = ""
    azure_deployment: str = ""
    default_headers: dict[str, str] = field(default_factory=dict)  # sent with every request (gateways, OpenRouter)
    default_query: dict[str, str] = field(default_factory=dict)  # added to every URL's query string
    # The SDK's HTTP client: httpx2 (its default), or aiohttp (the SDK's `aiohttp` extra: about half the client
    # CPU per request at high concurrency, benchmarks/teacher.py); both read proxies and CA bundles from the
    # environment the same way.
    http_backend: Literal["httpx2", "aiohttp"] = "httpx2"
    concurrency: int = 16
    requests_per_minute: float = 0.0  # 0 = unlimited
    tokens_per_minute: float = 0.0
    timeout_s: float = 120.0  # per request, from sending to the whole reply
    connect_timeout_s: float = 10.0
    max_retries: int = 8  # 429, 5xx, timeouts, dropped or malformed replies
    connect_retries: int = 2  # refused connection / DNS failure: a short retry, then the run stops
    connect_backoff_s: float = 0.5
    preflight: bool = True  # one GET /models before the run: an unreachable endpoint or a bad key fails at once
    dry_run_preflight: bool = False  # also in a dry run (checks reachability; sends no chat request)
    use_n: bool = True  # ask for n samples in one request when the server supports `n`
    budget_usd: float = 0.0  # 0 = no cap
    dry_run: bool = False
    batch_api: bool = False
    batch_poll_s: float = 30.0  # Batch API status polling interval
    batch_max_requests: int = 50_000  # per batch input file (OpenAI's cap)
    batch_max_bytes: int = 200 * 1024 * 1024  # per batch input file (OpenAI's cap: 200 MB)
    prices: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_PRICES.items()})
    est_completion_tokens: int = 256  # completion estimate (dry run, budget, TPM) when max_tokens is not set
    backoff_base_s: float = 1.0  # full-jitter backoff: uniform(0, min(backoff_max_s, base * 2**attempt))
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("base_url",) + (("azure_endpoint",) if self.azure_endpoint else ()):
            parts = urlsplit(getattr(self, name))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{name} must be http(s)://host[:port]/path, got {getattr(self, name)!r}")
        host = urlsplit(self.base_url).hostname or ""
        if not self.azure_endpoint and host.endswith(_AZURE_HOSTS):
            raise ValueError(f"base_url {self.base_url!r} is an Azure OpenAI endpoint: set azure_endpoint "
                             f"(https://{host}) and api_version instead")
        if self.azure_endpoint and not self.api_version:
            raise ValueError("azure_endpoint needs api_version (e.g. 2024-10-21)")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if min(self.max_retries, self.connect_retries) < 0 or self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("max_retries and connect_retries must be >= 0, timeout_s and connect_timeout_s > 0")
        if self.batch_max_requests < 1 or self.batch_max_bytes < 1024:
            raise ValueError("batch_max_requests must be >= 1 and batch_max_bytes >= 1024")
        for name, value in self.prices.items():
            if len(value) != 2:
                raise ValueError(f"prices.{name} must be [usd per 1M prompt tokens, usd per 1M completion tokens]")

    @property
    def url(self) -> str:
        """Where requests go, for messages."""
        return self.azure_endpoint or self.base_url

    @property
    def is_local(self) -> bool:
        """Loopback: a key is optional (tests, a vLLM or llama.cpp server on this machine)."""
        host = urlsplit(self.url).hostname or ""
        return host in _LOCAL_HOSTS or host.startswith("127.")

    def price(self) -> list[float] | None:
        return price_of(self.model, self.prices)

    def cost(self, prompt_tokens: float, completion_tokens: float, discount: float = 1.0) -> float:
        return cost_usd(self.price(), prompt_tokens, completion_tokens, discount)
