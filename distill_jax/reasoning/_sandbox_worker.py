"""The sandbox worker: runs untrusted PoT programs one after another for the pool in sandbox.py.

The pool starts this file as a script (`python -P -S -s -B _sandbox_worker.py '<settings json>'`) with an empty
environment, so it imports nothing but the standard library. The tests import it for `screen`.

Protocol: one JSON request per line on the pipe that was fd 0 ({"code": str, "timeout_s": float}), one JSON
reply per line on the pipe that was fd 1. The first line written is {"ready": true, <confinement>} (ids, rlimits,
whether a new fd can be opened) or {"fatal": "..."}.
JSON rather than pickle because the parent must never unpickle what a hostile program may have forged.

Defence in depth; each layer assumes the ones before it can be bypassed:
1. `screen`: an AST check before anything runs: imports only from ALLOWED_MODULES; no name or attribute that
   starts with `_` (the `().__class__.__bases__[0].__subclasses__()` family, `__builtins__`, `__globals__`),
   no frame/code/generator internals (`gi_frame`, `f_back`, `tb_frame`, `co_code`, `mro`), no attribute
   assignment (so shared classes such as `fractions.Fraction` cannot be patched for the next program), no
   `class`, `async` or `str.format` on anything but a literal whose fields are plain names (`'{0.__class__}'`
   reaches attributes without an AST node), no forbidden builtin (`open`, `eval`, `getattr`, `exit`, ...).
2. Restricted builtins and per-program copies of the allowed modules: only public, non-module attributes
   (`fractions.sys` would hand out sys); `operator.attrgetter`/`methodcaller` are left out (attribute access by
   string). Every program gets fresh globals, fresh builtins and fresh module copies; the decimal context is
   reset. Nothing a program can reach survives it, so workers are reused (and still recycled after N programs).
3. The process: after setup it drops to `nobody` when started as root (and refuses to run programs, unless the
   user set sandbox.allow_root, where that fails: a root worker escapes RLIMIT_NPROC), and sets rlimits: RLIMIT_AS (memory),
   RLIMIT_CPU (per program), RLIMIT_NPROC=0 (no fork), RLIMIT_NOFILE=0 (no new file or socket), RLIMIT_FSIZE=0
   (no file growth), RLIMIT_CORE=0. fds 0-2 point at /dev/null; program output goes to a capped buffer.
4. The parent (sandbox.py) kills the worker at the wall-clock deadline and starts a fresh one.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and sys.path and not getattr(sys.flags, "safe_path", False):
    # Run as a script on Python 3.10 (no -P): the script's directory must not shadow stdlib modules.
    del sys.path[0]

import ast
import decimal
import fractions
import gc
import json
import math
import os
import resource
import string
import types
import warnings

ALLOWED_MODULES = (
    "math", "cmath", "fractions", "decimal", "datetime", "statistics", "itertools", "functools",
    "collections", "operator", "re", "heapq", "bisect",
)
# C code of allowed modules imports these lazily through the running program's __import__ (datetime's
# strptime). Programs cannot ask for them: the screen only lets import statements name ALLOWED_MODULES.
_INTERNAL_IMPORTS = frozenset({"_strptime"})
# Public callables that get or set attributes by string (undoing the AST screen, or patching a shared class
# such as collections.Counter for the next program), and a C capsule.
_OMITTED_MODULE_ATTRS = {
    "operator": {"attrgetter", "methodcaller"},
    "functools": {"update_wrapper", "wraps", "total_ordering"},
    "datetime": {"datetime_CAPI"},
}

# Builtins a program may not use; rejected by name (unless the program binds the name itself, e.g. a variable
# called `input`), and absent from the builtins a program runs with anyway.
FORBIDDEN_NAMES = frozenset({
    "open", "eval", "exec", "compile", "globals", "locals", "vars", "dir", "getattr", "setattr", "delattr",
    "hasattr", "breakpoint", "input", "help", "exit", "quit", "memoryview", "type", "object", "super",
    "classmethod", "staticmethod", "property", "copyright", "credits", "license", "SystemExit",
    "KeyboardInterrupt", "BaseException", "GeneratorExit",
})
_ALLOWED_DUNDER_NAMES = frozenset({"__name__"})  # `if __name__ == "__main__":` is common in teacher programs
_FORBIDDEN_ATTR_PREFIXES = ("_", "co_", "f_", "tb_", "gi_", "cr_", "ag_")
_FORBIDDEN_ATTRS = frozenset({"mro", "format_map", "with_traceback"}).union(*_OMITTED_MODULE_ATTRS.values())

_SAFE_BUILTINS = (
    "abs", "all", "any", "ascii", "bin", "bool", "bytes", "callable", "chr", "complex", "dict", "divmod",
    "enumerate", "filter", "float", "format", "frozenset", "hash", "hex", "int", "isinstance", "issubclass",
    "iter", "len", "list", "map", "max", "min", "next", "oct", "ord", "pow", "print", "range", "repr",
    "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "zip", "True", "False", "None",
    "Ellipsis", "NotImplemented",
    "Exception", "ArithmeticError", "AssertionError", "IndexError", "KeyError", "LookupError",
    "NotImplementedError", "OverflowError", "RecursionError", "RuntimeError", "StopIteration", "TypeError",
    "ValueError", "ZeroDivisionError",
)

STDOUT_LIMIT = 10_000  # characters of program output kept
_VALUE_REPR_LIMIT = 200
_LINE_SHOWN = 80  # characters of a line that does not parse, in its error
_ANSWER_LIMIT = 1000  # characters; a longer `ans` is reported as too long
MEMORY_EXIT_CODE = 3  # the worker ran out of memory outside a program (e.g. while replying)


class Forbidden(Exception):
    """A program used something the sandbox does not allow; the message is the reported error."""


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the program binds anywhere. Scope-blind, which is safe: it only lets a program use its own
    variable called e.g. `input`; the forbidden builtins are missing from its builtins anyway."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
    return names


def _check_format_literal(text: str) -> None:
    """`'{0.__class__}'.format(x)` reads attributes with no AST node: allow only plain positional/named fields."""
    try:
        fields = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise Forbidden(f"forbidden format string: {exc}") from None
    for _, field, spec, _ in fields:
        if field is not None and field and not (field.isdigit() or (field.isidentifier() and field[0] != "_")):
            raise Forbidden(f"forbidden format field '{{{field}}}'")
        if spec and "{" in spec:
            _check_format_literal(spec)


class _Screen(ast.NodeVisitor):
    def __init__(self, bound: set[str]) -> None:
        self.bound = bound

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                raise Forbidden(f"forbidden import '{alias.name}'")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or node.module not in ALLOWED_MODULES:
            raise Forbidden(f"forbidden import '{'.' * node.level}{node.module or ''}'")
        for alias in node.names:
            if alias.name.startswith("_") or alias.name in _FORBIDDEN_ATTRS:
                raise Forbidden(f"forbidden name '{alias.name}'")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id.startswith("__") and node.id not in _ALLOWED_DUNDER_NAMES:
            raise Forbidden(f"forbidden name '{node.id}'")
        if node.id in FORBIDDEN_NAMES and node.id not in self.bound:
            raise Forbidden(f"forbidden name '{node.id}'")

    @staticmethod
    def _check_attr_name(attr: str) -> None:
        if attr.startswith(_FORBIDDEN_ATTR_PREFIXES) or attr in _FORBIDDEN_ATTRS:
            raise Forbidden(f"forbidden attribute '{attr}'")

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        # `case int(__class__=c)` reads attributes through a pattern, with no Attribute node.
        for attr in node.kwd_attrs:
            self._check_attr_name(attr)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        self._check_attr_name(attr)
        if not isinstance(node.ctx, ast.Load):
            raise Forbidden(f"forbidden attribute assignment '.{attr}'")
        if attr == "format":
            if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                raise Forbidden("forbidden attribute 'format' (only on a string literal)")
            _check_format_literal(node.value.value)
        self.generic_visit(node)

    def _reject(self, what: str) -> None:
        raise Forbidden(f"forbidden syntax: {what}")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._reject("class")

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._reject("async")

    visit_Await = visit_AsyncFor = visit_AsyncWith = visit_AsyncFunctionDef


def syntax_error(code: str, exc: SyntaxError) -> str:
    """`syntax error: <why> (line N: '<the line>')`: the line itself, so a truncated program says where."""
    lines = code.splitlines()
    if exc.lineno is None or not 1 <= exc.lineno <= len(lines):
        return f"syntax error: {exc.msg} (line {exc.lineno})"
    return f"syntax error: {exc.msg} (line {exc.lineno}: {lines[exc.lineno - 1].strip()[:_LINE_SHOWN]!r})"


def screen(code: str) -> tuple[ast.Module | None, str | None]:
    """Parse and check a program: (tree, None) when it may run, (None, reason) when not."""
    try:
        tree = ast.parse(code, "<program>")
    except SyntaxError as exc:
        return None, syntax_error(code, exc)
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        return None, f"syntax error: {type(exc).__name__}"
    try:
        bound = _bound_names(tree)
        # Binding a dunder (`def __getattr__`, `import math as __builtins__`, `except E as __builtins__`).
        for name in sorted(bound):
            if name.startswith("__") and name not in _ALLOWED_DUNDER_NAMES:
                raise Forbidden(f"forbidden name '{name}'")
        _Screen(bound).visit(tree)
    except Forbidden as exc:
        return None, str(exc)
    except RecursionError:
        return None, "syntax error: too deeply nested"
    return tree, None


class _CappedWriter:
    """Stands in for sys.stdout: keeps the first STDOUT_LIMIT characters and drops the rest cheaply."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.room = limit
        self.truncated = False

    def write(self, text: str) -> int:
        if len(text) > self.room:
            self.truncated = True
        if self.room > 0:
            kept = text[: self.room]
            self.parts.append(kept)
            self.room -= len(kept)
        return len(text)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.parts) + ("\n...[stdout truncated]" if self.truncated else "")


