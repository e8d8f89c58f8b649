"""The PoT sandbox: normal programs give canonical answers; hostile ones are contained with a reason."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from distill_jax.reasoning import _sandbox_worker, sandbox
from distill_jax.reasoning._sandbox_worker import screen
from distill_jax.reasoning.answers import normalize_number
from distill_jax.reasoning.sandbox import (
    SandboxConfig,
    SandboxError,
    SandboxPool,
    SandboxRootWarning,
    configure_sandbox,
    extract_code,
    isolation_report,
    run_program,
    run_programs,
)


def _children(pid: int) -> set[int]:
    """Processes (zombies included) whose parent is pid."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        if int(ppid) == pid:
            found.add(int(entry.name))
    return found


# ---------------------------------------------------------------------------------------------------------
# Normal programs

def test_ans_and_solution_forms():
    results = run_programs([
        "apples = 5\nbought = 7\nans = apples + bought",
        "def solution():\n    total = 3 * 4\n    return total\n",
        "def solution():\n    return 9\n\nif __name__ == '__main__':\n    print(solution())\n",
        "ans = 6 * 7\nprint(ans)\n",
    ])
    assert [r.answer for r in results] == [normalize_number(x) for x in ("12", "12", "9", "42")]
    assert all(r.error is None for r in results)
    assert results[2].stdout == "9\n"
    assert results[3].stdout == "42\n"
    assert results[0].value == "12"


def test_markdown_fences_and_surrounding_text():
    fenced = "Here is the program:\n```python\nimport math\nans = math.floor(7 / 2)\n```\nThe answer is 3."
    assert run_program(fenced).answer == normalize_number("3")
    assert run_program("```\nans = 2 ** 5\n```").answer == normalize_number("32")
    # An unterminated fence (a student cut off by max length) still runs what is there.
    assert run_program("```py\n    ans = 10 - 4\n").answer == normalize_number("6")
    assert extract_code("```python\nx = 1\n```\n```\noutput\n```") == "x = 1\n"


def test_numbers_are_canonicalised():
    cases = {
        "ans = 12.0": "12",
        "ans = 7.50": "7.5",
        "ans = 1e-05": "0.00001",
        "from fractions import Fraction\nans = Fraction(10, 4)": "2.5",
        "from fractions import Fraction\nans = Fraction(6, 3)": "2",
        "from fractions import Fraction\nans = Fraction(-2, 3)": "-2/3",
        "from fractions import Fraction\nans = Fraction(123456789012345678901234567890123, 8)":
            "15432098626543209862654320986265.375",
        "from decimal import Decimal\nans = Decimal('3.10') * 2": "6.2",
        "ans = ' 42 '": "42",
        "ans = '$1,080'": "1080",
        "import statistics\nans = statistics.mean([1, 2, 3, 4])": "2.5",
        "import math\nans = math.comb(5, 2) + math.sqrt(16)": "14",
    }
    results = run_programs(list(cases))
    for (code, expected), result in zip(cases.items(), results):
        assert result.error is None, (code, result)
        assert result.answer == normalize_number(expected), (code, result)


def test_non_numeric_and_missing_answers():
    results = run_programs(["ans = 'twelve'", "ans = True", "ans = [1, 2]", "x = 3", "ans = float('nan')",
                            "import decimal\nans = decimal.Decimal('1E+999999')"])
    assert [r.error for r in results] == [
        "non-numeric ans: str", "non-numeric ans: bool", "non-numeric ans: list", "no ans",
        "non-numeric ans: float nan", "non-numeric ans: Decimal too long",
    ]
    assert all(r.answer is None for r in results)
    assert results[1].value == "True"


def test_errors_are_reported():
    results = run_programs(["ans = 1 / 0", "ans = (3 +", "ans = undefined_name", "return 5", "ans = 1\x00"])
    assert results[0].error == "runtime error: ZeroDivisionError"
    assert results[1].error.startswith("syntax error:")
    assert results[2].error == "runtime error: NameError"
    assert results[3].error.startswith("syntax error: 'return' outside function")
    assert results[4].error.startswith("syntax error:")
    assert all(r.answer is None for r in results)


def test_builtin_names_may_be_rebound_as_variables():
    assert run_program("type = 3\ninput = 4\nans = type * input").answer == normalize_number("12")


