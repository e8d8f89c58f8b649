"""`distill-jax distill`: each method end to end on synthetic problems with the symbolic teacher and a tiny
student; stage markers, what each method's records promise, eval keys, resume, config errors, presets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers_train import TINY_OVERRIDES

from distill_jax import cli
from distill_jax import config as config_lib
from distill_jax.config import ConfigError, from_dict
from distill_jax.data.records import read_jsonl, write_jsonl
from distill_jax.data.synthetic import generate
from distill_jax.methods.method_config import MethodConfig
from distill_jax.methods.pipeline import run_method

STAGES = {"seed_problems", "teach", "records", "train", "eval", "report"}
N_TEST = 6


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Train/test problems and one tokenizer every run shares (trained on all the styles' texts). The runs share
    shapes, so after the first they load their train step and decoder from the session's compilation cache
    (tests/conftest.py)."""
    from distill_jax.methods.decompose import DECOMPOSE_PREFIX, SOLVE_PREFIX
    from distill_jax.methods.pad import REFINE_PREFIX
    from distill_jax.model.tokenizer import train_tokenizer
    from distill_jax.teacher.symbolic import SymbolicTeacher

    root = tmp_path_factory.mktemp("world")
    train, test = generate(24, 0, 1, 2, distractor_rate=0.3), generate(N_TEST, 1, 1, 2, distractor_rate=0.3)
    write_jsonl(root / "train.jsonl", (p.to_row() for p in train))
    write_jsonl(root / "test.jsonl", (p.to_row() for p in test))
    teacher = SymbolicTeacher()
    texts = [p.question for p in train + test]
    texts += [teacher.rationale(p, s) for p in train for s in ("cot", "pot", "eot", "kp_pot", "decomp")]
    texts += [f"[{s}] Program: Feedback: Error: Wrong answer: the program gives" for s in
              ("cot", "pot", "eot", "kp_pot", "dss", "dss:rationale", REFINE_PREFIX[1:-1],
               DECOMPOSE_PREFIX[1:-1], SOLVE_PREFIX[1:-1])]
    train_tokenizer(texts, root / "tokenizer", 200)
    return {"train": str(root / "train.jsonl"), "test": str(root / "test.jsonl"), "tokenizer": str(root / "tokenizer")}


def _config(world: dict, run: Path, method: str, **sections) -> MethodConfig:
    data = {
        "run_dir": str(run), "method": method,
        "teach": {"problems": world["train"], "teacher": {"kind": "symbolic", "error_rate": 0.1}},
        "train": {"run_dir": "-", "steps": 2, "batch_size": 8, "eval_every": 0, "checkpoint_every": 100,
                  "log_every": 1, "progress": False, "async_checkpoint": False,
                  "model": {"init": "scratch", "preset": "tiny", "overrides": dict(TINY_OVERRIDES),
                            "tokenizer": world["tokenizer"]},
                  "data": {"buckets": [[96, 64]], "eval_fraction": 0.0}},
        "eval": {"problems": [world["test"]], "decoding": {"max_new_tokens": 8, "batch_size": 8}},
        **sections,
    }
    return from_dict(MethodConfig, data)


def _run_and_rerun(cfg: MethodConfig) -> dict:
    """Run; check every stage marker; rerun and check that nothing was redone and the results are the same."""
    run = Path(cfg.run_dir)
    results = run_method(cfg, log=lambda _: None)
    stamps = {p.name: p.stat().st_mtime_ns for p in (run / "stages").iterdir()}
    assert {Path(n).stem for n in stamps} == STAGES
    assert json.loads((run / "results.json").read_text()) == results
    assert (run / "report.md").is_file() and cfg.method in (run / "report.md").read_text()
    assert run_method(cfg, log=lambda _: None) == results
    assert {p.name: p.stat().st_mtime_ns for p in (run / "stages").iterdir()} == stamps
    assert all(m["n"] == N_TEST and m["step"] == cfg.train.steps for m in results["eval"].values())
    return results


def _records(run: Path, name: str) -> list[dict]:
    return read_jsonl(run / "records" / f"{name}.jsonl")


