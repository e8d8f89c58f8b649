"""What the teacher is asked and what it answered: `ChatRequest` (with the cache keys it hashes to) and
`ChatResult`.

A request's key is the sha256 of its canonical JSON (model, messages, sampling params, sample index), so the
cache key changes exactly when what is sent changes (the prompt template's version is inside the messages);
the content key leaves the sample index out: it names what one `n`-request can serve.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


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
    """The JSON body of a chat completion (also one Batch API line's `body`)."""
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
    error: str | None = None  # "<kind>: <message>", kind in protocol.ERROR_KINDS
    finish_reason: str | None = None
    request: ChatRequest | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_kind(self) -> str | None:
        return self.error.split(":", 1)[0] if self.error else None
