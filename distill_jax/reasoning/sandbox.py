"""Run PoT programs (teacher or student output, so hostile by default) in a pool of locked-down workers.

A program sets `ans` (or defines `solution()` returning it), optionally inside a markdown code fence and
optionally followed by `print(ans)`. Each program runs in one of a few persistent worker processes
(_sandbox_worker.py: AST screen, restricted builtins, per-program module copies, rlimits, no privileges) on
the shared worker pool (worker_pool.py), which owns the wall clock: a worker that passes the deadline, crashes
or blows its memory is killed and replaced, the program is reported with a reason, and the pool carries on.

Fails closed: a worker started as root drops to `nobody`; where it cannot (a container without CAP_SETUID) it
refuses to run programs (SandboxError) unless the user opts in with `sandbox.allow_root: true` in the config
(SandboxConfig, applied by `configure_sandbox`) or DISTILL_JAX_SANDBOX_ALLOW_ROOT=1, and then every pool warns
(SandboxRootWarning) what is lost. `isolation_report()` says what is in force on this machine.

Allowed imports: math, cmath, fractions, decimal, datetime, statistics, itertools, functools (without
update_wrapper/wraps/total_ordering), collections, operator (without attrgetter/methodcaller), re, heapq,
bisect; `re` is in because programs parse numbers out of strings, and a catastrophic regex is just a timeout.
Not allowed: other imports (numpy, sympy, random, os, ...), classes, async, attribute assignment,
`str.format` on anything but a literal, and names or attributes starting with `_` (except `__name__`).
Limits per worker: 256 MiB address space, CPU time a little over the timeout, no fork, no new file.

No program can change what the next one sees (fresh globals, builtins and module copies; attribute assignment
is rejected; the decimal context is reset; garbage is collected before the reply), so workers are reused;
they are still recycled after `max_programs_per_worker` programs and after any MemoryError.

ProgramResult.error kinds: "timeout", "memory", "syntax error: ...", "forbidden import 'os'",
"forbidden name 'open'", "forbidden attribute '__class__'", "forbidden attribute assignment '.x'",
"forbidden syntax: class", "forbidden format field '{0.x}'", "runtime error: ZeroDivisionError",
"no ans", "non-numeric ans: str", "program too long (N characters)", "worker crashed (SIGSEGV)".
"""
from __future__ import annotations

import json
import os
import pwd
import re
import signal
import sys
import textwrap
import warnings
from dataclasses import dataclass

from distill_jax.reasoning import _sandbox_worker
from distill_jax.reasoning.answers import normalize_number
from distill_jax.reasoning.worker_pool import Lost, ProgressFn, SharedPool, WorkerPool, WorkerStartError

MAX_CODE_CHARS = 50_000
ALLOW_ROOT_ENV = "DISTILL_JAX_SANDBOX_ALLOW_ROOT"
_WORKER_SCRIPT = _sandbox_worker.__file__  # read when a pool is made (the tests start a wrapper instead)
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_SIGNAL_REASONS = {signal.SIGXCPU: "timeout", signal.SIGXFSZ: "forbidden file write"}


@dataclass(frozen=True)
class ProgramResult:
    answer: str | None  # canonical number string (answers.normalize_number)
    value: str | None  # repr of the program's raw `ans`, cut to 200 characters
    error: str | None  # None when the program produced a numeric answer
    stdout: str  # the program's output, capped at 10,000 characters


def extract_code(text: str) -> str:
    """The program in `text`: the first ```python fence (else the first fence, else all of it), dedented."""
    blocks = _FENCE.findall(text)
    if blocks:
        python = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
        text = python[0] if python else blocks[0][1]
    return textwrap.dedent(text).strip("\n") + "\n"


