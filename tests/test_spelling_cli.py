"""`generate` and `eval` on a vocab that lacks code characters (T5's): inputs it spells (a newline, read as
T5 reads it) decode; an input character without a token stops the run before decoding, naming the row, the
character and the fix."""
from __future__ import annotations

import json

import pytest
from helpers_hf import make_tiny_hf_t5
from helpers_tokenizer import make_t5_like_spiece

from distill_jax.cli import main as cli_main
from distill_jax.model.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def t5_student(data_dir, tmp_path_factory):
    """A tiny HF T5 with T5's tokenizer pipeline and a vocab without `{ } < ~ \\ ^ |` (what the escape needed)."""
    root = tmp_path_factory.mktemp("t5_student")
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").open(encoding="utf-8")][:500]
    tok = Tokenizer.load(make_t5_like_spiece(root / "tok", [r["question"] for r in rows], vocab_size=300))
    hf_dir, _ = make_tiny_hf_t5(root, family="v1_0", seed=0, vocab_size=tok.vocab_size, d_model=32)
    tok.save(hf_dir)
    return hf_dir


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generate_runs_on_any_vocab_and_names_unknown_characters(t5_student, tmp_path, capsys) -> None:
    good = _write(tmp_path / "good.jsonl", [{"id": "a", "input": "Tom has 3\napples. How many?"}])
    args = ["generate", "--model", str(t5_student), "--output", str(tmp_path / "out.jsonl"), "--max-new-tokens",
            "4", "--batch-size", "8", "--no-progress"]
    assert cli_main(args + ["--input", str(good)]) == 0
    assert isinstance(json.loads((tmp_path / "out.jsonl").read_text())["output"], str)
    bad = _write(tmp_path / "bad.jsonl", [{"id": "a", "input": "fine"}, {"id": "b", "input": "x = {1}"}])
    (tmp_path / "out.jsonl").unlink()
    assert cli_main(args + ["--input", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "'{' (U+007B)" in err and "Fix:" in err
    assert not (tmp_path / "out.jsonl").exists()  # nothing decoded, nothing written


def test_eval_names_the_problem_before_decoding(t5_student, tmp_path, capsys) -> None:
    problems = _write(tmp_path / "problems.jsonl", [{"id": "q1", "question": "What is 2 + 3?", "answer": "5"},
                                                    {"id": "q7", "question": "Is 2 < 3 | 4?", "answer": "1"}])
    assert cli_main(["eval", "--model", str(t5_student), "--problems", str(problems), "--styles", "pot",
                     f"out_dir={tmp_path / 'eval'}"]) == 2
    err = capsys.readouterr().err
    assert "problem q7" in err and "'<' (U+003C)" in err
