"""Problem loaders: the shared benchmarks, bad rows, and the Hugging Face field mapping (offline)."""
from __future__ import annotations

import json
import time

import pytest

from distill_jax.data.problems import (
    LoadReport, Problem, load_hf, load_problems, load_problems_report, parse_hf_spec, problems_from_hf_rows,
)
from distill_jax.data.records import DataError


@pytest.mark.parametrize("name,count", [
    ("gsm8k_train", 7473), ("gsm8k_test", 1319), ("gsm8k", 1319), ("svamp", 1000), ("multiarith", 600),
    ("addsub", 395), ("singleeq", 508),
])
def test_every_benchmark_row_loads(data_dir, name, count):
    problems = load_problems(name, data_dir)
    assert len(problems) == count
    assert len({p.id for p in problems}) == count
    source = name.split("_")[0]
    assert all(p.source == source and p.question and p.answer for p in problems)
    assert all(float(p.answer) == float(p.answer) for p in problems)  # numeric strings


def test_gsm8k_keeps_solution_and_canonical_answer(data_dir):
    first = load_problems("gsm8k_test", data_dir)[0]
    assert first.id == "gsm8k-test-0001" and first.answer == "18"
    assert first.extra["solution"].endswith("#### 18")
    by_id = {p.id: p for p in load_problems("gsm8k_train", data_dir)}
    assert by_id["gsm8k-train-5716"].answer == "-7"


def test_data_dir_from_env(data_dir, monkeypatch):
    monkeypatch.setenv("DISTILL_JAX_DATA", str(data_dir))
    assert len(load_problems("svamp")) == 1000


def test_aqua_is_multiple_choice(data_dir):
    problems = load_problems("aqua", data_dir)
    assert len(problems) == 254
    assert {p.answer for p in problems} == set("ABCDE")
    assert all(len(p.extra["options"]) == 5 for p in problems)


def test_missing_benchmark_names_the_path(data_dir):
    with pytest.raises(DataError, match=r"asdiv/test\.jsonl"):
        load_problems("asdiv", data_dir)


def test_unknown_spec_is_explained(tmp_path):
    with pytest.raises(DataError, match="neither an existing JSONL file"):
        load_problems("no_such_benchmark", tmp_path)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_jsonl_path_keeps_extra_keys_and_normalises(tmp_path):
    path = _write(tmp_path / "mine.jsonl", [
        json.dumps({"id": "a", "question": "1+1?", "answer": "2.0", "note": "x"}),
        json.dumps({"id": "b", "question": "Half of 3?", "answer": 1.5}),
        json.dumps({"question": "No id?", "answer": "1,000"}),
    ])
    problems = load_problems(str(path))
    assert [p.answer for p in problems] == ["2", "1.5", "1000"]
    assert problems[0].extra == {"note": "x"} and problems[0].source == "mine"
    assert problems[2].id == "mine-0003"
    # to_row is what load_problems reads back
    again = _write(tmp_path / "again.jsonl", [json.dumps(p.to_row()) for p in problems])
    assert load_problems(str(again)) == problems


BAD_ROWS = [
    ("missing question", json.dumps({"id": "x", "answer": "3"})),
    ("bad answer", json.dumps({"id": "x", "question": "q?", "answer": "three"})),
    ("invalid JSON", '{"id": "x", "question": '),
    ("duplicate id", json.dumps({"id": "g0", "question": "again?", "answer": "2"})),
]


@pytest.mark.parametrize("reason,line", BAD_ROWS)
def test_bad_row_raises_naming_file_and_line(tmp_path, reason, line):
    good = json.dumps({"id": "g0", "question": "q?", "answer": "1"})
    path = _write(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(DataError, match=r"bad\.jsonl:2\b"):
        load_problems(str(path))


def test_skip_invalid_counts_and_reports(tmp_path):
    good = [json.dumps({"id": f"g{i}", "question": "q?", "answer": str(i)}) for i in range(3)]
    path = _write(tmp_path / "mixed.jsonl", [good[0], *(line for _, line in BAD_ROWS), good[1], good[2]])
    problems, report = load_problems_report(str(path), skip_invalid=True)
    assert [p.id for p in problems] == ["g0", "g1", "g2"]
    assert isinstance(report, LoadReport) and report.loaded == 3 and report.n_skipped == 4
    assert report.skipped == {"missing question": [2], "bad answer": [3], "invalid JSON": [4], "duplicate id": [5]}
    assert "4 skipped" in report.summary()
    assert load_problems(str(path), skip_invalid=True) == problems


def test_problem_is_hashable_and_frozen():
    p = Problem("a", "q?", "1", "s", {"k": [1]})
    assert hash(p) == hash(Problem("a", "q?", "1", "s", {}))
    with pytest.raises(AttributeError):
        p.answer = "2"


def test_parse_hf_spec():
    assert parse_hf_spec("hf:openai/gsm8k:main:test") == ("openai/gsm8k", "main", "test")
    assert parse_hf_spec("hf:openai/gsm8k") == ("openai/gsm8k", "main", "test")
    assert parse_hf_spec("hf:ChilleD/SVAMP:train") == ("ChilleD/SVAMP", None, "train")
    with pytest.raises(DataError, match="expected hf:"):
        parse_hf_spec("hf:a:b:c:d")


def test_hf_field_mapping_on_a_local_dataset():
    import datasets

    ds = datasets.Dataset.from_dict({
        "question": ["Ann has 3 pens and buys 1,000 more. How many?", "Broken row"],
        "answer": ["3 + 1000 = <<3+1000=1003>>1003\n#### 1,003", "no final answer here"],
    })
    with pytest.raises(DataError, match="row 1"):
        problems_from_hf_rows(ds, "openai/gsm8k", "test")
    problems, report = problems_from_hf_rows(ds, "openai/gsm8k", "test", skip_invalid=True)
    assert report.skipped == {"bad answer": [1]}
    (p,) = problems
    assert (p.id, p.answer, p.source) == ("gsm8k-test-0001", "1003", "gsm8k")
    assert p.extra["solution"].endswith("#### 1,003")

    svamp = datasets.Dataset.from_dict({"ID": ["chal-1"], "Body": ["Ann has 5 pens."],
                                        "Question": ["How many pens?"], "Answer": [5.0]})
    (s,) = problems_from_hf_rows(svamp, "ChilleD/SVAMP", "test")[0]
    assert (s.id, s.question, s.answer) == ("chal-1", "Ann has 5 pens. How many pens?", "5")


def test_hf_offline_error_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DataError, match=r"could not load Hugging Face dataset .*offline, use a JSONL path"):
        load_hf("hf:distill-jax-tests/no-such-dataset:test")
    assert time.monotonic() - start < 30
