"""The FDD pipeline end to end on a tiny student: stages, the easy/hard split, new problems, resume.

The run itself is the session fixture `fdd_reference` (tests/conftest.py), shared with the multi-process test."""
from __future__ import annotations

import json

import pytest

from distill_jax.config import from_dict
from distill_jax.methods.fdd import FddConfig, run_fdd


@pytest.mark.slow
def test_fdd_two_rounds_then_resume_does_nothing(fdd_reference):
    run, rounds = fdd_reference["run"], fdd_reference["rounds"]

    assert [r["round"] for r in rounds] == [0, 1]
    split = json.loads((run / "fdd" / "split_r0.json").read_text())
    assert sorted(split["easy"] + split["hard"]) == sorted(f"synth-0-{i:06d}" for i in range(24))
    # round 1's problems come from the split: a harder variant per easy one, a similar one per hard one,
    # each accepted only by agreeing teacher solutions, and each taught and trained on
    new = [json.loads(line) for line in (run / "problems" / "r1" / "all.jsonl").read_text().splitlines()]
    assert len(new) == 24 and all(p["fdd"]["votes"][p["answer"]] >= 2 for p in new)
    assert {p["fdd"]["kind"] for p in new} == ({"harder"} if split["easy"] else set()) | (
        {"similar"} if split["hard"] else set())
    assert (run / "rationales" / "r1" / "pot.jsonl").is_file() and (run / "hf" / "r0" / "config.json").is_file()
    assert rounds[1]["accuracy"]["test/pot"]["n"] == 8
    assert rounds[1]["accuracy"]["seed_hard_r0/pot"]["n"] == len(split["hard"])
    assert json.loads((run / "fdd" / "rounds.json").read_text()) == rounds

    # every stage has its marker: a rerun redoes nothing and reports the same rounds
    stamps = {p.name: p.stat().st_mtime_ns for p in (run / "stages").iterdir()}
    assert set(stamps) >= {"seed_problems.json", "r0_teach.json", "r0_train.json", "r0_eval.json",
                           "r1_new_problems.json", "r1_teach.json", "r0_export.json", "r1_train.json"}
    cfg = from_dict(FddConfig, fdd_reference["config"])
    assert run_fdd(cfg, log=lambda _: None) == rounds
    assert {p.name: p.stat().st_mtime_ns for p in (run / "stages").iterdir()} == stamps


@pytest.mark.slow
def test_fdd_rerun_plan_follows_the_changed_keys(fdd_reference):
    """What a rerun with another config would redo, planned without writing (writer=False): only the stages a
    change reaches, and a change to what the teacher answers is refused while the teacher is a paid one."""
    from distill_jax.config import _deep_merge
    from distill_jax.methods.fdd import fdd_stages
    from distill_jax.methods.stages import RerunRefused, Stages

    run = fdd_reference["run"]

    def rerun(**changes) -> list[str]:
        cfg = from_dict(FddConfig, _deep_merge(fdd_reference["config"], changes))
        stages = Stages(run, lambda _: None, writer=False)
        return [d.stage.name for d in stages.plan(fdd_stages(cfg, run, stages), cfg) if d.action != "skip"]

    assert rerun() == []
    assert rerun(train={"progress": True, "checkpoint_every": 7}) == []  # how training runs, not what it makes
    assert rerun(round_steps=[3, 4]) == ["r1_train", "r1_eval", "r1_split"]
    assert rerun(eval={"limit": 4})[:3] == ["r0_eval", "r0_split", "r1_new_problems"]
    with pytest.raises(RerunRefused, match=r"(?s)stage r0_teach: teach\.teacher\.kind.*--restart-from r0_teach"):
        rerun(teach={"teacher": {"kind": "openai"}})