def describe_value(value: object) -> dict:
    """The reply fields for `ans`: an exact number text that the parent canonicalises, or an error."""
    kind = type(value).__name__
    try:
        shown = repr(value)[:_VALUE_REPR_LIMIT]
    except ValueError:  # an int past sys.get_int_max_str_digits()
        shown = f"<{kind} too large to show>"
    reply = {"value": shown, "type": kind}
    if isinstance(value, bool) or not isinstance(value, (int, float, fractions.Fraction, decimal.Decimal, str)):
        return {**reply, "error": f"non-numeric ans: {kind}"}
    try:
        text = _number_text(value)
    except ValueError:  # an int past sys.get_int_max_str_digits(), a Decimal like 1E+999999
        return {**reply, "error": f"non-numeric ans: {kind} too long"}
    if text is None:
        return {**reply, "error": f"non-numeric ans: {kind} {value}"}  # nan, inf
    if len(text) > _ANSWER_LIMIT:
        return {**reply, "error": f"non-numeric ans: {kind} too long"}
    return {**reply, "text": text}


def _number_text(value: int | float | str | fractions.Fraction | decimal.Decimal) -> str | None:
    """Exact text for the parent's normalize_number (no exponent, `n/d` for fractions); None when not finite."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, fractions.Fraction):  # exact; normalize_number rounds what does not terminate
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = decimal.Decimal(repr(value))
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        if abs(value.adjusted()) > _ANSWER_LIMIT:  # formatting 1E+999999 would take a megabyte
            raise ValueError("too long")
        return format(value, "f")
    return str(value)


def _module_snapshots() -> dict[str, dict[str, object]]:
    """Public, non-module attributes of each allowed module (imported once per worker)."""
    snapshots = {}
    for name in ALLOWED_MODULES:
        module = __import__(name)
        omitted = _OMITTED_MODULE_ATTRS.get(name, set())
        snapshots[name] = {
            key: value for key, value in vars(module).items()
            if not key.startswith("_") and key not in omitted and not isinstance(value, types.ModuleType)
        }
    return snapshots


class Runner:
    """Runs one program at a time in fresh globals, builtins and module copies."""

    def __init__(self, stdout_limit: int = STDOUT_LIMIT) -> None:
        import builtins

        self.snapshots = _module_snapshots()
        self.builtins = {name: getattr(builtins, name) for name in _SAFE_BUILTINS}
        self.stdout_limit = stdout_limit

    def _importer(self):
        copies: dict[str, types.ModuleType] = {}

        def restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
            if not level and name in _INTERNAL_IMPORTS:
                return sys.modules[name]
            if level or name not in self.snapshots:
                raise Forbidden(f"forbidden import '{name}'")
            if name not in copies:
                copies[name] = types.ModuleType(name)
                copies[name].__dict__.update({
                    # decimal.DefaultContext & co. are the only mutable module-level objects: copy them.
                    key: value.copy() if isinstance(value, decimal.Context) else value
                    for key, value in self.snapshots[name].items()
                })
            return copies[name]

        return restricted_import

    def run(self, code: str) -> dict:
        """The reply for one program; "recycle": True asks the parent to replace this worker."""
        tree, problem = screen(code)
        if problem:
            return {"error": problem}
        try:
            compiled = compile(tree, "<program>", "exec", dont_inherit=True)
        except SyntaxError as exc:  # e.g. 'return' outside function is found by the compiler, not the parser
            return {"error": syntax_error(code, exc)}
        except (RecursionError, MemoryError, ValueError) as exc:
            return {"error": f"syntax error: {type(exc).__name__}"}
        program_builtins = dict(self.builtins, __import__=self._importer())
        namespace = {"__builtins__": program_builtins, "__name__": "__main__"}
        out = _CappedWriter(self.stdout_limit)
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = out
        # Decimal's thread context is the one piece of shared state a program can change without assignment.
        decimal.setcontext(decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN, Emin=-999999, Emax=999999,
                                           capitals=1, clamp=0, flags=[],
                                           traps=[decimal.InvalidOperation, decimal.DivisionByZero,
                                                  decimal.Overflow]))
        try:
            exec(compiled, namespace)
            if "ans" in namespace:
                reply = describe_value(namespace["ans"])
            elif callable(namespace.get("solution")):
                reply = describe_value(namespace["solution"]())
            else:
                reply = {"error": "no ans"}
        except MemoryError:
            reply = {"error": "memory", "recycle": True}
        except Forbidden as exc:
            reply = {"error": str(exc)}
        except BaseException as exc:  # noqa: B036 - SystemExit, KeyboardInterrupt, ... are the program's too
            reply = {"error": f"runtime error: {type(exc).__name__}"}
        finally:
            # Finalisers (a suspended generator's `finally:`) run now, on this program's output and clock,
            # not in the middle of the next program; gc.freeze() at start-up keeps this collection small.
            namespace.clear()
            gc.collect()
            sys.stdout, sys.stderr = saved
        reply["stdout"] = out.getvalue()
        return reply


NOBODY = 65534


class RootRefused(Exception):
    """Started as root and cannot leave it, without the user's opt-in: the worker refuses to run programs."""


