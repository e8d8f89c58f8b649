"""What a reply means: a chat completion's choices, or a failure of one kind, retryable or not.

Shared by the synchronous client (teacher/client.py) and the Batch API (teacher/batch_api.py), which reads
the same bodies out of its output files. The SDK raises its own exception types; `classify_exception` maps
them, and the transport errors underneath, onto the few kinds the retry policy acts on. Every message passes
through `scrub` before it is kept: some servers echo the key in their 401 text.
"""
from __future__ import annotations

import errno
import json
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Mapping

import httpcore2
import httpx2
import openai

from distill_jax.teacher.ratelimit import server_wait

ERROR_KINDS = ("auth", "bad_request", "context_length", "server_error", "timeout", "rate_limited", "budget",
               "malformed", "dry_run", "unreachable")
_CONTEXT_RE = re.compile(r"context_length_exceeded|maximum context length|context window", re.I)
_UNREACHABLE_ERRNOS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL)
_KEYLIKE_RE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{3})[A-Za-z0-9_\-]{5,}")


@dataclass
class Failure:
    """One attempt's failure; `kind` is one of ERROR_KINDS."""

    kind: str
    message: str
    retryable: bool
    retry_after: float | None = None
    reached: bool = True  # False: the request never got to the server (refused, DNS, connect timeout, TLS)


@dataclass
class Choices:
    """A successful completion: its choices in index order and the billed usage."""

    items: list[tuple[str, str | None]]  # (text, finish_reason)
    usage: dict[str, int]


def scrub(text: str, key: str | None) -> str:
    """The key (and anything shaped like an OpenAI key) masked out of a message."""
    if key:
        text = text.replace(key, "***")
    return _KEYLIKE_RE.sub(r"\1***", text)


def classify_reply(status: int, headers: Mapping[str, str], body: bytes, n: int) -> Choices | Failure:
    """Map one HTTP reply (lower-case header names) onto choices or a failure; also used for Batch API lines."""
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
    if status == 429:
        if code == "insufficient_quota":  # billing, not speed: retrying cannot help
            return Failure("rate_limited", detail, False)
        return Failure("rate_limited", detail, True, server_wait(headers))
    if status in (401, 403):
        return Failure("auth", detail, False)
    if _CONTEXT_RE.search(text):
        return Failure("context_length", detail, False)
    if status in (408, 409) or status >= 500:
        return Failure("server_error" if status >= 500 else "timeout", detail, True,
                       server_wait(headers) if status == 503 else None)
    return Failure("bad_request", detail, False)


def classify_exception(exc: BaseException, timeout_s: float) -> Failure:
    """An SDK or transport exception raised by one attempt, judged by what it was raised from (httpx2 and
    the aiohttp transport wrap the same socket errors in different exception types)."""
    if isinstance(exc, openai.APIStatusError):
        response = exc.response
        return classify_reply(response.status_code, response.headers, response.content, 1)  # type: ignore[return-value]
    causes = _causes(exc)
    # The transport's own exception: the first cause below the SDK's and httpx2's wrappers (httpcore2's for
    # httpx2, aiohttp's for the aiohttp transport, whose wrapper types do not always say what happened).
    root = next((c for c in causes if not isinstance(c, (openai.APIError, httpx2.TransportError))), causes[-1])
    if any(isinstance(c, (ConnectionRefusedError, socket.gaierror, httpx2.ProxyError, ssl.SSLError)) for c in causes) \
            or any(isinstance(c, OSError) and c.errno in _UNREACHABLE_ERRNOS for c in causes):
        # A certificate the client does not trust stays untrusted: no retry (SSL_CERT_FILE names the CA bundle).
        untrusted = any(isinstance(c, ssl.SSLCertVerificationError) for c in causes)
        return Failure("unreachable", describe_connect_error(exc), not untrusted, reached=False)
    if isinstance(root, (TimeoutError, httpx2.TimeoutException, httpcore2.TimeoutException)):
        connecting = any(isinstance(c, (httpx2.ConnectTimeout, httpcore2.ConnectTimeout)) for c in causes)
        return Failure("timeout", f"no {'connection' if connecting else 'response'} within "
                                  f"{timeout_s:g} s", True, reached=not connecting)
    if isinstance(exc, (openai.APIConnectionError, httpx2.TransportError)):
        return Failure("server_error", f"connection dropped or reply cut short ({type(root).__name__}: {root})", True)
    raise exc


def describe_connect_error(exc: BaseException) -> str:
    """The root cause of a failed connection, in words: refused, name not resolved, TLS, proxy, timeout."""
    causes = _causes(exc)
    for c in reversed(causes):
        if isinstance(c, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({c.verify_message}); the CA bundle comes from SSL_CERT_FILE"
        if isinstance(c, ssl.SSLError):
            return f"TLS error: {c}"
        if isinstance(c, socket.gaierror):
            return f"host name not resolved ({c.strerror or c})"
        if isinstance(c, ConnectionRefusedError):
            return f"connection refused ({c.strerror or c})"
        if isinstance(c, httpx2.ProxyError):
            return f"proxy error: {c}"
        if isinstance(c, (httpx2.ConnectTimeout, TimeoutError)):
            return "connection timed out"
    root = causes[-1]
    return f"{type(root).__name__}: {root}"


def _causes(exc: BaseException) -> list[BaseException]:
    """exc and what it was raised from, outermost first (groups followed into their first member)."""
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        nested = getattr(exc, "exceptions", None)
        exc = exc.__cause__ or exc.__context__ or (nested[0] if nested else None)
    return out


def _error_message(text: str) -> tuple[str, str | None]:
    try:
        err = json.loads(text).get("error") or {}
        if isinstance(err, dict):
            return str(err.get("message") or text)[:300], err.get("code") or err.get("type")
        return str(err)[:300], None
    except (ValueError, AttributeError):
        return text[:300], None