def test_kpdd_keeps_only_checked_key_points(world, tmp_path):
    cfg = _config(world, tmp_path / "run", "kpdd", kpdd={"solution": "pot"})
    results = _run_and_rerun(cfg)
    run = tmp_path / "run"
    kept, taught = _records(run, "kp_pot"), read_jsonl(run / "rationales" / "r0" / "kp_pot.jsonl")
    rejects = read_jsonl(run / "rejects" / "kpdd" / "kp_pot.jsonl")
    assert kept and all(r["meta"]["kp_check"]["ok"] for r in kept)
    assert all(r["reason"].startswith("kpdd: ") and not r["meta"]["kp_check"]["ok"] for r in rejects)
    assert len(kept) + len(rejects) == len(taught)
    assert results["records"]["kept"] == {"kp_pot": len(kept)}
    assert set(results["eval"]) == {"test/kp_pot"}


def test_etd_mixes_styles_and_votes(world, tmp_path):
    cfg = _config(world, tmp_path / "run", "etd", etd={"weights": {"pot": 2.0, "eot": 1.0, "cot": 1.0}, "total": 40})
    results = _run_and_rerun(cfg)
    mixed = _records(tmp_path / "run", "etd")
    counts = {s: sum(r["style"] == s for r in mixed) for s in ("pot", "eot", "cot")}
    assert counts == {"pot": 20, "eot": 10, "cot": 10} == results["records"]["per_style"]
    assert set(results["eval"]) == {"test/pot", "test/eot", "test/cot", "test/vote"}


def test_dss_builds_label_and_rationale_tasks(world, tmp_path):
    cfg = _config(world, tmp_path / "run", "dss", dss={"rationale_weight": 0.5})
    results = _run_and_rerun(cfg)
    rows = _records(tmp_path / "run", "dss")
    label = [r for r in rows if r["meta"]["task"] == "label"]
    rationale = [r for r in rows if r["meta"]["task"] == "rationale"]
    assert len(label) == len(rationale) == results["records"]["tasks"]["label"] > 0
    assert all(r["rationale"] == f"The answer is {r['answer']}." and r["meta"]["weight"] == 1.0 for r in label)
    assert all(r["meta"]["weight"] == 0.5 and "The answer is" not in r["rationale"] for r in rationale)
    assert set(results["eval"]) == {"test/dss"}


@pytest.mark.slow
def test_pad_refine_records_and_stepwise_eval(world, tmp_path):
    cfg = _config(world, tmp_path / "run", "pad", pad={"per_program": 1, "tries": 3, "stepwise": True, "beam": 2,
                                                         "samples": 2, "max_steps": 4})
    results = _run_and_rerun(cfg)
    run = tmp_path / "run"
    refine, pot = _records(run, "refine"), _records(run, "pot")
    assert refine and len(refine) <= len(pot) == results["records"]["refine"]["programs"]
    for r in refine:
        pad = r["meta"]["pad"]
        assert r["meta"]["task"] == "refine" and r["style"] == "pot"
        assert r["meta"]["input"].startswith("[pot:refine] ") and pad["faulty_program"] in r["meta"]["input"]
        assert pad["feedback"] in r["meta"]["input"] and pad["faulty_program"].strip() != r["rationale"].strip()
    assert set(results["eval"]) == {"test/pot", "test/pot+stepwise"}
    stepwise = next((run / "train" / "student" / "eval").glob("*/test/pot+stepwise*/predictions.jsonl"))
    assert len(read_jsonl(stepwise)) == N_TEST


@pytest.mark.slow
def test_decompose_filters_and_scores_with_the_solvers(world, tmp_path):
    cfg = _config(world, tmp_path / "run", "decompose", decompose={"solver": "symbolic", "student_solver": True})
    results = _run_and_rerun(cfg)
    run = tmp_path / "run"
    kept, taught = _records(run, "decomposer"), read_jsonl(run / "rationales" / "r0" / "decomp.jsonl")
    rejects = read_jsonl(run / "rejects" / "decompose" / "decomposer.jsonl")
    assert kept and all(r["meta"]["decomp_filter"]["kept"] and r["meta"]["task"] == "decompose" for r in kept)
    assert all(r["rationale"].startswith("Q1: ") and "A1:" not in r["rationale"] for r in kept)
    assert all(not r["meta"]["decomp_filter"]["kept"] and r["reason"] for r in rejects)
    assert len(kept) + len(rejects) == len(taught)
    assert _records(run, "solver") and all(r["meta"]["input"].startswith("[decomp:solve] ")
                                           for r in _records(run, "solver"))
    assert set(results["eval"]) == {"test/decomp+symbolic", "test/decomp+student"}


