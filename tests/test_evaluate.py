"""`distill-jax eval` end to end on one tiny trained run (shared by every test here).

The run: a from-scratch T5 (d_model 32, 2+2 layers) trained 4 steps on symbolic-teacher rationales of
synthetic problems (PoT, and CoT with `<<expr=value>>` annotations), checkpointed at steps 2 and 4. Its
outputs are nonsense, which does not matter: every assertion compares the eval verb with decoding and answer
reading done by hand on the same checkpoint, or checks the bookkeeping (skips, votes, failures, report).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers_train import TINY_OVERRIDES

from distill_jax import cli
from distill_jax.config import from_dict
from distill_jax.data import synthetic
from distill_jax.data.records import rationale_record, write_jsonl
from distill_jax.evaluate.calculator import generate_with_calculator
from distill_jax.evaluate.config import DecodingConfig, EvalConfig
from distill_jax.evaluate.evaluate import vote_styles
from distill_jax.evaluate.results import load_benchmarks, result_dir
from distill_jax.evaluate.student import decode_mesh
from distill_jax.model import decode
from distill_jax.model.tokenizer import Tokenizer
from distill_jax.reasoning.answers import answers_match
from distill_jax.reasoning.calculator import first_correction
from distill_jax.reasoning.styles import get_style, student_input
from distill_jax.teacher.symbolic import SymbolicTeacher
from distill_jax.train.checkpoint import load_params
from distill_jax.train.config import TrainConfig
from distill_jax.train.loop import train

MAX_NEW = 24
BATCH = 8
STYLES = ("pot", "cot")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A trained tiny run with checkpoints at steps 2 and 4, and a problems file of 8 unseen problems."""
    root = tmp_path_factory.mktemp("evaluate")
    teacher = SymbolicTeacher(calculator=True)
    problems = synthetic.generate(40, seed=0, max_steps=2)
    records = [rationale_record(problem_id=p.id, question=p.question, answer=p.answer, style=s,
                                rationale=teacher.rationale(p, s), prediction=p.answer, correct=True)
               for p in problems[:32] for s in STYLES]
    rationales = root / "rationales.jsonl"
    write_jsonl(rationales, records)
    bench = root / "toy.jsonl"
    write_jsonl(bench, [p.to_row() for p in problems[32:]])
    run = root / "run"
    cfg = from_dict(TrainConfig, {
        "run_dir": str(run), "seed": 0, "batch_size": 8, "steps": 4, "log_every": 1, "eval_every": 0,
        "checkpoint_every": 2, "progress": False, "async_checkpoint": False,
        "model": {"init": "scratch", "preset": "tiny", "overrides": dict(TINY_OVERRIDES), "tokenizer_vocab_size": 200},
        "data": {"rationales": [str(rationales)], "buckets": [[96, 96]], "eval_fraction": 0.0},
        "optim": {"name": "adamw", "learning_rate": 3e-3, "warmup_steps": 1, "schedule": "constant"},
        "mesh": {"data": -1},
    })
    train(cfg)
    return {"root": root, "run": run, "bench": bench, "problems": problems[32:]}


def _eval(run: Path, *extra: str) -> int:
    return cli.main(["eval", "--run", str(run), *extra, f"decoding.max_new_tokens={MAX_NEW}",
                     f"decoding.batch_size={BATCH}"])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _result(run_or_root: Path, step, style: str) -> Path:
    return run_or_root / "eval" / str(step) / "toy" / f"{style}@greedy-max{MAX_NEW}"


@pytest.fixture(scope="module")
def scored(tiny):
    """`eval --step all` over pot and cot with voting, done once for the tests that read its files."""
    assert _eval(tiny["run"], "--step", "all", "--problems", str(tiny["bench"]), "--styles", ",".join(STYLES)) == 0
    return tiny


def test_predictions_equal_decoding_by_hand(scored):
    for step in (2, 4):
        config, params, tok_dir = load_params(scored["run"], step)
        tokenizer = Tokenizer.load(tok_dir)
        for style in STYLES:
            rows = _rows(_result(scored["run"], step, style) / "predictions.jsonl")
            inputs = [student_input(p.question, style) for p in scored["problems"]]
            outputs = decode.generate_texts(params, config, tokenizer, inputs, MAX_NEW, BATCH,
                                            mesh=decode_mesh(BATCH), progress=False)
            answers = get_style(style).answers(outputs)
            assert [r["id"] for r in rows] == [p.id for p in scored["problems"]]
            for row, inp, out, ans, p in zip(rows, inputs, outputs, answers, scored["problems"]):
                assert (row["input"], row["output"], row["prediction"]) == (inp, out, ans.answer)
                assert row["correct"] == answers_match(ans.answer, p.answer)
            metrics = json.loads((_result(scored["run"], step, style) / "metrics.json").read_text())
            assert metrics["n"] == len(rows) and metrics["correct"] == sum(r["correct"] for r in rows)