def _result_from_reply(reply: dict | Lost) -> ProgramResult:
    """Turn a worker's JSON reply into a result; every field is re-typed since the worker is not trusted."""
    if isinstance(reply, Lost):
        return ProgramResult(None, None, "timeout" if reply.timeout else _death_reason(reply.returncode), "")
    stdout = str(reply.get("stdout", ""))
    value = None if reply.get("value") is None else str(reply["value"])
    if reply.get("error") is not None:
        return ProgramResult(None, value, str(reply["error"]), stdout)
    answer = normalize_number(str(reply.get("text", "")))
    if answer is None:
        kind = str(reply.get("type"))
        detail = kind if kind == "str" else f"{kind} out of range"  # numbers past answers.MAX_INT_DIGITS
        return ProgramResult(None, value, f"non-numeric ans: {detail}", stdout)
    return ProgramResult(answer, value, None, stdout)


def _death_reason(returncode: int | None) -> str:
    if returncode == _sandbox_worker.MEMORY_EXIT_CODE:
        return "memory"
    if returncode is not None and returncode < 0:
        sig = signal.Signals(-returncode)
        return _SIGNAL_REASONS.get(sig, f"worker crashed ({sig.name})")
    return f"worker crashed (exit {returncode})"


class SandboxError(WorkerStartError):
    """The pool itself cannot work (a worker does not start, or refuses to run programs as root); never raised
    for anything a program does."""


class SandboxRootWarning(UserWarning):
    """Programs run as root because the user allowed it (sandbox.allow_root)."""


ROOT_LOSSES = (
    "RLIMIT_NPROC does not bind root, so a program that gets past the screen can fork and thread",
    "a root process with CAP_SYS_RESOURCE can raise every other limit back (memory, CPU, files, sockets)",
    "file permissions protect nothing from root",
)


@dataclass(frozen=True)
class SandboxConfig:
    """The `sandbox` section of the configs that run programs (teach, eval, distill, fdd)."""

    # Run programs as root where the worker cannot drop to `nobody` (a container without CAP_SETUID);
    # None: the environment variable DISTILL_JAX_SANDBOX_ALLOW_ROOT decides, and without it the sandbox refuses.
    allow_root: bool | None = None


_configured_allow_root: bool | None = None


def configure_sandbox(cfg: SandboxConfig) -> None:
    """Apply a config's sandbox section to the programs this process runs from now on; None leaves the
    setting as it is (so the configs a pipeline builds for its stages do not undo the user's)."""
    global _configured_allow_root
    if cfg.allow_root is not None:
        _configured_allow_root = bool(cfg.allow_root)


