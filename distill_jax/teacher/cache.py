"""Durable teacher-response cache: SQLite in WAL mode, one row per request key, committed as responses arrive.

Paid generations must survive crashes (a kill -9 loses at most the calls in flight), so every `put` is its
own transaction; the async client commits through `TickCommitter`, which puts the replies that arrive in the
same event-loop tick into one transaction before reporting any of them. `synchronous=NORMAL` in WAL mode
keeps committed rows across a process crash; only an OS crash or power loss could drop the last few, and it
saves an fsync per commit. The stored request is the canonical request (model, messages, sampling params,
sample index): never headers, so never the API key.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from distill_jax.fileio import ClosesOnExit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT,
    usage TEXT NOT NULL,
    finish_reason TEXT,
    created_at REAL NOT NULL
)
"""
_COLUMNS = "key, model, request, response, usage, finish_reason, created_at"
_SQL_VARS = 500  # below SQLite's host-parameter limit


class ResponseCache(ClosesOnExit):
    """`get`/`get_many` return {"key", "model", "request", "text", "usage", "finish_reason", "created_at"}."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # The asyncio client uses the cache from its event-loop thread only; the flag lets a caller
            # create the cache in one thread and run the loop in another.
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise sqlite3.DatabaseError(f"teacher cache {self.path}: {e}") from e

    @staticmethod
    def _row(row: tuple) -> dict[str, Any]:
        key, model, request, response, usage, finish_reason, created_at = row
        return {"key": key, "model": model, "request": json.loads(request), "text": response,
                "usage": json.loads(usage), "finish_reason": finish_reason, "created_at": created_at}

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM responses WHERE key = ?", (key,)).fetchone()
        return self._row(row) if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), _SQL_VARS):
            chunk = keys[start:start + _SQL_VARS]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(f"SELECT {_COLUMNS} FROM responses WHERE key IN ({marks})", chunk):
                out[row[0]] = self._row(row)
        return out

    def put(self, key: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        """`request`: the canonical request (must hold "model"); `response`: {"text", "usage", "finish_reason"}."""
        self.put_many([(key, request, response)])

    def put_many(self, rows: Iterable[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
        """Several `put`s in one transaction: all of them are committed, or none."""
        now = time.time()
        values = [(key, request["model"], json.dumps(request, ensure_ascii=False, sort_keys=True),
                   response.get("text"), json.dumps(response.get("usage") or {}), response.get("finish_reason"), now)
                  for key, request, response in rows]
        self._db.execute("BEGIN")  # the connection is in autocommit mode: one explicit transaction
        try:
            self._db.executemany(f"INSERT OR REPLACE INTO responses ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                 values)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM responses")}

    def journal_mode(self) -> str:
        return self._db.execute("PRAGMA journal_mode").fetchone()[0]

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def __contains__(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def close(self) -> None:
        self._db.close()


class TickCommitter:
    """Commits the responses that arrive in one event-loop tick in one transaction, before any of them is
    reported: `await committer.put(...)` returns once the row is committed. Under load this halves the cost
    per response (one COMMIT per tick instead of per row) and keeps the promise that matters: nothing is
    delivered (or written elsewhere by the caller) before it is in the cache, and a crash loses at most the
    calls in flight plus the replies of the current tick. Use from one event loop only."""

    def __init__(self, cache: ResponseCache):
        self.cache = cache
        self._rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self._waiters: list[asyncio.Future] = []

    async def put_many(self, rows: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
        """(key, request, response) rows as for `ResponseCache.put`; returns once they are committed."""
        loop = asyncio.get_running_loop()
        if not self._rows:
            loop.call_soon(self._flush)  # runs after every callback that is ready in this tick
        waiter = loop.create_future()
        self._rows.extend(rows)
        self._waiters.append(waiter)
        await waiter

    def _flush(self) -> None:
        rows, waiters = self._rows, self._waiters
        self._rows, self._waiters = [], []
        try:
            self.cache.put_many(rows)
        except Exception as e:  # e.g. disk full: every writer of this tick sees it
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(e)
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
