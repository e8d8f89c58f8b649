"""A real OpenAI-compatible HTTP server on loopback for tests, benchmarks and trying a config offline (a test
tool, not a teacher).

It answers `POST /v1/chat/completions` (with `n`), `GET /v1/models`, the Batch API endpoints
(`POST /v1/files`, `POST /v1/batches`, `GET /v1/batches[/{id}]`, `GET /v1/files/{id}/content`) and
`GET /_stats`, with configurable latency and faults on demand (a queue, optionally matched on the last user
message): 429 with Retry-After and/or x-ratelimit-* headers, 429 insufficient_quota, 500, 503, 401 (echoing
the key, as real servers partly do, so tests can check scrubbing), 400, context-length errors, timeouts,
dropped connections, malformed JSON, truncated bodies, empty choices, fewer choices than `n`.

Protocol variety a real endpoint shows: TLS (`ssl=` an `ssl.SSLContext`, e.g. from a `trustme` test CA),
IPv6 (`host="::1"`), bodies sent with `Transfer-Encoding: chunked`, a server that ignores `n`
(`max_choices=1`) or rejects it (`supports_n=False`), and Azure OpenAI's shape (`azure=True`:
`/openai/deployments/{deployment}/chat/completions?api-version=...` with an `api-key` header).

It counts requests per cache-relevant content (model, messages, params; `n` excluded) so tests can prove
nothing was paid twice, and records every request line and the auth headers seen.

    python -m distill_jax.testing.fake_server --port 0 --latency-ms 100    # prints the port, serves until killed
    curl http://127.0.0.1:PORT/_stats                                        # {"received", "served", ...}
"""
from __future__ import annotations

import argparse
import asyncio
import email.parser
import email.policy
import importlib
import json
import signal
import ssl
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from distill_jax.teacher.request import ChatRequest

FAULT_KINDS = ("429", "quota", "500", "503", "401", "400", "context_length", "timeout", "drop", "malformed",
               "truncated", "empty", "few_choices")
ReplyFn = Callable[[dict, int], str]  # (request body, choice index) -> reply text


def default_reply(body: dict, index: int) -> str:
    """Deterministic: derived from the last user message and the choice index."""
    users = [m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "user"]
    last = str(users[-1]) if users else ""
    return f"Answer to: {last[-200:]} [choice {index}]"


def content_key(body: dict) -> str:
    """The client's `ChatRequest.content_key` of a request body: what the cache keys on, minus the sample."""
    params = {k: v for k, v in body.items() if k not in ("model", "messages", "n")}
    return ChatRequest.make(body.get("messages") or [], **params).content_key(str(body.get("model")))


@dataclass
class Fault:
    kind: str  # one of FAULT_KINDS
    retry_after: str | None = None  # Retry-After header value for 429/503 (seconds or an HTTP date)
    match: str | None = None  # only requests whose last user message contains this
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)  # extra reply headers (x-ratelimit-*)


@dataclass
class Reply:
    status: int
    doc: Any = None  # JSON document, or `raw` bytes
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None  # "drop": close without a reply; "hang": sleep then drop; "truncate": half a body


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; the auth headers are in `FakeServer.auth_headers` only


