"""The demo pipeline end to end at a toy size: every student, the FDD round and its control, the report, resume.

The students are far too small and short-trained to learn anything; what is checked is that every stage ran,
that the numbers in the report are the ones the evaluations wrote, and that a rerun redoes nothing.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from helpers_train import TINY_OVERRIDES

from distill_jax.methods.demo import STUDENTS, TESTS, DemoSize, run_demo
from distill_jax.methods.demo_report import compare, findings, write_demo_report

pytestmark = pytest.mark.slow

SIZE = DemoSize(n_train=32, n_test=6, steps=2, fdd_steps=1, batch_size=8, max_new_tokens=8, vocab_size=200, buckets=1,
                model=dict(TINY_OVERRIDES))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    run = tmp_path_factory.mktemp("demo")
    logs: list[str] = []
    return run, run_demo(run, SIZE, seed=0, log=logs.append), logs


def test_every_student_is_scored_on_every_test_set(demo):
    run, results, _ = demo
    for name, styles in STUDENTS.items():
        asked = styles + (("vote",) if len(styles) > 1 else ())
        assert {f"{t}/{s}" for t in TESTS for s in asked} == set(results["students"][name])
    # the PoT student is FDD's round 0: one training run, not two
    assert not (run / "students" / "pot").exists() and (run / "fdd" / "train" / "r0" / "ckpt").is_dir()
    for name in STUDENTS:
        if name != "pot":
            assert (run / "students" / name / "ckpt").is_dir()
    n_test = json.loads((run / "stages" / "problems.json").read_text())["result"]
    assert all(results["students"]["cot"][f"{t}/cot"]["n"] == len(Path(n_test[t]).read_text().splitlines()) for t in TESTS)


def test_fdd_round_control_and_hard_split(demo):
    run, results, _ = demo
    assert set(results["fdd"]) == {"r0", "r1", "control"}
    hard = json.loads((run / "fdd" / "fdd" / "split_r0.json").read_text())["hard"]
    hard_rows = (run / "problems" / "hard_r0.jsonl").read_text().splitlines()
    assert [json.loads(r)["id"] for r in hard_rows] == hard
    # round 0 failed every hard problem by definition; every row is scored on the same hard split
    assert results["fdd"]["r0"]["hard_r0/pot"] == {"accuracy": 0.0, "n": len(hard)}
    assert results["fdd"]["control"]["hard_r0/pot"]["n"] == results["fdd"]["r1"]["hard_r0/pot"]["n"] == len(hard)
    control_cfg = (run / "fdd_control" / "config.yaml").read_text()
    assert str(run / "fdd" / "hf" / "r0") in control_cfg and "steps: 1" in control_cfg


def test_report_and_rerun(demo, tmp_path):
    run, results, logs = demo
    report = write_demo_report(run, results, SIZE, "distill-jax demo --out X", 1.0).read_text()
    assert findings(results) in report and "(plots/students.png)" in report
    assert (run / "plots" / "students.png").stat().st_size > 0 and (run / "fdd" / "report.md").is_file()
    pct = results["students"]["mixed"]["test_id/vote"]
    assert f"| mixed | vote | {100 * pct['accuracy']:.1f}% ({round(pct['accuracy'] * pct['n'])}/{pct['n']})" in report
    again: list[str] = []
    assert run_demo(run, SIZE, seed=0, log=again.append) == results
    assert again and all("done earlier, skipped" in line for line in again)


def test_compare_reports_noise_not_findings():
    assert compare({"accuracy": 0.52, "n": 100}, {"accuracy": 0.50, "n": 100})[0] == "within noise"
    assert compare({"accuracy": 0.60, "n": 400}, {"accuracy": 0.40, "n": 400})[0] == "yes"
    assert compare({"accuracy": 0.10, "n": 400}, {"accuracy": 0.40, "n": 400})[0] == "no"


def test_another_size_reruns_only_what_it_reaches(demo):
    """A longer FDD round (size.fdd_steps) reaches the FDD stage and what reads it; inside FDD, round 0 and the
    round-1 data stay. Planned without writing (writer=False), so the run is left as it was."""
    from distill_jax.methods.demo import DemoRun, _fdd_config, demo_stages
    from distill_jax.methods.fdd import fdd_stages
    from distill_jax.methods.stages import Stages

    run = demo[0]
    size = dataclasses.replace(SIZE, fdd_steps=2)
    stages = Stages(run, lambda _: None, writer=False)
    plan = stages.plan(demo_stages(run, size, 0, lambda _: None, stages), DemoRun(size, 0))
    assert [d.stage.name for d in plan if d.action != "skip"] == [
        "fdd", "eval_pot", "train_fdd_control", "hard_r0", "eval_fdd_control"]
    assert "size.fdd_steps: 1 -> 2" in plan[[d.stage.name for d in plan].index("fdd")].why
    fdd_cfg = _fdd_config(run, size, stages.result("problems"), 0, stages.result("buckets"))
    inner = Stages(run / "fdd", lambda _: None, writer=False)
    todo = [d.stage.name for d in inner.plan(fdd_stages(fdd_cfg, run / "fdd", inner), fdd_cfg) if d.action != "skip"]
    assert todo == ["r1_train", "r1_eval", "r1_split"]
