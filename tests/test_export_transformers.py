"""An exported student in plain transformers: README's snippet, run in a subprocess that never imports distill_jax,
writes exactly the program `distill-jax generate` writes, verbatim (newlines, indentation, braces, `<`), and the
program runs in the sandbox to the gold answer. For a student trained from scratch (our SentencePiece vocab) and
for one initialised from a HF directory whose T5 vocab lacked those characters (grown by the training)."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_hf import make_tiny_hf_t5
from helpers_tokenizer import make_t5_like_spiece
from helpers_train import NAMES, THINGS, TINY_OVERRIDES, train_config_dict

from distill_jax.cli import main as cli_main
from distill_jax.config import from_dict
from distill_jax.data.records import write_jsonl
from distill_jax.model.tokenizer import Tokenizer
from distill_jax.reasoning.styles import get_style
from distill_jax.train.config import TrainConfig
from distill_jax.train.loop import train

README = Path(__file__).resolve().parent.parent / "README.md"
PROGRAM = "n = {{'a': {a}, 'b': {b}}}\nans = n['a'] + n['b']\nif ans < 0:\n    ans = 0"
# 150 steps memorise the 4 programs (both students); 200, with the learning rate decayed to 1% (a constant
# rate left one CPU model short of exact recall), leave a margin
N_PROBLEMS, STEPS, MAX_NEW = 4, 200, 64
# What the test puts in place of the README's example directory, question and length
SNIPPET_DIR = '"runs/hf_tiny"'
SNIPPET_QUESTION = '"[pot] Tom has 3 apples and buys 4 more. How many apples does Tom have now?"'
SNIPPET_MAX = "max_new_tokens=256"


def _problems() -> list[dict]:
    rng = random.Random(0)
    rows = []
    for i in range(N_PROBLEMS):
        name, thing, a, b = rng.choice(NAMES), rng.choice(THINGS), rng.randint(2, 60), rng.randint(2, 60)
        rows.append({"id": f"p{i}", "question": f"{name} has {a} {thing} and buys {b} more. How many {thing} "
                     f"does {name} have now?", "answer": str(a + b), "program": PROGRAM.format(a=a, b=b)})
    return rows


def _snippet() -> str:
    """README's plain-transformers snippet: the python block after the marker comment."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- plain transformers snippet.*?-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its plain-transformers snippet"
    code = match.group(1)
    assert len(code.strip().splitlines()) == 5
    for literal in (SNIPPET_DIR, SNIPPET_QUESTION, SNIPPET_MAX):
        assert literal in code, f"README snippet no longer holds {literal!r}"
    return code


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("roundtrip")
    rows = _problems()
    write_jsonl(root / "rationales.jsonl", ({
        "problem_id": r["id"], "question": r["question"], "answer": r["answer"], "style": "pot",
        "rationale": r["program"], "prediction": r["answer"], "correct": True, "round": 0, "teacher": {},
        "meta": {}} for r in rows))
    write_jsonl(root / "questions.jsonl", ({"id": r["id"], "question": r["question"]} for r in rows))
    return root, rows


def _hf_init(root: Path, data_dir: Path, texts: list[str]) -> Path:
    """A tiny HF Flan-style (gated, untied) T5 whose tokenizer is T5's pipeline without newline or braces."""
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").open(encoding="utf-8")][:500]
    corpus = [r["question"] for r in rows] + [r["solution"] for r in rows] + texts
    stock = Tokenizer.load(make_t5_like_spiece(root / "stock_tok", corpus, vocab_size=300))
    assert stock.decode(stock.encode(texts[-1])) != texts[-1]  # it cannot write the programs
    hf_dir, _ = make_tiny_hf_t5(root, family="v1_1", seed=1, vocab_size=stock.vocab_size, d_model=32)
    stock.save(hf_dir)
    return hf_dir


@pytest.fixture(scope="module", params=["scratch", "hf_init"])
def exported(request, problems, data_dir) -> tuple[Path, list[dict]]:
    root, rows = problems
    run = root / request.param
    cfg = train_config_dict(run, root / "rationales.jsonl", Path("unused"), steps=STEPS, batch_size=8,
                            data={"auto_buckets": 1, "eval_fraction": 0.0},
                            optim={"learning_rate": 1e-2, "warmup_steps": 10, "schedule": "cosine",
                                   "end_lr_factor": 0.01})
    if request.param == "scratch":
        cfg["model"] = {"init": "scratch", "preset": "tiny", "overrides": dict(TINY_OVERRIDES),
                        "tokenizer_vocab_size": 120}
    else:
        texts = [r["question"] for r in rows] + [r["program"] for r in rows]
        cfg["model"] = {"init": str(_hf_init(root, data_dir, texts))}
    train(from_dict(TrainConfig, cfg))
    out = root / f"{request.param}_hf"
    assert cli_main(["export", "--model", str(run), "--out", str(out)]) == 0
    return out, rows


@pytest.mark.slow
def test_plain_transformers_writes_what_distill_jax_generate_writes(exported, problems, tmp_path) -> None:
    out, rows = exported
    root, _ = problems
    generated = tmp_path / "generated.jsonl"
    assert cli_main(["generate", "--model", str(out), "--style", "pot", "--input", str(root / "questions.jsonl"),
                     "--output", str(generated), "--max-new-tokens", str(MAX_NEW), "--batch-size", "8",
                     "--no-progress"]) == 0
    ours = [json.loads(line)["output"] for line in generated.read_text().splitlines()]

    snippet = (_snippet().replace(SNIPPET_DIR, json.dumps(str(out))).replace(SNIPPET_MAX, f"max_new_tokens={MAX_NEW}")
               .replace("print(", "outputs.append(", 1))
    script = ["import json, sys", "outputs = []"]
    script += [snippet.replace(SNIPPET_QUESTION, json.dumps("[pot] " + r["question"])) for r in rows]
    script.append('assert not any(m.startswith("distill_jax") for m in sys.modules)')
    script.append("print(json.dumps(outputs))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", "\n".join(script)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])

    assert theirs == ours
    assert ours == [r["program"] for r in rows]  # memorised: every newline, indent, brace and `<` verbatim
    answers = get_style("pot").answers(theirs)
    assert [a.answer for a in answers] == [r["answer"] for r in rows]
