"""`distill-jax verify` end to end through the CLI (distill_jax/cli/verify.py)."""
from __future__ import annotations

import json
from pathlib import Path

from distill_jax.cli import main
from distill_jax.cli.verify import verify_file
from distill_jax.data.records import read_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "teacher_outputs"


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_verify_cot_end_to_end(tmp_path, capsys):
    rows = [
        {"id": "p1", "rationale": "12 * 3 = 36. The answer is 36.", "answer": "36", "extra": {"k": 1}},
        {"id": "p2", "rationale": "So she has $\\boxed{1,080}$ dollars.", "answer": "1080"},
        {"id": "p3", "rationale": "The answer is 5.", "answer": "6"},
        {"id": "p4", "rationale": "I am not sure.", "answer": "2"},
        {"id": "p5", "rationale": "#### 0.6666666666666666"},
        {"id": "p6", "rationale": "2/3 of the cake. The answer is 2/3.", "answer": "0.6666666666666666"},
    ]
    src, out = tmp_path / "in.jsonl", tmp_path / "out" / "verified.jsonl"
    _write(src, rows)
    assert main(["verify", "--style", "cot", "--input", str(src), "--output", str(out), "--chunk-size", "4"]) == 0
    got = _read(out)
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert got[0]["extra"] == {"k": 1} and got[0]["rationale"] == rows[0]["rationale"]
    assert [r["prediction"] for r in got] == ["36", "1080", "5", None, "0.6666666666666666", "0.6666666666666667"]
    assert [r["correct"] for r in got] == [True, True, False, False, None, True]
    assert [r["error"] for r in got] == [None, None, None, "no number", None, None]
    err = capsys.readouterr().err
    assert "accuracy" in err and "60.00%" in err and "no number" in err


def test_verify_pot_and_eot_in_chunks(tmp_path):
    programs = [{"id": f"q{i}", "rationale": f"```python\nans = {i} * 2\n```", "answer": str(2 * i)} for i in range(7)]
    programs.append({"id": "bad", "rationale": "import os\nans = 1", "answer": "1"})
    src, out = tmp_path / "pot.jsonl", tmp_path / "pot_out.jsonl"
    _write(src, programs)
    out.write_text("stale row from an earlier run\n")
    assert main(["verify", "--style", "pot", "--input", str(src), "--output", str(out), "--chunk-size", "3",
                 "--workers", "1", "--timeout", "5"]) == 0
    got = _read(out)
    assert len(got) == 8 and all(r["correct"] for r in got[:7])
    assert got[7]["correct"] is False and "forbidden import" in got[7]["error"]

    src, out = tmp_path / "eot.jsonl", tmp_path / "eot_out.jsonl"
    _write(src, [{"id": "e1", "rationale": "% two apples\n2x = 4\nans = x + 1", "answer": 3},
                 {"id": "e2", "rationale": "ans = y + 1", "answer": "3"}])
    assert main(["verify", "--style", "eot", "--input", str(src), "--output", str(out)]) == 0
    got = _read(out)
    assert got[0]["prediction"] == "3" and got[0]["correct"] is True
    assert got[1]["error"] == "underdetermined" and got[1]["correct"] is False