class FakeServer:
    """Runs on its own asyncio loop in a daemon thread: one thread serves every connection, so latency is a
    non-blocking sleep and the server is not the bottleneck of the client benchmark."""

    def __init__(self, port: int = 0, latency_s: float = 0.0, reply: ReplyFn | None = None, supports_n: bool = True,
                 max_choices: int | None = None, hang_s: float = 5.0, batch_line_s: float = 0.0,
                 api_key: str | None = None, chunked: bool = False, host: str = "127.0.0.1",
                 ssl: ssl.SSLContext | None = None, azure: bool = False,
                 models: tuple[str, ...] = ("fake-model",)):
        self.host, self._port, self.chunked, self.ssl, self.azure = host, port, chunked, ssl, azure
        self.latency_s, self.reply = latency_s, reply or default_reply
        self.supports_n, self.max_choices, self.hang_s = supports_n, max_choices, hang_s
        self.batch_line_s, self.api_key, self.models = batch_line_s, api_key, models
        self.received: Counter[str] = Counter()  # content key -> chat requests received (any outcome)
        self.served: Counter[str] = Counter()  # content key -> choices returned successfully (paid samples)
        self.auth_headers: list[str] = []
        self.seen: list[Seen] = []
        self.connections = 0
        self.batches_created = 0
        self.files_uploaded = 0
        self._faults: list[Fault] = []
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, dict] = {}
        self._lock = threading.Lock()  # the loop thread writes, test threads read
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()  # open connections and running batches

    @property
    def port(self) -> int:
        return self._port

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl else 'http'}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL a client is given (with azure=True: the Azure endpoint, without /openai)."""
        return self.origin if self.azure else f"{self.origin}/v1"

    def start(self) -> "FakeServer":
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-openai")
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, self.host, self._port, ssl=self.ssl), self._loop).result()
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_fault(self, kind: str, retry_after: str | float | None = None, match: str | None = None,
                  times: int = 1, headers: dict[str, str] | None = None) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._faults.append(Fault(kind, None if retry_after is None else str(retry_after), match, times,
                                      dict(headers or {})))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"received": dict(self.received), "served": dict(self.served), "batches_created":
                    self.batches_created, "files_uploaded": self.files_uploaded,
                    "requests": sum(self.received.values()), "auth_headers": len(self.auth_headers),
                    "connections": self.connections}

    # --- HTTP/1.1 on asyncio streams ------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        with self._lock:
            self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get("content-length") or 0))
                parts = urlsplit(target)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                with self._lock:
                    self.seen.append(Seen(method, parts.path, query, {k: v for k, v in headers.items()
                                                                      if k not in ("authorization", "api-key")}))
                try:
                    reply = await self._handle(method, parts.path, query, headers, body)
                except Exception as e:  # a broken reply function: say so instead of hanging up
                    reply = Reply(500, _error(f"fake server error: {e!r}", "server_error"))
                if reply.action == "hang":
                    await asyncio.sleep(self.hang_s)
                if reply.action in ("drop", "hang"):
                    break
                data = reply.raw if reply.raw is not None else json.dumps(reply.doc).encode("utf-8")
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                if self.chunked and reply.action != "truncate":  # as proxies in front of real endpoints do
                    half = len(data) // 2
                    framing = "Transfer-Encoding: chunked"
                    chunks = [c for c in (data[:half], data[half:]) if c]
                    data = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
                else:
                    framing = f"Content-Length: {len(data)}"
                    data = data[: len(data) // 2] if reply.action == "truncate" else data
                writer.write((f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}\r\n"
                              f"Content-Type: application/json\r\n{framing}\r\n{extra}\r\n").encode("latin-1") + data)
                await writer.drain()
                if reply.action == "truncate" or headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # the client went away or sent garbage: end this connection
        except asyncio.CancelledError:
            pass  # shutting down
        finally:
            self._tasks.discard(task)
            writer.close()

    def _route(self, path: str, query: dict[str, str]) -> tuple[str | None, Reply | None]:
        """The OpenAI path (/v1/...) a request means, or the error reply for a path this server does not serve.
        Azure: /openai/deployments/{deployment}/chat/completions and /openai/{files,batches,models}, each with
        an api-version query; the deployment stands in for the model."""
        if path == "/_stats":
            return path, None
        if not self.azure:
            return (path, None) if path.startswith("/v1/") else (None, Reply(404, _error(f"no route {path}",
                                                                                       "not_found")))
        if not query.get("api-version"):
            return None, Reply(404, _error("Resource not found (no api-version)", "404"))
        if path.startswith("/openai/deployments/"):
            rest = path[len("/openai/deployments/"):].split("/", 1)
            return ("/v1/" + rest[1], None) if len(rest) == 2 else (None, Reply(404, _error("no route", "404")))
        if path.startswith("/openai/"):
            return "/v1/" + path[len("/openai/"):], None
        return None, Reply(404, _error(f"no route {path}", "404"))

    async def _handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                      raw: bytes) -> Reply:
        route, refusal = self._route(path, query)
        if refusal is not None:
            return refusal
        if route == "/_stats":
            return Reply(200, self.stats())
        auth = headers.get("api-key") if self.azure else headers.get("authorization")
        if auth:
            with self._lock:
                self.auth_headers.append(auth)
        expected = self.api_key if self.azure else f"Bearer {self.api_key}"
        if self.api_key is not None and auth != expected:
            return Reply(401, _error(f"Incorrect API key provided: {auth}", "invalid_request_error"))
        if method == "GET":
            return self._get(route)
        path = route
        if path == "/v1/files":
            fields = _parse_multipart(headers.get("content-type", ""), raw)
            file_id = f"file-{uuid.uuid4().hex[:12]}"
            with self._lock:
                self._files[file_id] = fields.get("file", b"")
                self.files_uploaded += 1
            return Reply(200, {"id": file_id, "object": "file", "bytes": len(fields.get("file", b"")),
                               "purpose": fields.get("purpose", b"").decode()})
        try:
            body = json.loads(raw)
        except ValueError:
            return Reply(400, _error("request body is not JSON", "invalid_request_error"))
        if path == "/v1/batches":
            return self._create_batch(body)
        if path != "/v1/chat/completions":
            return Reply(404, _error(f"no route {path}", "not_found"))
        key = content_key(body)
        with self._lock:
            self.received[key] += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        fault = self._take_fault(body)
        return self.complete(body, key=key) if fault is None else self._fault(fault, body, auth, key)

    def _get(self, path: str) -> Reply:
        if path == "/v1/models":
            return Reply(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                            "owned_by": "fake"} for m in self.models]})
        if path == "/v1/batches":
            with self._lock:
                data = json.loads(json.dumps(list(reversed(self._batches.values()))))
            return Reply(200, {"object": "list", "data": data, "has_more": False,
                               "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})
        if path.startswith("/v1/batches/"):
            with self._lock:
                batch = self._batches.get(path.rsplit("/", 1)[1])
                doc = json.loads(json.dumps(batch)) if batch else None
            return Reply(200, doc) if doc else Reply(404, _error("no such batch", "not_found"))
        if path.startswith("/v1/files/") and path.endswith("/content"):
            data = self._files.get(path.split("/")[3])
            return Reply(200, raw=data) if data is not None else Reply(404, _error("no such file", "not_found"))
        return Reply(404, _error(f"no route {path}", "not_found"))

    def _take_fault(self, body: dict) -> Fault | None:
        users = [str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "user"]
        last = users[-1] if users else ""
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.match is None or fault.match in last:
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._faults[i]
                    return fault
        return None

    def _fault(self, fault: Fault, body: dict, auth: str | None, key: str) -> Reply:
        kind = fault.kind
        retry = {**({"Retry-After": fault.retry_after} if fault.retry_after is not None else {}), **fault.headers}
        if kind == "429":
            return Reply(429, _error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
                         headers=retry)
        if kind == "quota":  # OpenAI answers an exhausted quota with a 429 that no retry can fix
            return Reply(429, _error("You exceeded your current quota, please check your plan and billing details.",
                                     "insufficient_quota", "insufficient_quota"))
        if kind in ("500", "503"):
            return Reply(int(kind), _error("The server had an error", "server_error"), headers=retry)
        if kind == "401":
            return Reply(401, _error(f"Incorrect API key provided: {auth}", "invalid_request_error",
                                     "invalid_api_key"))
        if kind == "400":
            return Reply(400, _error("Invalid value for 'temperature'", "invalid_request_error"))
        if kind == "context_length":
            return Reply(400, _error("This model's maximum context length is 128000 tokens. However, your messages "
                                     "resulted in 130000 tokens.", "invalid_request_error", "context_length_exceeded"))
        if kind in ("timeout", "drop"):
            return Reply(0, action="hang" if kind == "timeout" else "drop")
        if kind == "malformed":
            return Reply(200, raw=b'{"id": "chatcmpl-x", "choices": [{"index": 0, "message": ')
        if kind == "truncated":
            reply = self.complete(body, key=key)
            with self._lock:
                self.served[key] -= len(reply.doc["choices"])  # never delivered whole
            return Reply(200, reply.doc, action="truncate")
        if kind == "empty":
            return Reply(200, {"id": "chatcmpl-x", "object": "chat.completion", "choices": [],
                               "usage": {"prompt_tokens": 0, "completion_tokens": 0}})
        return self.complete(body, limit=1, key=key)  # few_choices

    def complete(self, body: dict, limit: int | None = None, key: str | None = None) -> Reply:
        """A chat completion for `body` (no faults); `key`: its content key when already computed."""
        n = int(body.get("n") or 1)
        if n > 1 and not self.supports_n:
            return Reply(400, _error("'n' is not supported by this server", "invalid_request_error"))
        count = min(n, self.max_choices or n, limit or n)
        texts = [self.reply(body, i) for i in range(count)]
        prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
        completion = sum(len(t) // 4 + 1 for t in texts)
        key = key or content_key(body)
        with self._lock:
            self.served[key] += count
        return Reply(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                        for i, t in enumerate(texts)],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        })

    # --- Batch API -------------------------------------------------------------------------------------
    def _create_batch(self, req: dict) -> Reply:
        data = self._files.get(req.get("input_file_id", ""))
        if data is None:
            return Reply(404, _error(f"no such file {req.get('input_file_id')!r}", "invalid_request_error"))
        batch_id = f"batch_{uuid.uuid4().hex[:12]}"
        lines = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
        batch = {"id": batch_id, "object": "batch", "endpoint": req.get("endpoint"), "status": "in_progress",
                 "input_file_id": req["input_file_id"], "completion_window": req.get("completion_window"),
                 "created_at": int(time.time()), "output_file_id": None, "error_file_id": None,
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        with self._lock:
            self.batches_created += 1
            self._batches[batch_id] = batch
        task = asyncio.get_running_loop().create_task(self._process_batch(batch, lines))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Reply(200, json.loads(json.dumps(batch)))

    async def _process_batch(self, batch: dict, lines: list[dict]) -> None:
        out, errors = [], []
        for line in lines:
            await asyncio.sleep(self.batch_line_s)
            body = line.get("body") or {}
            fault = self._take_fault(body)
            reply = self.complete(body) if fault is None else Reply(
                400, _error(f"injected batch fault {fault.kind}", "invalid_request_error"))
            row = {"id": f"batch_req_{uuid.uuid4().hex[:12]}", "custom_id": line.get("custom_id"),
                   "response": {"status_code": reply.status, "request_id": uuid.uuid4().hex, "body": reply.doc},
                   "error": None}
            (out if reply.status == 200 else errors).append(row)
            with self._lock:
                batch["request_counts"]["completed" if reply.status == 200 else "failed"] += 1
        with self._lock:
            for name, rows in (("output_file_id", out), ("error_file_id", errors)):
                if rows:
                    file_id = f"file-{uuid.uuid4().hex[:12]}"
                    self._files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
                    batch[name] = file_id
            batch["status"] = "completed"


def _error(message: str, kind: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """form-data fields by name (the standard library's MIME parser)."""
    if not content_type.startswith("multipart/"):
        return {}
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while (size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)) > 0:
        out += await reader.readexactly(size)
        await reader.readexactly(2)
    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
        pass
    return bytes(out)


