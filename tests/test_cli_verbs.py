"""The verbs agree with each other: every long-running one takes --no-progress, a verb with a config lists its
dotted keys (from the config dataclasses, with defaults) under --help, and `train` checks the batch against
the devices before it writes anything."""
from __future__ import annotations

import pytest
import yaml
from helpers_train import train_config_dict, write_rationales

from distill_jax import cli

LONG_RUNNING = ("synth", "verify", "teach", "train", "generate", "eval", "fdd", "demo", "distill")


def _help(capsys, verb: str) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([verb, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("verb", LONG_RUNNING)
def test_every_long_running_verb_takes_no_progress(capsys, verb):
    assert "--no-progress" in _help(capsys, verb)


@pytest.mark.parametrize("verb, lines", [
    ("distill", ["train.steps", "= 1", "exactly one of steps / epochs", "eval.limit", "= None", ">= 1",
                 "teach.teacher.kind", "= 'symbolic'", "run_dir", "(required)"]),
    ("fdd", ["rounds", "= 1", "round_steps", "eval.limit", "teach.fdd.agree"]),
    ("train", ["optim.learning_rate", "= 0.001", "model.init", "= 'scratch'", "steps", "= None"]),
    ("eval", ["decoding.max_new_tokens", "= 256", "limit", "benchmarks", "= ['gsm8k_test']"]),
    ("teach", ["teacher.model", "= 'gpt-4o-mini'", "limit", "samples"]),
])
def test_help_lists_the_dotted_keys_with_defaults(capsys, verb, lines):
    out = _help(capsys, verb)
    keys = out[out.index("config keys"):]
    assert all(line in keys for line in lines), keys
    row = next(r for r in keys.splitlines() if r.split() and r.split()[0] == lines[0])
    assert lines[1] in row  # the default sits on the key's own line


def test_train_checks_the_batch_against_the_devices_before_any_file(tmp_path, capsys):
    """Issue 12: batch_size not divisible by the devices was found after the tokenizer was trained, leaving a
    half-made run directory. 8 devices here (scripts/test.sh), batch 12."""
    rationales = write_rationales(tmp_path / "r.jsonl", 8)
    cfg = train_config_dict(tmp_path / "run", rationales, tmp_path / "unused")
    cfg["model"].pop("tokenizer")  # a tokenizer would be trained into RUN/tokenizer first
    cfg["model"]["tokenizer_vocab_size"] = 200
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["train", "--config", str(path), "batch_size=12"]) == 2
    assert "batch_size 12 must be a multiple of data-parallel size 8" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
