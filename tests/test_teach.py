"""`teach` end to end: the symbolic and gold teachers offline, and an LLM teacher behind the real fake server
(scripted, LLM-style replies) for caching, resume after kill -9, the budget cap, secrets and failures."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from distill_jax.config import ConfigError
from distill_jax.data import synthetic
from distill_jax.data.problems import Problem
from distill_jax.data.records import check_rationale_record, read_jsonl, write_jsonl
from distill_jax.testing.fake_server import FakeServer
from distill_jax.teacher.fdd_problems import new_problems
from distill_jax.teacher.generate import teach
from distill_jax.teacher.teach_config import FddConfig, TeachConfig, TeacherConfig

SECRET = "sk-test-DISTILLJAXFAKEKEY0123456789"
KEY_ENV = "DISTILL_JAX_TEST_KEY"


def _files(run: Path, round_: int, style: str) -> tuple[list[dict], list[dict]]:
    return (read_jsonl(run / "rationales" / f"r{round_}" / f"{style}.jsonl"),
            read_jsonl(run / "rejects" / f"r{round_}" / f"{style}.jsonl"))


def _check_records(kept: list[dict], rejected: list[dict]) -> None:
    for i, row in enumerate(kept):
        check_rationale_record(row, f"kept:{i}")
        assert row["correct"] is True and row["prediction"] is not None
        assert row["teacher"]["prompt_version"] and "usage" in row["teacher"]
    for i, row in enumerate(rejected):
        assert row["correct"] is False and row["reason"], f"reject {i} has no reason"
    pairs = [(r["problem_id"], r["rationale"]) for r in kept]
    assert len(pairs) == len(set(pairs)), "duplicate rationales for a problem"


# --- offline teachers ---------------------------------------------------------------------------------
def test_symbolic_teacher_end_to_end(tmp_path):
    problems_path = tmp_path / "problems.jsonl"
    write_jsonl(problems_path, [p.to_row() for p in synthetic.generate(16, seed=3, max_steps=3)])
    cfg = TeachConfig(problems=str(problems_path), run_dir=str(tmp_path / "run"), styles=("cot", "pot", "eot"),
                      samples=2, round=1, teacher=TeacherConfig(kind="symbolic", error_rate=0.3), seed=5)
    summary = teach(cfg)
    run = Path(cfg.run_dir)
    saved = json.loads((run / "teacher" / "summary.json").read_text())
    resolved = yaml.safe_load((run / "teacher" / "config_r1.yaml").read_text())  # one file per round
    assert resolved["config"]["teacher"]["kind"] == "symbolic"
    for style in cfg.styles:
        kept, rejected = _files(run, 1, style)
        _check_records(kept, rejected)
        stats = summary.styles[style]
        assert stats.kept == len(kept) > 8 and sum(stats.rejected.values()) == len(rejected)
        # error_rate 0.3: deliberate mistakes are caught by verification, not kept.
        assert stats.rejected.get("wrong answer", 0) + stats.rejected.get("no answer", 0) >= 2
        assert stats.kept + sum(stats.rejected.values()) + stats.duplicates == stats.jobs == 32
        assert stats.duplicates > 0  # two samples of a right rationale are the same text: kept once
        assert saved["styles"][style]["kept"] == stats.kept
        assert all(r["round"] == 1 and r["style"] == style for r in kept + rejected)


def test_symbolic_fdd_problems_are_voted(tmp_path):
    problems = synthetic.generate(12, seed=4, max_steps=2)
    cfg = TeachConfig(problems="unused", run_dir=str(tmp_path / "run"), styles=("pot",), round=2,
                      teacher=TeacherConfig(kind="symbolic", error_rate=0.2), fdd=FddConfig(samples=3, agree=2))
    made = new_problems(problems, "harder", cfg)
    rejected = read_jsonl(tmp_path / "run" / "rejects" / "r2" / "fdd_harder.jsonl")
    assert len(made) + len(rejected) == 12 and len(made) >= 6
    for p in made:
        vote = p.extra["fdd"]
        assert vote["votes"][p.answer] >= 2 and vote["parent"].startswith("synth-")
    assert read_jsonl(tmp_path / "run" / "problems" / "r2" / "fdd_harder.jsonl")[0]["id"] == made[0].id


def test_gold_teacher_on_a_gsm8k_train_sample(tmp_path, data_dir):
    cfg = TeachConfig(problems="gsm8k_train", data_dir=str(data_dir), limit=30, run_dir=str(tmp_path / "run"),
                      styles=("cot", "pot", "eot"), teacher=TeacherConfig(kind="gold"))
    summary = teach(cfg)
    for style in cfg.styles:
        kept, rejected = _files(tmp_path / "run", 0, style)
        _check_records(kept, rejected)
        assert len(kept) + len(rejected) == 30
        assert len(kept) >= 27, (style, summary.styles[style])
        assert all(r["reason"].split(":")[0] in ("no annotation", "last annotation not gold") for r in rejected)


def test_empty_problems_file_is_an_error_naming_it_before_any_work(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cfg = TeachConfig(problems=str(empty), run_dir=str(tmp_path / "run"), teacher=TeacherConfig(kind="symbolic"))
    with pytest.raises(ConfigError, match=f"problems: {re.escape(str(empty))} holds no problems"):
        teach(cfg)
    assert not (tmp_path / "run").exists()


def test_symbolic_teacher_on_a_benchmark_says_it_needs_synthetic_rows(tmp_path, data_dir):
    cfg = TeachConfig(problems="svamp", data_dir=str(data_dir), limit=5, run_dir=str(tmp_path / "run"),
                      teacher=TeacherConfig(kind="symbolic"))
    with pytest.raises(ConfigError, match="teacher.kind.*synthetic") as refused:
        teach(cfg)
    assert "svamp" in str(refused.value) and "gold" in str(refused.value)
    assert not (tmp_path / "run").exists()


# --- an LLM teacher behind the fake server ----------------------------------------------------------------
QUESTION = re.compile(r"Tom has (\d+) apples and buys (\d+) more")


def _problems(n: int) -> list[Problem]:
    return [Problem(f"apples-{i:03d}", f"Tom has {i + 2} apples and buys {3 * i + 1} more. How many apples does "
                    f"Tom have now?", str(4 * i + 3), "test") for i in range(n)]


def llm_reply(body: dict, index: int) -> str:
    """Replies the way chat models write them: chatter, fences, markdown, explanations after the answer."""
    system = body["messages"][0]["content"]
    question = body["messages"][-1]["content"]
    m = QUESTION.search(question)
    a, b = int(m.group(1)), int(m.group(2))
    total = a + b + (1 if a % 7 == 0 else 0)  # some wrong answers, for verification to reject
    if a % 11 == 0:
        return "I'm sorry, but I can't help with that."
    if "simpler sub-questions" in system:  # decomposition, step 1: the plan
        return "Here is a plan:\n1. How many apples does Tom buy?\n2. How many apples does Tom have now?"
    if "answering the given sub-questions" in system:  # step 2: the answers
        return (f"Q1: How many apples does Tom buy?\nA1: Tom buys {b} apples.\nQ2: How many apples does Tom have "
                f"now?\nA2: {a} + {b} = {total}.\n\nThe answer is {total}.")
    if "Python programs" in system:
        if a % 2:
            return (f"Sure! Here is a Python program that solves it:\n\n```python\napples_start = {a}\n"
                    f"apples_bought = {b}\nans = apples_start + apples_bought{' + 1' if a % 7 == 0 else ''}\n"
                    f"print(ans)\n```\n\nThe program adds the apples Tom buys to the ones he has.")
        return f"start = {a}\nans = start + {total - a}"
    return (f"Sure! Let's think step by step.\n\n**Step 1:** Tom has {a} + {b} = {total} apples.\n\n"
            f"The answer is {total}. Hope this helps!")


@pytest.fixture()
def server():
    with FakeServer(latency_s=0.0, reply=llm_reply, api_key=SECRET) as s:
        yield s


@pytest.fixture()
def secret_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def _llm_cfg(tmp_path: Path, url: str, **teacher: object) -> dict:
    problems_path = tmp_path / "problems.jsonl"
    write_jsonl(problems_path, [p.to_row() for p in _problems(30)])
    return {"problems": str(problems_path), "run_dir": str(tmp_path / "run"), "styles": ["pot", "cot"],
            "chunk": 8, "teacher": {"kind": "openai", "base_url": url, "model": "fake-model", "api_key_env": KEY_ENV,
                                    "concurrency": 2, "max_retries": 1, "backoff_base_s": 0.01,
                                    "prices": {"fake-model": [100.0, 200.0]}, **teacher}}


def _load(doc: dict) -> TeachConfig:
    from distill_jax.config import from_dict

    return from_dict(TeachConfig, doc)


def _assert_no_secret(run: Path, *texts: str) -> None:
    for path in run.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for text in texts:
        assert SECRET not in text


def test_llm_teach_parses_verifies_and_reruns_from_cache(tmp_path, server, secret_env, capsys):
    cfg = _load(_llm_cfg(tmp_path, server.url))
    summary = teach(cfg, progress=True)
    run = Path(cfg.run_dir)
    kept, rejected = _files(run, 0, "pot")
    _check_records(kept, rejected)
    assert len(kept) + len(rejected) == 30
    assert {r["reason"].split(":")[0] for r in rejected} == {"wrong answer", "parse"}
    assert all("```" not in r["rationale"] and "Sure" not in r["rationale"] and "print" not in r["rationale"]
               for r in kept)
    assert any(r["raw"].startswith("I'm sorry") for r in rejected)
    cot_kept, _ = _files(run, 0, "cot")
    assert all(r["rationale"].endswith(f"The answer is {r['answer']}.") for r in cot_kept)
    assert summary.usage["requests_sent"] == summary.usage["requests_reached"] == server.stats()["requests"] == 60
    assert summary.usage["cost_usd"] > 0
    # one client session for the whole run: one preflight, one connection pool (concurrency 2)
    assert [s.path for s in server.seen].count("/v1/models") == 1 and server.stats()["connections"] <= 2
    before = {p: p.read_bytes() for p in run.rglob("*.jsonl")}

    again = teach(cfg)
    assert server.stats()["requests"] == 60 and again.usage["requests_sent"] == 0
    assert again.usage["cached_hits"] == 60
    assert {p: p.read_bytes() for p in run.rglob("*.jsonl")} == before
    _assert_no_secret(run, *capsys.readouterr())


def test_llm_decomposition_plans_then_solves(tmp_path, server, secret_env):
    doc = _llm_cfg(tmp_path, server.url)
    doc["styles"] = ["decomp"]
    summary = teach(_load(doc))
    kept, rejected = _files(tmp_path / "run", 0, "decomp")
    _check_records(kept, rejected)
    assert server.stats()["requests"] == 30 + 28  # plans for all, solves for those with a parsable plan
    assert len(kept) == 24 and summary.styles["decomp"].rejected == {"wrong answer": 4, "parse": 2}
    first = kept[0]
    a, b = map(int, QUESTION.search(first["question"]).groups())
    assert first["rationale"] == (f"Q1: How many apples does Tom buy?\nA1: Tom buys {b} apples.\n"
                                  f"Q2: How many apples does Tom have now?\nA2: {a} + {b} = {a + b}.\n"
                                  f"The answer is {a + b}.")
    assert first["teacher"]["prompt_version"].startswith("decomp_plan@v1#") and "+decomp_solve@v1#" in \
        first["teacher"]["prompt_version"]
    assert first["teacher"]["usage"]["prompt_tokens"] > 0


def test_batch_api_sends_one_batch_per_style_and_reruns_from_cache(tmp_path, server, secret_env):
    doc = _llm_cfg(tmp_path, server.url, batch_api=True, batch_poll_s=0.02)
    doc["styles"] = ["pot"]
    summary = teach(_load(doc))
    kept, rejected = _files(tmp_path / "run", 0, "pot")
    assert len(kept) + len(rejected) == 30 and server.stats()["batches_created"] == 1
    assert summary.usage["results_ok"] == 30
    assert teach(_load(doc)).usage["cached_hits"] == 30 and server.stats()["batches_created"] == 1


def _cli(cfg_path: Path, *extra: str, env_key: str | None = SECRET) -> list[str]:
    return [sys.executable, "-m", "distill_jax.cli", "teach", "--config", str(cfg_path), "--no-progress", *extra]


def _env(key: str | None = SECRET) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    if key is not None:
        env[KEY_ENV] = key
    return env


def test_kill_9_mid_run_then_resume_pays_nothing_twice(tmp_path):
    with FakeServer(latency_s=0.15, reply=llm_reply, api_key=SECRET) as server:
        doc = _llm_cfg(tmp_path, server.url)
        doc["styles"] = ["pot"]
        cfg_path = tmp_path / "teach.yaml"
        cfg_path.write_text(yaml.safe_dump(doc))
        proc = subprocess.Popen(_cli(cfg_path), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while server.stats()["requests"] < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        out1, err1 = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        sent_before = server.stats()["requests"]
        assert 10 <= sent_before < 30

        done = subprocess.run(_cli(cfg_path), env=_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        received = Counter(server.stats()["received"])
        # Only what was in flight at the kill (at most `concurrency` requests) can have been paid twice.
        assert len(received) == 30 and sum(c - 1 for c in received.values()) <= 2
        run = tmp_path / "run"
        kept, rejected = _files(run, 0, "pot")
        ids = [r["problem_id"] for r in kept + rejected]
        assert len(ids) == len(set(ids)) == 30

        third = subprocess.run(_cli(cfg_path), env=_env(), capture_output=True, text=True, timeout=60)
        assert third.returncode == 0 and Counter(server.stats()["received"]) == received
        assert json.loads((run / "teacher" / "summary.json").read_text())["usage"]["requests_sent"] == 0
        _assert_no_secret(run, out1, err1, done.stdout, done.stderr, third.stdout, third.stderr)


def test_budget_cap_stops_at_the_cap_and_keeps_what_was_paid(tmp_path, server, secret_env):
    doc = _llm_cfg(tmp_path, server.url, budget_usd=0.4)
    doc["styles"] = ["pot"]
    cfg = _load(doc)
    summary = teach(cfg)
    assert summary.stopped and summary.stopped.startswith("budget")
    assert 0 < summary.usage["cost_usd"] <= 0.4
    kept, rejected = _files(Path(cfg.run_dir), 0, "pot")
    paid = sum(server.stats()["served"].values())
    assert 0 < paid < 30 and len(kept) + len(rejected) == paid == summary.usage["results_ok"]

    doc["teacher"]["budget_usd"] = 0.0  # lift the cap: the rest is sent, nothing twice
    teach(_load(doc))
    kept, rejected = _files(Path(cfg.run_dir), 0, "pot")
    assert len(kept) + len(rejected) == 30 and max(server.stats()["received"].values()) == 1


def test_refused_key_fails_at_the_preflight_before_any_request(tmp_path, server):
    cfg_path = tmp_path / "teach.yaml"
    cfg_path.write_text(yaml.safe_dump(_llm_cfg(tmp_path, server.url)))
    wrong = SECRET[:-4] + "XXXX"
    done = subprocess.run(_cli(cfg_path), env=_env(wrong), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "auth" in done.stderr and "401" in done.stderr and KEY_ENV in done.stderr
    assert "Traceback" not in done.stderr and wrong not in done.stderr + done.stdout
    assert server.stats()["requests"] == 0 and [s.path for s in server.seen] == ["/v1/models"]
    assert not (tmp_path / "run" / "teacher" / "summary.json").exists()


def test_auth_failure_mid_run_stops_and_is_reported_without_traceback(tmp_path, server):
    cfg_path = tmp_path / "teach.yaml"
    cfg_path.write_text(yaml.safe_dump(_llm_cfg(tmp_path, server.url, preflight=False)))
    wrong = SECRET[:-4] + "XXXX"
    done = subprocess.run(_cli(cfg_path), env=_env(wrong), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "auth" in done.stderr and "401" in done.stderr and "Traceback" not in done.stderr
    assert wrong not in done.stderr + done.stdout  # the server echoes the key in its 401 message
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file() and wrong.encode() in p.read_bytes()]
    summary = json.loads((tmp_path / "run" / "teacher" / "summary.json").read_text())
    assert summary["stopped"].startswith("auth") and "pot" in summary["styles"] and "cot" not in summary["styles"]
    assert server.stats()["requests"] <= 2  # what was in flight (concurrency 2), not the whole run


def test_dry_run_prints_the_estimate_and_sends_nothing(tmp_path, server, secret_env, capsys):
    from distill_jax.cli import main

    cfg_path = tmp_path / "teach.yaml"
    cfg_path.write_text(yaml.safe_dump(_llm_cfg(tmp_path, server.url)))
    assert main(["teach", "--config", str(cfg_path), "--dry-run", "styles=[pot,decomp]"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "decomp" in out and "total" in out
    assert server.stats()["requests"] == 0
    assert not (tmp_path / "run").exists()  # a dry run leaves nothing behind


def fdd_reply(body: dict, index: int) -> str:
    question = body["messages"][-1]["content"]
    if question.startswith("Problem:"):  # generation: a harder variant, with the generator's answer
        a, b = map(int, QUESTION.search(question).groups())
        return f"New problem: Tom has {a * 2} apples and buys {b} more. How many apples does Tom have now?\n" \
               f"Solution: {a * 2} + {b} = {a * 2 + b}.\nAnswer: {a * 2 + b}"
    a, b = map(int, QUESTION.search(question).groups())
    # Solvers disagree on problems with a multiple of 3 in them: those must not be accepted.
    return f"ans = {a} + {b} + {index if a % 3 == 0 else 0}"


def test_llm_fdd_problems_need_agreeing_samples(tmp_path, secret_env):
    with FakeServer(reply=fdd_reply, api_key=SECRET) as server:
        doc = _llm_cfg(tmp_path, server.url)
        doc["fdd"] = {"samples": 3, "agree": 2}
        cfg = _load(doc)
        made = new_problems(_problems(6), "harder", cfg)
        rejected = read_jsonl(tmp_path / "run" / "rejects" / "r0" / "fdd_harder.jsonl")
        a_values = [2 * (i + 2) for i in range(6)]
        assert len(made) == sum(1 for a in a_values if a % 3) and len(rejected) == 6 - len(made)
        for p in made:
            a, b = map(int, QUESTION.search(p.question).groups())
            assert p.answer == str(a + b) and p.extra["fdd"]["votes"] == {str(a + b): 3}
        assert all(r["reason"].startswith("no agreement") for r in rejected)
        requests = server.stats()["requests"]
        assert new_problems(_problems(6), "harder", cfg) == made and server.stats()["requests"] == requests


def test_the_teacher_side_imports_no_jax():
    code = ("import sys, distill_jax.teacher.generate, distill_jax.teacher.gold, distill_jax.teacher.parse, "
            "distill_jax.teacher.prompts, distill_jax.reasoning.styles; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('jax', 'flax')], 'JAX imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