def _load_reply(spec: str) -> ReplyFn:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "reply")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill_jax.testing.fake_server", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--no-n", action="store_true", help="reject n > 1 with HTTP 400")
    p.add_argument("--max-choices", type=int, default=None, help="return at most this many choices")
    p.add_argument("--api-key", default=None, help="require this bearer key (401 otherwise)")
    p.add_argument("--reply", default=None, help="module:function (body, index) -> text")
    p.add_argument("--fault", action="append", default=[], metavar="KIND[:RETRY_AFTER]",
                   help=f"queue a fault for the next chat request (repeatable); kinds: {', '.join(FAULT_KINDS)}")
    p.add_argument("--batch-line-ms", type=float, default=0.0, help="batch processing time per line")
    p.add_argument("--chunked", action="store_true", help="send bodies with Transfer-Encoding: chunked")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (::1 for IPv6)")
    p.add_argument("--azure", action="store_true", help="Azure OpenAI's paths, api-version query and api-key header")
    p.add_argument("--certfile", default=None, help="serve HTTPS with this PEM certificate chain (and --keyfile)")
    p.add_argument("--keyfile", default=None)
    args = p.parse_args(argv)
    context = None
    if args.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
    server = FakeServer(args.port, args.latency_ms / 1000, _load_reply(args.reply) if args.reply else None,
                        supports_n=not args.no_n, max_choices=args.max_choices, api_key=args.api_key,
                        batch_line_s=args.batch_line_ms / 1000, chunked=args.chunked, host=args.host,
                        ssl=context, azure=args.azure)
    for spec in args.fault:
        kind, _, retry_after = spec.partition(":")
        server.add_fault(kind, retry_after or None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(server.port, flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