def _drop_privileges(allow_root: bool) -> str | None:
    """Become `nobody` when started as root: RLIMIT_NPROC does not bind root, and root may raise the other
    limits back. Fails closed: where that is impossible (a container without CAP_SETUID) RootRefused, unless
    the user allowed root; returns why the worker is still root (None when it is not)."""
    if os.getuid() != 0 and os.geteuid() != 0:
        return None
    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        reason = None if 0 not in (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) else "still uid/gid 0"
    except OSError as exc:
        reason = f"cannot drop to nobody: {exc.strerror or exc}"
    if reason is not None and not allow_root:
        raise RootRefused(
            f"the sandbox worker runs as root and {reason}; programs would run as root, where RLIMIT_NPROC does"
            " not bind and the other limits can be raised back. Set sandbox.allow_root=true in the config (or"
            " DISTILL_JAX_SANDBOX_ALLOW_ROOT=1) to run them as root anyway, or start as an unprivileged user")
    return reason


def _confinement(root_reason: str | None) -> dict:
    """What the worker runs under, for the parent's isolation report: ids, limits, and a probe that no new file
    descriptor (file, socket, pipe) can be made."""
    try:
        os.close(os.dup(0))
        fds_blocked = False
    except OSError:
        fds_blocked = True
    return {"uid": os.getuid(), "gid": os.getgid(), "root_reason": root_reason, "new_fds_blocked": fds_blocked,
            "rlimits": {name: resource.getrlimit(getattr(resource, name))[0] for name in _limits(0)}}