def test_order_and_progress():
    codes = [f"ans = {i} * 3" for i in range(40)] + ["while True: pass"] + ["ans = -1"]
    seen = []
    results = run_programs(codes, timeout_s=0.5, workers=2, progress=lambda done, total: seen.append((done, total)))
    assert [r.answer for r in results[:40]] == [normalize_number(str(i * 3)) for i in range(40)]
    assert results[40].error == "timeout"
    assert results[41].answer == normalize_number("-1")
    assert seen == [(i, len(codes)) for i in range(1, len(codes) + 1)]


# ---------------------------------------------------------------------------------------------------------
# Isolation between programs

def test_no_state_leaks_between_programs():
    with SandboxPool(workers=1) as pool:
        results = pool.run([
            "leak = 42\nans = 1",
            "ans = leak",
            "import decimal\ndecimal.getcontext().traps[decimal.DivisionByZero] = False\nans = 1",
            "from decimal import Decimal\nans = Decimal(1) / Decimal(0)",
            "import fractions\nfractions.Fraction.limit_denominator = lambda self, n: 0\nans = 1",
            "import math\nmath.pi = 3\nans = 1",
            "import math\nans = math.pi > 3.14",
            # A generator in a reference cycle: its `finally:` must not run inside the next program.
            "def g():\n    try:\n        yield 1\n    finally:\n        print('finaliser')\n"
            "x = g()\nnext(x)\ncycle = [x]\ncycle.append(cycle)\nans = 1",
            "ans = 2",
            "import decimal\ndecimal.DefaultContext.traps[decimal.Inexact] = True\nans = 1",
            "import decimal\nans = decimal.Context().divide(decimal.Decimal(1), decimal.Decimal(3))",
            "from collections import Counter\nimport functools\n"
            "functools.update_wrapper(Counter, Counter(), assigned=('most_common',), updated=())\nans = 1",
        ])
        assert len(pool.worker_pids()) == 1
    assert results[1].error == "runtime error: NameError"
    assert results[3].error == "runtime error: DivisionByZero"
    assert results[4].error == "forbidden attribute assignment '.limit_denominator'"
    assert results[5].error == "forbidden attribute assignment '.pi'"
    assert results[6].error == "non-numeric ans: bool" and results[6].value == "True"
    assert results[7].stdout == "finaliser\n" and results[8].stdout == ""
    assert results[10].answer == normalize_number("0.3333333333333333333333333333")
    assert results[11].error == "forbidden attribute 'update_wrapper'"


def test_workers_are_recycled_and_replaced():
    with SandboxPool(workers=1, max_programs_per_worker=3) as pool:
        first = pool.run(["ans = 1"])
        pid = pool.worker_pids()[0]
        results = pool.run([f"ans = {i}" for i in range(7)])
        assert [r.answer for r in results] == [normalize_number(str(i)) for i in range(7)]
        assert pool.worker_pids()[0] != pid
        pid = pool.worker_pids()[0]
        assert pool.run(["while True: pass"], timeout_s=0.3)[0].error == "timeout"
        assert pool.run(["ans = 5"])[0].answer == normalize_number("5")
        assert pool.worker_pids()[0] != pid
    assert first[0].answer == normalize_number("1")


def test_interrupted_batch_leaves_no_stale_reply():
    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with SandboxPool(workers=2) as pool:
        with pytest.raises(KeyboardInterrupt):
            pool.run(["ans = 1", "ans = 2", "ans = 3", "ans = 4"], progress=stop)
        assert [r.answer for r in pool.run(["ans = 5", "ans = 6"])] == [normalize_number("5"), normalize_number("6")]


# ---------------------------------------------------------------------------------------------------------
# Hostile programs: (code, expected error prefix)