def test_second_run_decodes_nothing(scored, monkeypatch, capsys):
    files = sorted((scored["run"] / "eval").glob("*/*/*/metrics.json"))
    assert len(files) == 2 * (len(STYLES) + 1)  # two steps, each style and the vote
    stamps = {f: f.stat().st_mtime_ns for f in files}
    calls = []
    real = decode.generate_texts
    monkeypatch.setattr(decode, "generate_texts", lambda *a, **k: calls.append(1) or real(*a, **k))
    capsys.readouterr()
    assert _eval(scored["run"], "--step", "all", "--problems", str(scored["bench"]), "--styles", ",".join(STYLES)) == 0
    assert calls == []
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps
    assert capsys.readouterr().out.count("(already scored)") == len(files)


def test_vote_over_styles_breaks_ties_by_style_order(scored):
    for step in (2, 4):
        vote_dir = _result(scored["run"], step, "vote")
        metrics = json.loads((vote_dir / "metrics.json").read_text())
        assert metrics["voters"] == list(STYLES) and "pot,cot" in metrics["tie_break"]
        per_style = {s: _rows(_result(scored["run"], step, s) / "predictions.jsonl") for s in STYLES}
        for i, row in enumerate(_rows(vote_dir / "predictions.jsonl")):
            pot, cot = per_style["pot"][i]["prediction"], per_style["cot"][i]["prediction"]
            assert row["votes"] == [pot, cot]
            assert row["prediction"] == (pot if pot is not None else cot)  # 1-1 split: pot, listed first


def test_vote_tie_break_on_written_predictions(tmp_path, tiny):
    """The vote over hand-written per-style predictions: 2-1 majority, a 1-1 split, and null answers."""
    cfg = EvalConfig(run_dir=str(tmp_path), problems=(str(tiny["bench"]),), benchmarks=(),
                        styles=("pot", "eot", "cot"), decoding=DecodingConfig(max_new_tokens=MAX_NEW))
    bench = load_benchmarks(cfg)[0]
    ids = [p.id for p in bench.problems[:4]]
    bench.problems = bench.problems[:4]
    table = {"pot": ["1", "1", None, None], "eot": ["2", "2", "5", None], "cot": ["2", "3", "6", None]}
    for style, preds in table.items():
        d = result_dir(cfg, 7, bench.name, style)
        d.mkdir(parents=True)
        write_jsonl(d / "predictions.jsonl", [{"id": i, "prediction": p} for i, p in zip(ids, preds)])
    metrics = vote_styles(cfg, 7, bench)
    rows = _rows(result_dir(cfg, 7, bench.name, "vote") / "predictions.jsonl")
    assert [r["prediction"] for r in rows] == ["2", "1", "5", None]
    assert [r["agree"] for r in rows] == [2, 1, 1, 0]
    assert metrics["n"] == 4 and metrics["correct"] == sum(r["correct"] for r in rows)


def test_corrupt_and_missing_steps(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run, ignore=shutil.ignore_patterns("eval", "report.md", "plots"))
    damaged = [f for f in (run / "ckpt" / "2" / "params").rglob("*") if f.is_file() and f.stat().st_size > 0]
    assert damaged
    for f in damaged:
        f.write_bytes(b"\0garbage" * 3)
    capsys.readouterr()
    code = _eval(run, "--step", "all", "--problems", str(tiny["bench"]), "--styles", "pot")
    out = " ".join(capsys.readouterr().out.split())
    assert code == 1
    assert "step 2: cannot load checkpoint" in out and "1 checkpoint(s) could not be evaluated" in out
    assert (_result(run, 4, "pot") / "metrics.json").is_file()
    assert not (run / "eval" / "2").exists()

    code = _eval(run, "--step", "3", "--problems", str(tiny["bench"]), "--styles", "pot")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "steps [3]" in err and "available: [2, 4]" in err