def _limits(memory_mb: int) -> dict[str, int]:
    return {
        "RLIMIT_AS": memory_mb * 2**20,
        "RLIMIT_NPROC": 0,  # no fork, no thread
        "RLIMIT_FSIZE": 0,  # SIGXFSZ on any write to a file
        "RLIMIT_CORE": 0,
        "RLIMIT_NOFILE": 0,  # no open(), socket() or pipe() succeeds
    }


def _limit_process(memory_mb: int) -> None:
    """Lowering a limit is always allowed, so a failure here is a real error (reported as fatal)."""
    for name, value in _limits(memory_mb).items():
        resource.setrlimit(getattr(resource, name), (value, value))


def _limit_cpu(timeout_s: float) -> None:
    """SIGXCPU (which kills the worker) a little after timeout_s of CPU: a backstop for the parent's clock."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    soft = int(used + timeout_s) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))


def main(settings: dict) -> int:
    # Keep the protocol pipes on private fds; 0-2 become /dev/null so nothing reaches the parent by accident.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)

    def send(message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(replies, data):]

    try:
        warnings.simplefilter("ignore")
        runner = Runner(settings.get("stdout_limit", STDOUT_LIMIT))
        for name in _INTERNAL_IMPORTS:  # imported now: no file can be opened once the limits are set
            __import__(name)
        root_reason = _drop_privileges(bool(settings.get("allow_root")))
        _limit_process(settings["memory_mb"])
        confinement = _confinement(root_reason)
        gc.collect()
        gc.freeze()
    except RootRefused as exc:
        send({"fatal": str(exc)})
        return 1
    except Exception as exc:  # noqa: BLE001 - report why the worker cannot start
        send({"fatal": f"{type(exc).__name__}: {exc}"})
        return 1
    send({"ready": True, **confinement})
    while True:
        line = requests.readline()
        if not line:
            return 0
        try:
            request = json.loads(line)
            _limit_cpu(request["timeout_s"])
            reply = runner.run(request["code"])
            send(reply)
        except MemoryError:
            return MEMORY_EXIT_CODE
        if reply.get("recycle"):
            return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