HOSTILE = [
    ("open('pwned.txt', 'w').write('x')\nans = 1", "forbidden name 'open'"),
    ("import pathlib\npathlib.Path('pwned.txt').write_text('x')", "forbidden import 'pathlib'"),
    ("import os\nos.system('touch pwned.txt')", "forbidden import 'os'"),
    ("import subprocess\nsubprocess.run(['touch', 'pwned.txt'])", "forbidden import 'subprocess'"),
    ("import socket\nsocket.create_connection(('example.com', 80))", "forbidden import 'socket'"),
    ("import sys\nans = len(sys.modules)", "forbidden import 'sys'"),
    ("import ctypes\nctypes.string_at(0)", "forbidden import 'ctypes'"),
    ("import importlib\nos = importlib.import_module('os')", "forbidden import 'importlib'"),
    ("import builtins\nbuiltins.open('pwned.txt', 'w')", "forbidden import 'builtins'"),
    ("from os import system\nsystem('touch pwned.txt')", "forbidden import 'os'"),
    ("import os.path\nans = 1", "forbidden import 'os.path'"),
    ("from . import answers", "forbidden import '.'"),
    ("__import__('os').system('touch pwned.txt')", "forbidden name '__import__'"),
    ("ans = ().__class__.__bases__[0].__subclasses__()", "forbidden attribute"),
    ("ans = [c for c in ''.__class__.__mro__[1].__subclasses__()]", "forbidden attribute"),
    ("__builtins__['open']('pwned.txt', 'w')", "forbidden name '__builtins__'"),
    ("del __builtins__\nans = 1", "forbidden name '__builtins__'"),
    ("def f():\n    pass\ng = getattr(f, '__globals__')", "forbidden name 'getattr'"),
    ("ans = type.__subclasses__(type)", "forbidden"),
    ("ans = int.mro()", "forbidden attribute 'mro'"),
    ("import sys\nframe = sys._getframe()", "forbidden import 'sys'"),
    ("def g():\n    yield 1\nx = g()\nframe = x.gi_frame", "forbidden attribute 'gi_frame'"),
    ("def g():\n    yield 1\nframe = g()\nup = frame.f_back", "forbidden attribute 'f_back'"),
    ("def g():\n    yield 1\nans = len(g().gi_code.co_code)", "forbidden attribute 'co_code'"),
    ("try:\n    1 / 0\nexcept Exception as e:\n    tb = e.__traceback__", "forbidden attribute '__traceback__'"),
    ("try:\n    1 / 0\nexcept Exception as e:\n    tb = e\n    f = tb.tb_frame", "forbidden attribute 'tb_frame'"),
    ("try:\n    1 / 0\nexcept Exception as e:\n    t = e.with_traceback(None)", "forbidden attribute 'with_traceback'"),
    ("def f():\n    x = 1\n    def g():\n        return x\n    return g\nc = f().__closure__", "forbidden attribute"),
    ("ans = (lambda: 0).__globals__", "forbidden attribute '__globals__'"),
    ("ans = '{0.__class__}'.format(1)", "forbidden format field"),
    ("ans = '{0[0]}'.format([1])", "forbidden format field"),
    ("fmt = '{0.__class__}'\nans = fmt.format(1)", "forbidden attribute 'format'"),
    ("ans = str.format('{0.__class__}', 1)", "forbidden attribute 'format'"),
    ("ans = '{x.__class__}'.format_map({'x': 1})", "forbidden attribute 'format_map'"),
    ("ans = f'{().__class__}'", "forbidden attribute '__class__'"),
    ("import operator\nans = operator.attrgetter('__class__')(1)", "forbidden attribute 'attrgetter'"),
    ("from operator import methodcaller\nans = 1", "forbidden name 'methodcaller'"),
    ("from functools import wraps\nans = 1", "forbidden name 'wraps'"),
    ("from fractions import sys\nans = 1", "runtime error: ImportError"),
    ("import statistics\nans = statistics.random.seed", "runtime error: AttributeError"),
    ("import os\nwhile True:\n    os.fork()", "forbidden import 'os'"),
    ("import multiprocessing\nmultiprocessing.Process(target=print).start()", "forbidden import 'multiprocessing'"),
    ("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True: pass", "forbidden import 'signal'"),
    ("x = []\nwhile True:\n    x.append('x' * 10000)", "memory"),
    ("s = 'x' * 10**10\nans = 1", "memory"),
    ("ans = 10**10**10", "timeout"),
    ("while True:\n    pass", "timeout"),
    ("while True:\n    try:\n        while True:\n            pass\n    except:\n        pass", "timeout"),
    ("def f(n):\n    return f(n + 1)\nans = f(0)", "runtime error: RecursionError"),
    ("while True:\n    print('x' * 1000)", "timeout"),
    ("exit()", "forbidden name 'exit'"),
    ("quit()", "forbidden name 'quit'"),
    ("raise SystemExit(0)", "forbidden name 'SystemExit'"),
    ("raise KeyboardInterrupt", "forbidden name 'KeyboardInterrupt'"),
    ("breakpoint()", "forbidden name 'breakpoint'"),
    ("ans = int(input())", "forbidden name 'input'"),
    ("help()", "forbidden name 'help'"),
    ("ans = memoryview(b'abc')[0]", "forbidden name 'memoryview'"),
    ("ans = eval('1 + 1')", "forbidden name 'eval'"),
    ("exec('ans = 1')", "forbidden name 'exec'"),
    ("c = compile('1', 'x', 'eval')", "forbidden name 'compile'"),
    ("ans = len(globals())", "forbidden name 'globals'"),
    ("ans = len(vars())", "forbidden name 'vars'"),
    ("class A:\n    pass\nans = 1", "forbidden syntax: class"),
    ("async def f():\n    pass\nans = 1", "forbidden syntax: async"),
    ("def __getattr__(name):\n    return 1\nans = 1", "forbidden name '__getattr__'"),
    ("match 1:\n    case int(__class__=c):\n        ans = 1", "forbidden attribute '__class__'"),
    ("import math as __builtins__\nans = 1", "forbidden name '__builtins__'"),
    ("try:\n    1 / 0\nexcept Exception as __builtins__:\n    ans = 1", "forbidden name '__builtins__'"),
    ("ans = 10**5000", "non-numeric ans: int too long"),
]