def test_hf_export_scores_like_its_checkpoint(scored, tmp_path):
    """An exported step scores as its checkpoint; exporting another step into the same dir is scored anew."""
    from distill_jax.model.hf import save_hf

    hf_dir = tmp_path / "hf"
    for step in (4, 2):
        config, params, tok_dir = load_params(scored["run"], step)
        save_hf(params, config, hf_dir, tokenizer_dir=tok_dir)
        assert cli.main(["eval", "--model", str(hf_dir), "--problems", str(scored["bench"]), "--styles", "pot",
                         f"decoding.max_new_tokens={MAX_NEW}", f"decoding.batch_size={BATCH}"]) == 0
        mine = _rows(_result(hf_dir, "hf", "pot") / "predictions.jsonl")
        theirs = _rows(_result(scored["run"], step, "pot") / "predictions.jsonl")
        assert [(r["output"], r["prediction"]) for r in mine] == [(r["output"], r["prediction"]) for r in theirs]
    assert mine != _rows(_result(scored["run"], 4, "pot") / "predictions.jsonl")  # the two steps differ


def test_report_has_table_and_plots(scored):
    report = (scored["run"] / "report.md").read_text()
    assert "### toy" in report and "| step 2 | step 4 |" in report
    for style in (*STYLES, "vote"):
        m2, m4 = (json.loads((_result(scored["run"], s, style) / "metrics.json").read_text()) for s in (2, 4))
        cells = " | ".join(f"{100 * m['accuracy']:.1f} ({m['correct']}/{m['n']})" for m in (m2, m4))
        assert f"| {style} | greedy-max{MAX_NEW} | {cells} |" in report
    plots = sorted(p.name for p in (scored["run"] / "plots").glob("*.png"))
    assert plots == ["accuracy_per_style_toy.png", "accuracy_vs_step_toy.png", "loss.png"]  # loss: logs/metrics.jsonl
    assert all(f"](plots/{name})" in report for name in plots)


def test_eval_over_no_problems_is_an_error_and_writes_nothing(tiny, tmp_path, capsys):
    """Issue 12: `eval` on an empty set printed 0.0% (0/0), exited 0 and left a permanent 0/0 row in
    report.md; a negative limit silently dropped problems. Both are config errors now, before any decoding."""
    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run, ignore=shutil.ignore_patterns("eval", "report.md", "plots"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    capsys.readouterr()
    assert _eval(run, "--problems", str(empty), "--styles", "pot") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{empty} holds no problems: nothing to evaluate" in err and "command line problems=" in err
    assert not (run / "eval").exists() and not (run / "report.md").exists()
    for limit in ("0", "-3"):
        assert _eval(run, "--problems", str(tiny["bench"]), "--styles", "pot", f"limit={limit}") == 2
        assert f"command line limit={limit}: limit must be >= 1, got {limit}" in capsys.readouterr().err
    assert not (run / "eval").exists()


def _tensorboard_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from a TensorBoard event file (TFRecord framing: length, crc, event, crc)."""
    import struct

    from tensorboardX.proto import event_pb2

    data, pos, out = path.read_bytes(), 0, {}
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos: pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12: pos + 12 + n])
        pos += 12 + n + 4
        for v in event.summary.value:
            out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_training_logs_to_tensorboard_what_it_logs_to_jsonl(tiny):
    """The `tensorboard` extra (tensorboardX): RUN/tb holds every step's loss, the same as logs/metrics.jsonl."""
    events = sorted((tiny["run"] / "tb").glob("events.out.tfevents.*"))
    assert events
    scalars = _tensorboard_scalars(events[-1])
    logged = [r for r in _rows(tiny["run"] / "logs" / "metrics.jsonl") if "loss" in r]
    assert [s for s, _ in scalars["loss"]] == [r["step"] for r in logged] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in scalars["loss"]], [r["loss"] for r in logged], rtol=1e-6)