def allow_root_setting() -> bool:
    """Whether programs may run as root: the configured value, else DISTILL_JAX_SANDBOX_ALLOW_ROOT, else no."""
    if _configured_allow_root is not None:
        return _configured_allow_root
    value = os.environ.get(ALLOW_ROOT_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise SandboxError(f"{ALLOW_ROOT_ENV}={value!r}: expected 1/true/yes or 0/false/no")


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


class SandboxPool:
    """Persistent sandbox workers. Use as a context manager or call close(); thread-safe, fork-aware.

    allow_root=None takes allow_root_setting(); without it a worker that cannot leave root refuses to start."""

    def __init__(self, workers: int | None = None, memory_mb: int = 256, max_programs_per_worker: int = 500,
                 allow_root: bool | None = None):
        self.allow_root = allow_root_setting() if allow_root is None else bool(allow_root)
        self.info: dict = {}  # what the last started worker reported about its confinement
        self._warned = False
        # -P/-S/-s/-B and an empty environment: nothing but the standard library, no .pyc writes.
        flags = ["-P"] if sys.version_info >= (3, 11) else []
        settings = json.dumps({"memory_mb": memory_mb, "allow_root": self.allow_root})
        self._pool = WorkerPool(
            [sys.executable, *flags, "-S", "-s", "-B", _WORKER_SCRIPT, settings],
            max(1, workers or os.cpu_count() or 1), env={"PYTHONHASHSEED": "0"},
            max_items=max_programs_per_worker, name="sandbox", error=SandboxError, on_ready=self._on_ready,
        )
        self.size = self._pool.size

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        return self._pool.worker_pids()

    def close(self) -> None:
        self._pool.close()

    def _on_ready(self, info: dict) -> None:
        self.info = info
        if info.get("uid") == 0 and not self._warned:
            self._warned = True
            why = info.get("root_reason") or "started as root"
            warnings.warn(SandboxRootWarning(
                f"PoT programs run as root ({why}), as sandbox.allow_root / {ALLOW_ROOT_ENV} allows. Lost: "
                + "; ".join(ROOT_LOSSES) + ". Only the AST screen and the restricted builtins remain."
            ))

    def run(self, codes: list[str], timeout_s: float = 2.0, progress: ProgressFn | None = None
            ) -> list[ProgramResult]:
        """Results in input order. timeout_s is wall-clock per program, from the moment a worker gets it."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        results: list[ProgramResult | None] = [None] * len(codes)
        requests, where, refused = [], [], 0
        for index, text in enumerate(codes):
            code = extract_code(text)
            if len(code) > MAX_CODE_CHARS:
                results[index] = ProgramResult(None, None, f"program too long ({len(code)} characters)", "")
                refused += 1
                if progress is not None:
                    progress(refused, len(codes))
            else:
                requests.append({"code": code, "timeout_s": timeout_s})
                where.append(index)
        step = None if progress is None else (lambda done, _total: progress(refused + done, len(codes)))
        for index, reply in zip(where, self._pool.run(requests, timeout_s, step)):
            results[index] = _result_from_reply(reply)
        return results  # type: ignore[return-value]


_shared = SharedPool(lambda size, allow_root: SandboxPool(size, allow_root=allow_root),
                     lambda: os.cpu_count() or 1)


def run_programs(codes: list[str], timeout_s: float = 2.0, workers: int | None = None,
                 progress: ProgressFn | None = None) -> list[ProgramResult]:
    """Run many programs on the shared pool (workers=None: one per CPU); results keep the input order."""
    return _shared.get(workers, key=allow_root_setting()).run(list(codes), timeout_s, progress)


def run_program(code: str, timeout_s: float = 2.0) -> ProgramResult:
    """Run one program on the shared pool."""
    return run_programs([code], timeout_s)[0]


def isolation_report(allow_root: bool | None = None) -> dict:
    """What confines a PoT program here, as a freshly started worker reports it (printed by `distill-jax env`).

    Starts one worker, runs `ans = 1` and stops it. Where the sandbox refuses to start (root without the
    opt-in) `runs_programs` is False and `error` says why."""
    report: dict = {"parent_user": _user(os.geteuid())}
    try:
        allowed = allow_root_setting() if allow_root is None else bool(allow_root)
        report["allow_root"] = allowed
        with SandboxPool(workers=1, allow_root=allowed) as pool, warnings.catch_warnings():
            warnings.simplefilter("ignore", SandboxRootWarning)  # the report says it
            result = pool.run(["ans = 1"], timeout_s=10.0)[0]
            info = pool.info
    except SandboxError as exc:
        return {**report, "runs_programs": False, "error": str(exc)}
    uid, gid = int(info.get("uid", -1)), int(info.get("gid", -1))
    rlimits = {str(k): int(v) for k, v in dict(info.get("rlimits", {})).items()}
    fds_blocked = info.get("new_fds_blocked") is True
    network = ("no new socket: opening any file descriptor fails (RLIMIT_NOFILE=0, probed); no network namespace"
               if fds_blocked else "not isolated: the worker can open file descriptors")
    return {
        **report,
        "runs_programs": result.answer == "1",
        "error": result.error,
        "user": _user(uid),
        "uid": uid,
        "gid": gid,
        "rlimits": {**rlimits, "RLIMIT_CPU": "per program: the timeout + 2 s of CPU"},
        "network": network + ("; root can raise the limit back" if uid == 0 and fds_blocked else ""),
        "lost": list(ROOT_LOSSES) if uid == 0 else [],
    }