def test_bad_rows_name_the_line_and_nothing_is_written(tmp_path, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"id": "a", "rationale": "The answer is 1."}, "", '{"id": "b", "rationale": "x"', ])
    assert main(["verify", "--style", "cot", "--input", str(src), "--output", str(out)]) == 2
    assert f"{src}:3" in capsys.readouterr().err
    assert not out.exists()

    _write(src, [{"id": "a", "rationale": "The answer is 1."}, {"id": "b", "text": "no rationale"}])
    assert main(["verify", "--style", "cot", "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{src}:2" in err and "rationale" in err

    assert main(["verify", "--style", "cot", "--input", str(tmp_path / "missing.jsonl"), "--output", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["verify", "--style", "cot", "--input", str(src), "--output", str(out), "--timeout", "0"]) == 2


def test_reasoning_imports_no_jax():
    import subprocess
    import sys

    code = ("import sys, distill_jax.cli.verify, distill_jax.reasoning.equations, "
            "distill_jax.reasoning.styles, distill_jax.reasoning.answers; "
            "sys.exit(int(any(m == 'jax' or m.startswith(('jax.', 'flax')) for m in sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_verify_pot_rejects_truncated_programs(tmp_path):
    """Issue 12: lines that do not parse were dropped, so a truncated program scored 20 and correct."""
    rows = [
        {"id": "cut", "rationale": "ans = 20\nans = 30 +", "answer": "20"},
        {"id": "broken-first-line", "rationale": "= 20\nans = 20\nans", "answer": "20"},
        {"id": "fenced", "rationale": "```python\nans = 4 * 5\n```", "answer": "20"},
        {"id": "prose", "rationale": "Here is the program:\nans = 4 * 5\nThe answer is 20.", "answer": "20"},
        {"id": "solution", "rationale": "def solution():\n    return 4 * 5", "answer": "20"},
        {"id": "print", "rationale": "total = 4 * 5\nprint(total)", "answer": "20"},
    ]
    src, out = tmp_path / "pot.jsonl", tmp_path / "out.jsonl"
    _write(src, rows)
    assert main(["verify", "--style", "pot", "--input", str(src), "--output", str(out), "--workers", "1"]) == 0
    got = {r["id"]: r for r in _read(out)}
    assert got["cut"]["prediction"] is None and got["cut"]["correct"] is False
    assert got["cut"]["error"] == "syntax error: invalid syntax (line 2: 'ans = 30 +')"
    assert got["broken-first-line"]["correct"] is False and got["broken-first-line"]["error"].endswith("'= 20')")
    assert all(got[k]["correct"] and got[k]["error"] is None for k in ("fenced", "prose", "solution", "print"))


def _fixture_verdicts(tmp_path: Path) -> list[dict]:
    """`distill-jax verify` over every fixture of tests/fixtures/teacher_outputs/, one file per style."""
    by_style: dict[str, list[dict]] = {}
    for name in ("cot", "pot", "eot", "handwritten"):
        for r in read_jsonl(FIXTURES / f"{name}.jsonl"):
            row = {"id": r["id"], "rationale": r["text"]}
            if r.get("expected") is not None:
                row["answer"] = r["expected"]
            by_style.setdefault(r.get("style", name), []).append(row)
    verdicts = []
    for style, rows in by_style.items():
        src, dst = tmp_path / f"{style}.jsonl", tmp_path / f"{style}.verified.jsonl"
        _write(src, rows)
        verify_file(style, src, dst, workers=2, timeout_s=5.0, progress=False)
        verdicts += [{"id": r["id"], "style": style, "prediction": r["prediction"], "correct": r["correct"],
                      "error": r["error"]} for r in read_jsonl(dst)]
    return verdicts


# Verdicts that differ from main's, each with why; empty: no fixture is truly broken.
CHANGED_VERDICTS: dict[str, str] = {}


def test_fixture_verdicts_are_mains(tmp_path):
    """verdicts_main.jsonl was written by `_fixture_verdicts` on main at ca3c882, before programs ran as
    written; every teacher-output shape there must verify as it did."""
    recorded = {r["id"]: r for r in read_jsonl(FIXTURES / "verdicts_main.jsonl")}
    now = {r["id"]: r for r in _fixture_verdicts(tmp_path)}
    assert set(now) == set(recorded) and len(now) >= 340
    changed = sorted(i for i in now if now[i]["prediction"] != recorded[i]["prediction"]
                     or now[i]["correct"] != recorded[i]["correct"]
                     or (now[i]["error"] is None) != (recorded[i]["error"] is None))
    assert changed == sorted(CHANGED_VERDICTS), [(now[i], recorded[i]) for i in changed]