@pytest.fixture(scope="module")
def student(tiny):
    """Step 4 laid out as the eval verb lays it out (same mesh and shardings: its compiled program is reused)."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    config, params, tok_dir = load_params(tiny["run"], 4)
    mesh = decode_mesh(BATCH)
    inputs = [student_input(p.question, "cot") for p in tiny["problems"]]
    tokenizer = Tokenizer.load(tok_dir)
    encoded = tokenizer.encode_batch(inputs)
    width = decode.bucket_for(max(map(len, encoded)), decode.DEFAULT_BUCKETS)
    ids, mask = np.zeros((BATCH, width), np.int32), np.zeros((BATCH, width), np.int32)
    for r, row in enumerate(encoded):
        ids[r, :len(row)], mask[r, :len(row)] = row, 1
    rows = NamedSharding(mesh, P("data"))
    return {"config": config, "params": jax.device_put(params, NamedSharding(mesh, P())), "tokenizer": tokenizer,
            "inputs": inputs, "mesh": mesh, "rows": rows, "ids": jax.device_put(ids, rows),
            "mask": jax.device_put(mask, rows)}


def _greedy(s, prefix=None, lengths=None, **kw):
    extra = {} if prefix is None else {"prefix_ids": jax.device_put(np.asarray(prefix, np.int32), s["rows"]),
                                       "prefix_len": jax.device_put(np.asarray(lengths, np.int32), s["rows"])}
    return np.asarray(decode.greedy(s["params"], s["config"], s["ids"], s["mask"], MAX_NEW, **extra, **kw))


def test_prefix_of_greedys_own_output_changes_nothing(student):
    plain = _greedy(student)
    before = decode.TRACE_COUNTS["greedy_prefix"]
    for lengths in ([0, 1, 3, 5, 8, 13, 21, 24], [24, 0, 7, 7, 2, 0, 1, 12]):
        np.testing.assert_array_equal(_greedy(student, plain, lengths), plain)
    assert decode.TRACE_COUNTS["greedy_prefix"] - before <= 1  # other lengths are data, not a new program


def test_forced_prefix_is_emitted_and_keeps_its_row_going(student):
    plain = _greedy(student)
    # make the rows without a prefix whose first token is the commonest one stop at once: it becomes EOS
    first = int(np.bincount(plain[1:, 0]).argmax())
    stopping = [r for r in range(1, BATCH) if plain[r, 0] == first]
    tokens = [t for t in student["tokenizer"].encode("Kai has <<3*4=12>> pens", add_eos=False) if t != first]
    prefix = np.zeros((BATCH, MAX_NEW), np.int32)
    prefix[0, :len(tokens)] = tokens
    lengths = [len(tokens)] + [0] * (BATCH - 1)
    out = _greedy(student, prefix, lengths, eos_id=first)
    np.testing.assert_array_equal(out[0, :len(tokens)], tokens)
    for r in stopping:  # each such row ends at its first token ...
        assert out[r, 0] == first and not out[r, 1:].any()
    assert (out[0, len(tokens):] != 0).any()  # ... while row 0 goes on past its prefix


def test_calculator_replaces_wrong_annotations(student):
    s = student
    starts = ["<<3*4=13>>13 and <<10-4=", "x <<2+3=", "<<7*6=42>> ok <<1/0=5>>", "", "<<2*(3+4)=15>>15",
              "<<50%*20=", "<<48/2=24", "<<1,200-200=1000>>"]
    stats: dict = {}
    outs = generate_with_calculator(s["params"], s["config"], s["tokenizer"], s["inputs"], MAX_NEW, BATCH,
                                    mesh=s["mesh"], starts=starts, stats=stats)
    expected = ["<<3*4=12>>", "x <<2+3=5>>", "<<7*6=42>> ok <<1/0=5>>", "", "<<2*(3+4)=14>>", "<<50%*20=10>>",
                "<<48/2=24>>", "<<1,200-200=1000>>"]
    for out, start in zip(outs, expected):
        assert out.startswith(start) and first_correction(out) is None, (start, out)
    assert stats["corrections"] >= 5 and stats["rounds"] >= 2
    plain = decode.generate_texts(s["params"], s["config"], s["tokenizer"], s["inputs"], MAX_NEW, BATCH,
                                  mesh=s["mesh"], progress=False)[3]
    if first_correction(plain) is None:  # nothing to correct: the calculator is plain greedy
        assert outs[3] == plain


def test_eval_with_calculator(scored):
    """`decoding.calculator=true` goes through generate_with_calculator: no output keeps a wrong annotation."""
    assert _eval(scored["run"], "--step", "4", "--problems", str(scored["bench"]), "--styles", "cot",
                 "decoding.calculator=true", "report=false") == 0
    rows = _rows(scored["run"] / "eval" / "4" / "toy" / f"cot@greedy+calc-max{MAX_NEW}" / "predictions.jsonl")
    assert len(rows) == len(scored["problems"]) and all(first_correction(r["output"]) is None for r in rows)
