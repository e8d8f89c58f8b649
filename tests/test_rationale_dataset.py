"""Rationales as a Hugging Face dataset: the card `teach` writes for every round, `load_dataset` on the round
directory, and `distill-jax export --dataset` (one Parquet file per style and round, with its card). Offline."""
from __future__ import annotations

from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from distill_jax.cli import main as cli_main
from distill_jax.data import synthetic
from distill_jax.data.rationale_dataset import CARD, features, write_card, yaml_features
from distill_jax.data.records import DataError, read_jsonl, write_jsonl
from distill_jax.teacher.generate import teach
from distill_jax.teacher.teach_config import TeacherConfig, TeachConfig

STYLES = ("pot", "cot")


def _front_matter(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A symbolic teach run with two rounds (FDD-like), mistakes included so that rejects exist."""
    root = tmp_path_factory.mktemp("dataset")
    write_jsonl(root / "problems.jsonl", [p.to_row() for p in synthetic.generate(12, seed=1, max_steps=2)])
    for round_ in (0, 1):
        teach(TeachConfig(problems=str(root / "problems.jsonl"), run_dir=str(root / "run"), styles=STYLES,
                          round=round_, teacher=TeacherConfig(kind="symbolic", error_rate=0.3), seed=round_))
    return root / "run"


def test_teach_writes_a_card_per_round(run) -> None:
    for round_ in ("r0", "r1"):
        card, body = _front_matter(run / "rationales" / round_ / CARD)
        rows = {s: read_jsonl(run / "rationales" / round_ / f"{s}.jsonl") for s in STYLES}
        rejected = {s: len(read_jsonl(run / "rejects" / round_ / f"{s}.jsonl")) for s in STYLES}
        assert card["license"] == "unknown"  # the user's to set
        assert card["configs"] == [{"config_name": "default", "data_files": [
            {"split": "cot", "path": "cot.jsonl"}, {"split": "pot", "path": "pot.jsonl"}]}]
        (info,) = card["dataset_info"]
        assert info["features"] == yaml_features()
        assert {s["name"]: s["num_examples"] for s in info["splits"]} == {s: len(r) for s, r in rows.items()}
        for style in STYLES:
            version = rows[style][0]["teacher"]["prompt_version"]
            line = next(ln for ln in body.splitlines() if f"| {style} |" in ln)
            assert f"| {len(rows[style])} | {rejected[style]} |" in line and version in line
            assert rows[style][0]["teacher"]["model"] in line
        assert "licence" in body.lower()


def test_round_dirs_load_with_datasets(run, tmp_path) -> None:
    round_dir = run / "rationales" / "r0"
    n = {s: len(read_jsonl(round_dir / f"{s}.jsonl")) for s in STYLES}
    flat = datasets.load_dataset("json", data_dir=str(round_dir), cache_dir=str(tmp_path / "cache"))
    assert flat["train"].num_rows == sum(n.values())
    by_style = datasets.load_dataset(str(round_dir), cache_dir=str(tmp_path / "cache2"))  # reads the card
    assert {k: v.num_rows for k, v in by_style.items()} == n
    row = by_style["pot"][0]
    assert row["style"] == "pot" and isinstance(row["meta"], dict) and row["meta"]["teacher_kind"] == "symbolic"


def test_export_dataset_writes_parquet_per_style_and_round_with_a_card(run, tmp_path, capsys) -> None:
    out = tmp_path / "export"
    assert cli_main(["export", "--dataset", str(run), "--out", str(out)]) == 0
    assert "r0: cot" in capsys.readouterr().out
    card, _ = _front_matter(out / CARD)
    assert [c["config_name"] for c in card["configs"]] == ["r0", "r1"]
    for round_ in ("r0", "r1"):
        for style in STYLES:
            source = read_jsonl(run / "rationales" / round_ / f"{style}.jsonl")
            table = pq.read_table(out / round_ / f"{style}.parquet")
            assert table.num_rows == len(source)
            assert table.column("rationale").to_pylist() == [r["rationale"] for r in source]
        loaded = datasets.load_dataset("parquet", data_dir=str(out / round_), cache_dir=str(tmp_path / round_))
        assert loaded["train"].features == features()
    by_config = datasets.load_dataset(str(out), "r1", cache_dir=str(tmp_path / "cfg"))
    assert set(by_config) == set(STYLES)
    first = read_jsonl(run / "rationales" / "r1" / "cot.jsonl")[0]
    assert by_config["cot"][0]["meta"] == first["meta"] and by_config["cot"][0]["teacher"] == first["teacher"]


def test_export_dataset_errors_name_the_problem(run, tmp_path, capsys) -> None:
    assert cli_main(["export", "--dataset", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "no rationale files" in capsys.readouterr().err
    bad = tmp_path / "bad"
    rows = read_jsonl(run / "rationales" / "r0" / "pot.jsonl")
    write_jsonl(bad / "rationales" / "r0" / "pot.jsonl", [rows[0], {**rows[1], "surprise": 1}])
    assert cli_main(["export", "--dataset", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "pot.jsonl:2: keys ['surprise']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # checked before anything is written
    with pytest.raises(DataError, match="no STYLE.jsonl"):
        write_card(tmp_path)