def test_hostile_battery_is_contained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    children_before = _children(os.getpid())
    repo_files_before = set(os.listdir(Path(__file__).parent.parent))
    codes = [code for code, _ in HOSTILE]
    with SandboxPool(workers=2, memory_mb=128) as pool:
        results = pool.run(codes, timeout_s=1.0)
        for (code, expected), result in zip(HOSTILE, results):
            assert result.error is not None and result.error.startswith(expected), (code, result)
            assert result.answer is None, (code, result)
        # The pool survives: it still answers, and its workers have no children of their own.
        assert pool.run(["ans = 6 * 7"])[0].answer == normalize_number("42")
        for pid in pool.worker_pids():
            assert _children(pid) == set()
    # Nothing was written, and no worker (or zombie) is left once the pool is closed.
    assert list(tmp_path.iterdir()) == []
    assert set(os.listdir(Path(__file__).parent.parent)) == repo_files_before
    assert _children(os.getpid()) == children_before


def test_huge_output_is_capped_not_fatal():
    result = run_program("print('y' * 10**6)\nfor i in range(10**4):\n    print(i)\nans = 3", timeout_s=5.0)
    assert result.answer == normalize_number("3")
    assert len(result.stdout) < 20_000 and result.stdout.endswith("[stdout truncated]")


def test_screen_accepts_ordinary_programs():
    ordinary = (
        "from collections import Counter\nimport itertools, functools, operator, re, datetime\n"
        "c = Counter('hello')\npairs = list(itertools.combinations([1, 2, 3], 2))\n"
        "total = functools.reduce(operator.add, [1, 2, 3])\nn = int(re.findall(r'\\d+', 'x 12 y')[0])\n"
        "label = '{} and {name}'.format(1, name='b')\nans = f'{total + n:.1f}'\n"
    )
    tree, problem = screen(ordinary)
    assert problem is None and tree is not None
    assert run_program(ordinary).answer == normalize_number("18")


# ---------------------------------------------------------------------------------------------------------
# Root: the sandbox fails closed

# The real worker, started as root in a container without CAP_SETUID: every change of ids fails. Faking the ids
# too makes the test mean the same when the suite does not run as root.
SETUID_FAILS = """
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("_sandbox_worker", {worker!r})
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)

def refuse(*_args):
    raise PermissionError(1, "Operation not permitted")

os.getuid = os.geteuid = os.getgid = os.getegid = lambda: 0
os.setuid = os.setgid = os.setgroups = refuse
sys.exit(worker.main(json.loads(sys.argv[1])))
"""


