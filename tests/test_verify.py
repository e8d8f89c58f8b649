"""`distill-jax verify` end to end through the CLI (distill_jax/cli/verify.py)."""
from __future__ import annotations

import json

from distill_jax.cli import main


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
