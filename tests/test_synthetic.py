"""The synthetic world: exact graphs, determinism, variants, the step split and the `synth` CLI."""
from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction

import pytest

from distill_jax.cli import main as cli_main
from distill_jax.data.problems import load_problems
from distill_jax.data.synthetic import generate, harder_variant, similar_problem, split_by_steps
from distill_jax.data.synthetic_graph import MAX_VALUE, apply_op
from distill_jax.data.synthetic_vocab import NAMES, OBJECTS


@pytest.fixture(scope="module")
def problems():
    return generate(400, seed=7, min_steps=1, max_steps=5, distractor_rate=0.3)


def _replay(graph: list[dict]) -> dict[str, Fraction]:
    values: dict[str, Fraction] = {}
    for node in graph:
        if node["op"] == "given":
            values[node["var"]] = Fraction(node["value"])
        else:
            args = [values[x] if isinstance(x, str) else Fraction(x) for x in node["inputs"]]
            values[node["var"]] = apply_op(node["op"], args)
    return values


def test_graphs_are_exact_and_small(problems):
    for p in problems:
        graph = p.extra["graph"]
        values = _replay(graph)
        for node in graph:
            v = values[node["var"]]
            assert v == Fraction(node["value"]) and v.denominator == 1 and 0 < v <= MAX_VALUE, (p.id, node)
        assert p.answer == graph[-1]["value"] and p.extra["target"] == graph[-1]["var"]
        assert p.extra["steps"] == sum(n["op"] != "given" for n in graph)
        assert p.question.endswith(graph[-1]["ask"])


def test_every_given_number_is_in_the_text_and_distractors_are_unused(problems):
    for p in problems:
        graph = p.extra["graph"]
        used = {x for n in graph for x in n["inputs"] if isinstance(x, str)}
        for node in graph:
            if node["op"] == "given":
                assert re.search(rf"(?<![\d/]){node['value']}(?!\d)", node["sentence"]), (p.id, node)
                assert node["sentence"] in p.question
                assert (node["var"] in used) != node["distractor"], (p.id, node)
        assert p.extra["has_distractor"] == any(n.get("distractor") for n in graph)


def test_step_counts_distractors_and_variety(problems):
    steps = Counter(p.extra["steps"] for p in problems)
    assert set(steps) == {1, 2, 3, 4, 5} and min(steps.values()) > 40
    rate = sum(p.extra["has_distractor"] for p in problems) / len(problems)
    assert 0.2 < rate < 0.4
    moves = Counter(m for p in problems for m in p.extra["plan"])
    assert len(moves) >= 13  # every start and continue move gets used
    assert len({p.question for p in problems}) == len(problems)
    assert len(NAMES) >= 40 and len(OBJECTS) >= 40
    numbers = [int(n["value"]) for p in problems for n in p.extra["graph"] if n["op"] == "given"]
    assert sum(2 <= x <= 99 for x in numbers) / len(numbers) > 0.8


def test_same_seed_same_problems_other_seed_different():
    a = generate(50, seed=3, max_steps=4, distractor_rate=0.5)
    assert a == generate(50, seed=3, max_steps=4, distractor_rate=0.5)
    assert [p.question for p in a] != [p.question for p in generate(50, seed=4, max_steps=4, distractor_rate=0.5)]


def test_rows_round_trip_through_load_problems(problems, tmp_path):
    from distill_jax.data.records import write_jsonl

    path = tmp_path / "synth.jsonl"
    write_jsonl(path, (p.to_row() for p in problems))
    assert load_problems(str(path)) == problems


def test_harder_variant_adds_one_step_and_changes_the_answer(problems):
    rng = random.Random(0)
    for p in problems[:150]:
        h = harder_variant(p, rng)
        assert h.extra["steps"] == p.extra["steps"] + 1 and h.answer != p.answer
        assert h.extra["parent"] == p.id and h.id != p.id
        story = " ".join(p.extra["story"])
        assert h.question.startswith(story) and h.question != p.question
        assert _replay(h.extra["graph"])[h.extra["target"]] == int(h.answer)


def test_similar_problem_keeps_structure(problems):
    rng = random.Random(1)
    for p in problems[:150]:
        s = similar_problem(p, rng)
        assert s.extra["steps"] == p.extra["steps"] and s.extra["plan"] == p.extra["plan"]
        assert s.extra["has_distractor"] == p.extra["has_distractor"]
        assert s.question != p.question
        assert [n["op"] for n in s.extra["graph"] if n["op"] != "given"] == \
               [n["op"] for n in p.extra["graph"] if n["op"] != "given"]


def test_split_by_steps(problems):
    ind, ood = split_by_steps(problems, max_train_steps=3)
    assert len(ind) + len(ood) == len(problems) and ind and ood
    assert all(p.extra["steps"] <= 3 and p.extra["split"] == "id" for p in ind)
    assert all(p.extra["steps"] > 3 and p.extra["split"] == "ood" for p in ood)


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_steps"):
        generate(1, 0, min_steps=3, max_steps=2)
    with pytest.raises(ValueError, match="distractor_rate"):
        generate(1, 0, distractor_rate=2.0)


def test_synth_cli_same_seed_same_bytes(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    args = ["synth", "--n", "200", "--seed", "5", "--min-steps", "2", "--max-steps", "4", "--distractors", "0.25"]
    assert cli_main(args + ["--out", str(a)]) == 0
    assert cli_main(args + ["--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert "wrote 200 problems" in capsys.readouterr().out
    loaded = load_problems(str(a))
    assert len(loaded) == 200 and {p.extra["steps"] for p in loaded} == {2, 3, 4}
    assert cli_main(["synth", "--n", "5", "--min-steps", "3", "--max-steps", "1", "--out", str(a)]) == 2


def test_every_step_changes_the_value(problems):
    for p in problems:
        values = [n["value"] for n in p.extra["graph"] if n["op"] != "given"]
        assert all(a != b for a, b in zip(values, values[1:])), p.id
