"""Distilling step-by-step task records, and ETD's mixed-style training sets."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from distill_jax.data.records import check_rationale_record, read_jsonl, write_jsonl
from distill_jax.data.synthetic import generate
from distill_jax.methods import dss, etd
from distill_jax.reasoning.answers import answers_match, extract_answer
from distill_jax.reasoning.styles import get_style, student_input
from helpers_methods import teacher_records


@pytest.fixture(scope="module")
def problems():
    return generate(24, seed=17, min_steps=1, max_steps=3)


@pytest.fixture(scope="module")
def by_style(problems):
    return {s: teacher_records(problems, s) for s in ("cot", "pot", "eot")}


def test_dss_makes_a_label_and_a_rationale_record_per_rationale(by_style):
    cot = by_style["cot"]
    records = dss.dss_records(cot, label_weight=1.0, rationale_weight=0.5)
    assert len(records) == 2 * len(cot)
    for i, src in enumerate(cot):
        label, rationale = records[2 * i], records[2 * i + 1]
        for rec in (label, rationale):
            check_rationale_record(rec, f"dss[{i}]")
            assert rec["style"] == "dss" and rec["problem_id"] == src["problem_id"] and rec["question"] == src["question"]
        assert (label["meta"]["task"], label["meta"]["weight"]) == ("label", 1.0)
        assert (rationale["meta"]["task"], rationale["meta"]["weight"]) == ("rationale", 0.5)
        assert label["rationale"] == f"The answer is {src['answer']}."
        assert answers_match(get_style("dss").answer(label["rationale"]).answer, src["answer"])
        assert src["rationale"].startswith(rationale["rationale"]) and "The answer is" not in rationale["rationale"]
        assert extract_answer(rationale["rationale"]) is not None  # the steps are still there


def test_dss_inputs_are_the_two_tasks_on_one_question(by_style):
    from distill_jax.train.batches import input_text

    label, rationale = dss.dss_records(by_style["cot"][:1])
    q = label["question"]
    assert input_text(label) == student_input(q, "dss") == f"[dss] {q}"
    assert input_text(rationale) == student_input(q, "dss", task="rationale") == f"[dss:rationale] {q}"


def test_dss_skips_incorrect_records_and_can_keep_the_label(by_style):
    cot = by_style["cot"][:3]
    records = dss.dss_records([dict(cot[0], correct=False)] + cot[1:], keep_label_in_rationale=True)
    assert len(records) == 4
    assert records[1]["rationale"] == cot[1]["rationale"] and records[1]["meta"]["weight"] == 1.0
    with pytest.raises(ValueError, match="dss"):
        dss.dss_records(by_style["pot"][:1])


def test_etd_mixture_counts_match_the_weights(by_style):
    weights = {"cot": 1.0, "pot": 2.0, "eot": 1.0}
    mixed = etd.mix(by_style, weights, total=40, seed=0)
    counts = Counter(r["style"] for r in mixed)
    assert counts == {"cot": 10, "pot": 20, "eot": 10}
    for style, recs in by_style.items():  # no repeats while a style has enough records
        ids = [r["problem_id"] for r in mixed if r["style"] == style]
        assert len(set(ids)) == len(ids) and set(ids) <= {r["problem_id"] for r in recs}
    assert {student_input(r["question"], r["style"]).split("]")[0] + "]" for r in mixed} == {"[cot]", "[pot]", "[eot]"}
    assert all(r["meta"]["etd"]["share"] == weights[r["style"]] / 4 for r in mixed)


def test_etd_rounding_repeats_and_default_total(by_style):
    assert etd.mixture_counts({"cot": 9, "pot": 9, "eot": 9}, {"cot": 1, "pot": 1, "eot": 1}, total=10) == \
        {"cot": 4, "pot": 3, "eot": 3}
    n = len(by_style["cot"])
    mixed = etd.mix(by_style, {"cot": 3.0, "pot": 1.0}, total=4 * n + 4, seed=1)
    counts = Counter(r["style"] for r in mixed)
    assert counts == {"cot": 3 * n + 3, "pot": n + 1}
    cot_ids = Counter(r["problem_id"] for r in mixed if r["style"] == "cot")
    assert sorted(set(cot_ids.values())) == [3, 4] and sum(v == 4 for v in cot_ids.values()) == 3
    # without a total: the largest set with no repeats (the style with the biggest share limits it)
    assert n % 3 == 0
    assert Counter(r["style"] for r in etd.mix(by_style, {"cot": 3.0, "pot": 1.0})) == {"cot": n, "pot": n // 3}
    assert Counter(r["style"] for r in etd.mix(by_style, {"cot": 1.0, "pot": 3.0})) == {"cot": n // 3, "pot": n}


def test_etd_is_deterministic(by_style, tmp_path):
    weights = {"cot": 1.0, "pot": 1.0, "eot": 2.0}
    first = etd.mix(by_style, weights, total=30, seed=3)
    assert etd.mix(by_style, weights, total=30, seed=3) == first
    assert etd.mix(by_style, weights, total=30, seed=4) != first
    files = {}
    for style, recs in by_style.items():
        files[style] = [tmp_path / f"{style}.jsonl"]
        write_jsonl(files[style][0], recs)
    counts = etd.mix_files(files, weights, tmp_path / "mixed.jsonl", total=30, seed=3)
    assert counts == {"cot": 8, "pot": 7, "eot": 15} == Counter(r["style"] for r in first)
    assert read_jsonl(tmp_path / "mixed.jsonl") == first


def test_etd_rejects_bad_weights(by_style):
    with pytest.raises(ValueError, match="no records"):
        etd.mix(by_style, {"kp_cot": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        etd.mix(by_style, {"cot": 0.0})


def test_method_modules_import_no_jax():
    code = ("import sys\nimport distill_jax.methods.pad, distill_jax.methods.pad_verify, distill_jax.methods.decompose, distill_jax.methods.kpdd, "
            "distill_jax.methods.dss, distill_jax.methods.etd\nassert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