@pytest.mark.parametrize("override, key", [
    ({"method": "kdpp"}, "method"),
    ({"kpdd": {"solutoin": "cot"}}, "kpdd.solutoin"),
    ({"etd": {"weights": {"xot": 1.0}}}, "etd.weights"),
    ({"eval": {"styles": ["nope"]}}, "eval.styles"),
    ({"method": "decompose", "decompose": {"solver": "teacher"}}, "decompose.solver"),
])
def test_bad_config_names_the_key(override, key):
    data = config_lib._deep_merge({"run_dir": "r", "method": "kpdd"}, override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(MethodConfig, data)


def test_cli_reports_a_config_error(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\nmethod: pad\npad: {{beem: 2}}\n")
    assert cli.main(["distill", "--config", str(path)]) == 2
    assert "pad.beem" in capsys.readouterr().err


def _write_config(world: dict, run: Path, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config_lib.to_dict(_config(world, run, "kpdd")), sort_keys=False))
    return path


def test_a_rerun_with_a_changed_key_reruns_what_reads_it(world, tmp_path, capsys):
    """Issue 12's reproduction (`distill --config configs/kpdd_synthetic.yaml train.steps=10`, then the same
    with `train.steps=12`): the second run used to skip every stage and report the first run's student while
    RUN/config.yaml claimed the new steps. Now train, eval and report rerun, and the record says what made what."""
    run = tmp_path / "run"
    path = _write_config(world, run, tmp_path / "kpdd.yaml")
    assert cli.main(["distill", "--config", str(path), "train.steps=2"]) == 0
    kept = {n: (run / "stages" / f"{n}.json").stat().st_mtime_ns for n in ("seed_problems", "teach", "records")}
    assert cli.main(["distill", "--config", str(path), "train.steps=3"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["train"]["step"] == 3 and all(m["step"] == 3 for m in results["eval"].values())
    assert "train.steps: 2 -> 3" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["config"]["train"]["steps"] == 3
    history = [yaml.safe_load(p.read_text()) for p in sorted((run / "configs").glob("*.yaml"))]
    assert [(h["config"]["train"]["steps"], h["stages"]) for h in history] == [
        (2, ["seed_problems", "teach", "records", "train", "eval", "report"]), (3, ["train", "eval", "report"])]
    assert {n: (run / "stages" / f"{n}.json").stat().st_mtime_ns for n in kept} == kept  # the teacher's work stays
    assert (run / "superseded" / "002" / "train" / "student" / "ckpt" / "2").is_dir()  # the old student too
    assert "](plots/loss.png)" in (run / "report.md").read_text()  # the student's loss curve (train/*/logs)

    # a change that would redo paid teacher calls is refused, naming the key and the way to accept it
    assert cli.main(["distill", "--config", str(path), "train.steps=3", "teach.teacher.kind=openai"]) == 2
    err = capsys.readouterr().err
    assert "teach.teacher.kind: \"symbolic\" -> \"openai\"" in err and "--restart-from teach" in err
    assert len(list((run / "configs").glob("*.yaml"))) == 2  # nothing was changed

    # `show` says all of it without reading the directory by hand
    assert cli.main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    train_marker = json.loads((run / "stages" / "train.json").read_text())
    for text in ("002  ", "ran: train, eval, report", train_marker["fingerprint"], "configs/002.yaml",
                 "train/student/ckpt: steps 3", "train/student: step 3 loss", "kp_pot", "superseded", "report.md"):
        assert text in out, text
    assert len([line for line in out.splitlines() if "configs/001.yaml" in line]) == 3  # seed, teach, records


@pytest.mark.parametrize("args, message", [
    (["train.stpes=3"], r"command line train.stpes=3: unknown config key 'train.stpes' \(did you mean 'steps'"),
    (["teach.limit=-3"], r"command line teach.limit=-3: teach.limit must be >= 1, got -3"),
    (["eval.limit=0"], r"command line eval.limit=0: eval.limit must be >= 1, got 0"),
    (["train.batch_size=12"], r"command line train.batch_size=12: train.batch_size 12 must be a multiple of "
                              r"data-parallel size 8"),
    (["teach.problems=EMPTY"], r"command line teach.problems=.*empty.jsonl holds no problems"),
    (["eval.problems=[EMPTY]"], r"command line eval.problems=.*empty.jsonl holds no problems: nothing to evaluate"),
])
def test_bad_sizes_fail_before_any_work_naming_key_and_source(world, tmp_path, capsys, args, message):
    import re

    run = tmp_path / "run"
    path = _write_config(world, run, tmp_path / "kpdd.yaml")
    (tmp_path / "empty.jsonl").write_text("")
    args = [a.replace("EMPTY", str(tmp_path / "empty.jsonl")) for a in args]
    assert cli.main(["distill", "--config", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert str(path) not in err  # an override's error is not blamed on the file
    assert not run.exists()  # before any work: no half-made run directory


def test_the_symbolic_teacher_on_a_benchmark_fails_before_any_work(world, tmp_path, capsys):
    """SVAMP has no computation graphs for the symbolic teacher to write from: said up front, naming the key."""
    run = tmp_path / "run"
    path = _write_config(world, run, tmp_path / "kpdd.yaml")
    assert cli.main(["distill", "--config", str(path), "teach.problems=svamp"]) == 2
    err = capsys.readouterr().err
    assert "teach.teacher.kind: the symbolic teacher writes rationales from the computation graph" in err, err
    assert not run.exists()


def test_a_file_key_error_names_the_file_and_line(world, tmp_path, capsys):
    path = _write_config(world, tmp_path / "run", tmp_path / "kpdd.yaml")
    lines = path.read_text().splitlines()
    at = lines.index("  steps: 2") + 1
    path.write_text("\n".join(lines[: at - 1] + ["  stpes: 2"] + lines[at:]) + "\n")
    assert cli.main(["distill", "--config", str(path)]) == 2
    assert f"{path}:{at}: unknown config key 'train.stpes'" in capsys.readouterr().err


CONFIG_CLASSES = {"fdd": "distill_jax.methods.fdd:FddConfig", "teach": "distill_jax.teacher.teach_config:TeachConfig",
                  "train": "distill_jax.train.config:TrainConfig", **{
                      m: "distill_jax.methods.method_config:MethodConfig" for m in ("kpdd", "etd", "pad", "dss", "decompose")}}


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_loads(path):
    import importlib

    prefix = path.stem.split("_")[0]
    assert prefix in CONFIG_CLASSES, f"{path.name}: no config class known for prefix {prefix!r}"
    module, name = CONFIG_CLASSES[prefix].split(":")
    cfg = config_lib.load(getattr(importlib.import_module(module), name), path)
    if isinstance(cfg, MethodConfig):
        assert cfg.method == prefix


def test_decompose_eval_scores_a_solved_plan_and_a_missing_one(world, tmp_path):
    """The eval's scoring path with real plans (a tiny student's plans are noise): the teacher's plan solved by
    the symbolic solver is right, an empty plan is scored wrong with its reason."""
    from distill_jax.data.problems import load_problems
    from distill_jax.evaluate.config import EvalConfig
    from distill_jax.evaluate.results import Benchmark
    from distill_jax.methods import pipeline_eval
    from distill_jax.methods.decompose import SymbolicSolver, subquestions
    from distill_jax.teacher.symbolic import SymbolicTeacher

    problems = load_problems(world["test"])
    texts = [SymbolicTeacher().rationale(p, "decomposer") for p in problems]
    plans = [subquestions(t) for t in texts]
    plans[0], texts[0] = [], "gibberish"
    cfg = EvalConfig(run_dir=str(tmp_path), benchmarks=(), styles=("decomp",))
    bench = Benchmark("test", Path(world["test"]), "x", problems)
    m = pipeline_eval._score_plans(cfg, 1, bench, "decomp+symbolic", plans, texts, SymbolicSolver(problems))
    assert (m["n"], m["correct"], m["no_answer"]) == (N_TEST, N_TEST - 1, 1)
    rows = read_jsonl(tmp_path / "eval" / "1" / "test" / "decomp+symbolic" / "predictions.jsonl")
    assert rows[0]["error"] == "no sub-questions" and all(r["correct"] for r in rows[1:])


def test_stepwise_beam_over_sampled_programs_prefers_the_grounded_one(world):
    """The proposer walks the samples' lines; the verifier keeps the program whose constants the question
    states over the more frequent one with a miscopied number."""
    from distill_jax.data.problems import load_problems
    from distill_jax.methods.pad_verify import stepwise_beam
    from distill_jax.methods.pipeline_eval import line_tree
    from distill_jax.reasoning.answers import answers_match
    from distill_jax.reasoning.styles import get_style
    from distill_jax.teacher.symbolic import SymbolicTeacher

    problem = next(p for p in load_problems(world["test"]) if "\n" in SymbolicTeacher().rationale(p, "pot"))
    good = SymbolicTeacher().rationale(problem, "pot")
    lines = good.splitlines()
    first_number = next(tok for tok in lines[0].replace("=", " ").split() if tok.isdigit())
    bad = "\n".join([lines[0].replace(first_number, str(int(first_number) + 7919), 1)] + lines[1:])
    propose = line_tree([bad, bad, good])
    assert [line for line, _ in propose(problem.question, [])] == [bad.splitlines()[0], lines[0]]
    best = stepwise_beam(propose, problem.question, beam=1, max_steps=len(lines) + 1)[0]
    assert best.finished and answers_match(get_style("pot").answer(best.program).answer, problem.answer)


def test_beam_proposals_carry_each_lines_log_probability(world):
    """A beam's token log-probabilities become per-line ones (the newline token ends its line, EOS counts
    toward the last); the proposer ranks next lines by them, and the verifier still overrules a likelier
    program with a miscopied number."""
    from distill_jax.data.problems import load_problems
    from distill_jax.methods.pad_verify import stepwise_beam
    from distill_jax.methods.pipeline_eval import beam_line_tree, line_logprobs
    from distill_jax.model.decode import BeamText
    from distill_jax.model.tokenizer import Tokenizer
    from distill_jax.teacher.symbolic import SymbolicTeacher

    tok = Tokenizer.load(world["tokenizer"])
    problem = next(p for p in load_problems(world["test"]) if SymbolicTeacher().rationale(p, "pot").count("\n") >= 2)
    good = SymbolicTeacher().rationale(problem, "pot")
    lines = good.splitlines()
    first_number = next(t for t in lines[0].replace("=", " ").split() if t.isdigit())
    bad = "\n".join([lines[0].replace(first_number, str(int(first_number) + 7919), 1)] + lines[1:])

    def beam(text: str, per_token: float) -> BeamText:
        ids = tok.encode(text)  # ends with EOS
        assert tok.decode(ids) == text
        return BeamText(text, 0.0, ids, [per_token] * len(ids))

    # per line: its tokens (newline included) times the per-token log-prob; EOS joins the last line
    found = line_logprobs(tok, beam(good, -0.5))
    assert [text for text, _ in found] == lines
    ids = [i for i in tok.encode(good) if i != tok.eos_id]
    ends = [n for n in range(len(ids)) if "\n" in tok.decode(ids[:n + 1])[len(tok.decode(ids[:n])):]]
    sizes = [e - s for s, e in zip([-1] + ends, ends)] + [len(ids) - 1 - ends[-1] + 1]
    assert [lp for _, lp in found] == pytest.approx([-0.5 * n for n in sizes])
    assert sum(lp for _, lp in found) == pytest.approx(-0.5 * len(tok.encode(good)))

    propose = beam_line_tree(tok, [beam(bad, -0.1), beam(good, -0.9)])
    first = propose(problem.question, [])
    assert [line for line, _ in first] == [bad.splitlines()[0], lines[0]] and first[0][1] > first[1][1]
    assert [line for line, _ in propose(problem.question, lines[:1])] == [lines[1]]
    best = stepwise_beam(propose, problem.question, beam=1, max_steps=len(lines) + 1)[0]
    assert best.finished and best.program == good + "\n"
