"""methods/stages.py on its own: what a rerun with changed inputs does (rerun, refuse, resume, supersede), the
config history, and that a code change alone (a key new to the config class, at its default) reruns nothing."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from distill_jax.config import RUNTIME
from distill_jax.methods.stages import RerunRefused, Stage, Stages, config_keys


@dataclass(frozen=True)
class Teach:
    temperature: float = 0.0
    concurrency: int = field(default=4, metadata=RUNTIME)


@dataclass(frozen=True)
class Cfg:
    steps: int = 2
    teach: Teach = field(default_factory=Teach)


@dataclass(frozen=True)
class CfgV2(Cfg):
    """The same config after a code change added a key."""

    new_knob: int = 7


def _pipeline(run: Path, cfg, calls: list[str], source: Path) -> list[Stage]:
    def work(name: str, out: str):
        def fn():
            calls.append(name)
            (run / out).parent.mkdir(parents=True, exist_ok=True)
            (run / out).write_text(f"{name} of {cfg}")
            return {"by": name}
        return fn

    return [
        Stage("copy", work("copy", "data/seed.txt"), files={"problems": source}, outputs=["data/seed.txt"]),
        Stage("teach", work("teach", "rationales/r0.txt"), keys=config_keys(cfg, "teach"),
              outputs=["rationales/r0.txt"], paid=True),
        Stage("train", work("train", "train/model.txt"), keys=config_keys(cfg, "steps"), outputs=["train"]),
        Stage("report", work("report", "report.md"), outputs=["report.md"]),
    ]


def _go(run: Path, cfg, source: Path, restart_from: str | None = None, logs: list | None = None) -> list[str]:
    calls: list[str] = []
    stages = Stages(run, (logs if logs is not None else []).append, restart_from)
    for d in stages.plan(_pipeline(run, cfg, calls, source), cfg):
        assert stages.run(d.stage.name) == {"by": d.stage.name}
    return calls


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text('{"id": 1}\n')
    return path


def test_a_changed_key_reruns_its_stage_and_the_later_ones(tmp_path, source):
    run = tmp_path / "run"
    assert _go(run, Cfg(), source) == ["copy", "teach", "train", "report"]
    assert _go(run, Cfg(), source) == []
    logs: list[str] = []
    assert _go(run, Cfg(steps=3), source, logs=logs) == ["train", "report"]
    assert any("train.steps" not in line and "steps: 2 -> 3" in line for line in logs)
    # the old outputs are kept, under the config number of the run that replaced them
    assert (run / "superseded" / "002" / "train" / "model.txt").read_text().startswith("train of Cfg(steps=2")
    assert (run / "train" / "model.txt").read_text().startswith("train of Cfg(steps=3")
    # config.yaml is the latest config; configs/NNN.yaml the history, each with the stages it ran
    history = [yaml.safe_load((run / "configs" / f"00{i}.yaml").read_text()) for i in (1, 2)]
    assert [h["config"]["steps"] for h in history] == [2, 3]
    assert history[1]["stages"] == ["train", "report"]
    assert yaml.safe_load((run / "config.yaml").read_text())["config"]["steps"] == 3
    marker = json.loads((run / "stages" / "train.json").read_text())
    assert marker["inputs"]["keys"] == {"steps": 3} and marker["config"] == "configs/002.yaml"
    assert json.loads((run / "stages" / "copy.json").read_text())["config"] == "configs/001.yaml"


def test_a_paid_stage_is_refused_then_accepted_with_restart_from(tmp_path, source):
    run = tmp_path / "run"
    _go(run, Cfg(), source)
    before = {p: p.read_text() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(RerunRefused) as refused:
        _go(run, Cfg(teach=Teach(temperature=0.7)), source)
    message = str(refused.value)
    assert "teach.temperature: 0.0 -> 0.7" in message and "--restart-from teach" in message
    assert {p: p.read_text() for p in run.rglob("*") if p.is_file()} == before  # nothing was touched
    # a changed source file upstream of the paid stage is refused too, naming the file
    source.write_text('{"id": 2}\n')
    with pytest.raises(RerunRefused, match=r"(?s)problems: .*problems.jsonl changed.*--restart-from copy"):
        _go(run, Cfg(), source)
    source.write_text('{"id": 1}\n')
    assert _go(run, Cfg(), source) == []  # back to the recorded inputs: nothing to do
    assert _go(run, Cfg(teach=Teach(temperature=0.7)), source, restart_from="teach") == ["teach", "train", "report"]
    with pytest.raises(Exception, match="--restart-from nope: not a stage"):
        _go(run, Cfg(), source, restart_from="nope")


def test_runtime_keys_and_code_only_changes_rerun_nothing(tmp_path, source):
    run = tmp_path / "run"
    _go(run, Cfg(), source)
    assert _go(run, Cfg(teach=Teach(concurrency=64)), source) == []  # how it runs, not what it makes
    assert _go(run, CfgV2(), source) == []  # a key the code added, at its default
    assert _go(run, CfgV2(new_knob=8), source) == []  # ...read by no stage
    assert not (run / "configs" / "002.yaml").exists()  # nothing ran: config.yaml still describes the results


def test_an_interrupted_stage_resumes_with_the_same_inputs_and_restarts_with_others(tmp_path, source):
    run = tmp_path / "run"
    _go(run, Cfg(), source)
    marker = run / "stages" / "train.json"
    doc = json.loads(marker.read_text())
    marker.write_text(json.dumps({k: v for k, v in doc.items() if k not in ("result", "finished")}
                                 | {"status": "started"}))
    (run / "stages" / "report.json").unlink()
    logs: list[str] = []
    assert _go(run, Cfg(), source, logs=logs) == ["train", "report"]
    assert any("stage train" in line and "(resumed)" in line for line in logs)
    assert not (run / "superseded").exists()  # resumed over its own partial outputs
    marker.write_text(json.dumps(json.loads(marker.read_text()) | {"status": "started"}))
    assert _go(run, Cfg(steps=5), source) == ["train", "report"]
    assert (run / "superseded" / "003" / "train" / "model.txt").is_file()  # 002 was the resume


def test_markers_from_before_fingerprints_are_kept(tmp_path, source):
    run = tmp_path / "run"
    _go(run, Cfg(), source)
    for path in (run / "stages").glob("*.json"):
        doc = json.loads(path.read_text())
        path.write_text(json.dumps({"result": doc["result"], "seconds": 0.1}))  # the old marker format
    assert _go(run, Cfg(), source) == []
    assert json.loads((run / "stages" / "teach.json").read_text())["inputs"]["keys"] == {"teach.temperature": 0.0}


def test_stages_a_new_config_no_longer_has_are_moved_aside(tmp_path, source):
    """Fewer FDD rounds, say: the dropped rounds' outputs must not stay in the report as this config's."""
    run = tmp_path / "run"
    _go(run, Cfg(), source)
    stages = Stages(run, lambda _: None)
    stages.run_all(_pipeline(run, Cfg(), [], source)[:3], Cfg())  # the same config without its report stage
    assert not (run / "report.md").exists() and not (run / "stages" / "report.json").exists()
    assert (run / "superseded" / "002" / "report.md").is_file()
    assert (run / "superseded" / "002" / "stages" / "report.json").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["stages"] == []