@pytest.fixture
def setuid_fails(tmp_path, monkeypatch):
    script = tmp_path / "setuid_fails_worker.py"
    script.write_text(SETUID_FAILS.format(worker=_sandbox_worker.__file__))
    monkeypatch.setattr(sandbox, "_WORKER_SCRIPT", str(script))
    monkeypatch.setattr(sandbox, "_configured_allow_root", None)
    monkeypatch.delenv(sandbox.ALLOW_ROOT_ENV, raising=False)
    sandbox._shared.close()
    yield
    sandbox._shared.close()  # later tests get workers of the real script


def test_root_that_cannot_drop_privileges_refuses(setuid_fails):
    with SandboxPool(workers=1) as pool:
        with pytest.raises(SandboxError, match="runs as root and cannot drop to nobody: Operation not permitted"
                           ) as refused:
            pool.run(["ans = 1"])
        assert "sandbox.allow_root=true" in str(refused.value) and sandbox.ALLOW_ROOT_ENV in str(refused.value)
        assert pool.worker_pids() == []
    with pytest.raises(SandboxError, match="allow_root"):
        run_programs(["ans = 1"])  # the shared pool too
    report = isolation_report()
    assert report["runs_programs"] is False and report["allow_root"] is False
    assert "cannot drop to nobody" in report["error"]


def test_root_opt_in_runs_with_a_warning(setuid_fails, monkeypatch):
    with pytest.warns(SandboxRootWarning, match="RLIMIT_NPROC does not bind root") as caught:
        with SandboxPool(workers=1, allow_root=True) as pool:
            assert pool.run(["ans = 6 * 7", "ans = 1"])[0].answer == "42"
    assert len(caught) == 1 and "cannot drop to nobody" in str(caught[0].message)
    report = isolation_report(allow_root=True)
    assert report["runs_programs"] is True and report["uid"] == 0 and report["user"].startswith("root")
    assert report["lost"] == list(sandbox.ROOT_LOSSES) and "root can raise" in report["network"]

    monkeypatch.setenv(sandbox.ALLOW_ROOT_ENV, "1")  # the CLI's switch
    with pytest.warns(SandboxRootWarning):
        assert run_programs(["ans = 2"])[0].answer == "2"
    monkeypatch.setenv(sandbox.ALLOW_ROOT_ENV, "0")
    with pytest.raises(SandboxError, match="allow_root"):
        run_programs(["ans = 2"])
    configure_sandbox(SandboxConfig(allow_root=True))  # a config's `sandbox.allow_root: true` wins
    with pytest.warns(SandboxRootWarning):
        assert run_programs(["ans = 3"])[0].answer == "3"
    configure_sandbox(SandboxConfig(allow_root=None))  # a stage's default section leaves it as it is
    assert sandbox.allow_root_setting() is True
    monkeypatch.setattr(sandbox, "_configured_allow_root", None)
    monkeypatch.setenv(sandbox.ALLOW_ROOT_ENV, "perhaps")
    with pytest.raises(SandboxError, match=f"{sandbox.ALLOW_ROOT_ENV}='perhaps'"):
        run_programs(["ans = 4"])
    assert "perhaps" in isolation_report()["error"]


def test_isolation_report_of_this_machine():
    report = isolation_report(allow_root=False)
    expected_uid = 65534 if os.geteuid() == 0 else os.getuid()
    assert report["runs_programs"] is True and report["error"] is None and report["uid"] == expected_uid
    assert report["rlimits"]["RLIMIT_AS"] == 256 * 2**20
    assert all(report["rlimits"][name] == 0 for name in ("RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE"))
    assert report["network"].startswith("no new socket") and report["lost"] == []


def test_every_config_that_runs_programs_takes_sandbox_allow_root():
    from distill_jax import config as config_lib
    from distill_jax.evaluate.config import EvalConfig
    from distill_jax.methods.fdd import FddConfig
    from distill_jax.methods.method_config import MethodConfig
    from distill_jax.teacher.teach_config import TeachConfig

    required = {EvalConfig: ["model=m"], MethodConfig: ["run_dir=r", "method=pad"], FddConfig: ["run_dir=r"]}
    for cls in (TeachConfig, EvalConfig, MethodConfig, FddConfig):
        cfg = config_lib.load(cls, None, [*required.get(cls, []), "sandbox.allow_root=true"])
        assert cfg.sandbox == SandboxConfig(allow_root=True), cls
        assert config_lib.load(cls, None, required.get(cls, [])).sandbox.allow_root is None, cls
