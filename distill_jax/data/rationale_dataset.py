"""Rationale files as a Hugging Face dataset: a dataset card for every round, and a Parquet export.

`teach` writes RUN/rationales/<round>/STYLE.jsonl (DESIGN.md "Records"); `write_card(round_dir)` puts a README.md
beside them with the YAML front matter the Hub and `datasets` read: one split per style (`configs`), the
features and the rows per split (`dataset_info`), the teacher models and prompt versions found in the records,
and `license: unknown` for the user to set (the problems' licence and the teacher's terms decide it). Then
`datasets.load_dataset("json", data_dir=ROUND_DIR)` reads every style as one train split, and
`datasets.load_dataset(ROUND_DIR)` reads the card: a split per style. `export_dataset(run_dir, out_dir)` writes
OUT/<round>/<style>.parquet for every round, with one card that lists a config per round.

`teacher.usage` and `meta` are open-ended JSON objects (their keys differ between endpoints, styles and
methods): they are `Json` features, stored as JSON text (Parquet: the arrow.json extension), so every style of
every run shares one schema. `datasets` is imported only for the Parquet export.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from distill_jax.data.records import DataError, check_rationale_record, iter_jsonl
from distill_jax.fileio import write_text_atomic

# The record schema (DESIGN.md): (name, dtype) or (name, nested schema); "json" is an open-ended object.
SCHEMA: tuple = (
    ("problem_id", "string"), ("question", "string"), ("answer", "string"), ("style", "string"),
    ("rationale", "string"), ("prediction", "string"), ("correct", "bool"), ("round", "int64"),
    ("teacher", (("model", "string"), ("prompt_version", "string"), ("sample", "int64"), ("usage", "json"))),
    ("meta", "json"),
)
CARD = "README.md"
_SPLIT_NAME = re.compile(r"^\w+$")


def yaml_features(schema: tuple = SCHEMA) -> list[dict]:
    """The schema as a dataset card's `dataset_info.features` list."""
    return [{"name": name, "struct": yaml_features(kind)} if isinstance(kind, tuple) else {"name": name, "dtype": kind}
            for name, kind in schema]


def features(schema: tuple = SCHEMA):
    """The schema as `datasets.Features`."""
    import datasets

    def convert(kind):
        if isinstance(kind, tuple):
            return {name: convert(k) for name, k in kind}
        return datasets.Json() if kind == "json" else datasets.Value(kind)

    return datasets.Features(convert(schema))


def _style_files(round_dir: Path) -> dict[str, Path]:
    files = {p.stem: p for p in sorted(round_dir.glob("*.jsonl"))}
    bad = [s for s in files if not _SPLIT_NAME.match(s)]
    if bad:
        raise DataError(f"{round_dir}: {bad} cannot name dataset splits (letters, digits and _ only)")
    return files


def _stats(rows, nbytes: int) -> dict[str, Any]:
    """Rows, bytes, and the teacher models and prompt versions of a split."""
    n, models, versions = 0, set(), set()
    for row in rows:
        teacher = row.get("teacher") or {}
        models.add(str(teacher.get("model")))
        versions.add(str(teacher.get("prompt_version")))
        n += 1
    return {"rows": n, "bytes": nbytes, "models": sorted(models), "prompt_versions": sorted(versions)}


def _checked(path: Path):
    for lineno, row in iter_jsonl(path):
        yield check_rationale_record(row, f"{path}:{lineno}")


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def _front_matter(configs: list[dict], splits: dict[str, dict], total: int) -> str:
    meta = {
        "license": "unknown",
        "language": ["en"],
        "task_categories": ["text2text-generation"],
        "tags": ["distillation", "rationales", "math-word-problems", "distill-jax"],
        "size_categories": [_size_category(total)],
        "configs": configs,
        "dataset_info": [{"config_name": c["config_name"], "features": yaml_features(),
                          "splits": [{"name": s, "num_bytes": splits[f"{c['config_name']}/{s}"]["bytes"],
                                      "num_examples": splits[f"{c['config_name']}/{s}"]["rows"]}
                                     for s in (f["split"] for f in c["data_files"])]} for c in configs],
    }
    text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    # the one field the user must decide: the problems' licence and the teacher's terms of use
    text = text.replace("license: unknown\n", "license: unknown  # set it: the problems' licence and the "
                                              "teacher's terms decide it\n", 1)
    return f"---\n{text}---\n"


def _body(title: str, configs: list[dict], splits: dict[str, dict], rejects: dict[str, int], load: str) -> str:
    lines = [f"# {title}", "", "Verified teacher rationales written by distill-jax (`distill-jax teach`): one record "
             "per line, `rationale` is exactly the student's target text, `correct` says whether it reached the gold "
             "answer. Records that failed verification are not here (RUN/rejects/).", "",
             "| config | split (style) | rows | rejected | teacher model | prompt version |", "|---|---|---|---|---|---|"]
    for c in configs:
        for f in c["data_files"]:
            s = splits[f"{c['config_name']}/{f['split']}"]
            rejected = rejects.get(f"{c['config_name']}/{f['split']}")
            lines.append(f"| {c['config_name']} | {f['split']} | {s['rows']} | "
                         f"{'-' if rejected is None else rejected} | {', '.join(s['models'])} | "
                         f"{', '.join(s['prompt_versions'])} |")
    lines += ["", "```python", "import datasets", load, "```", "",
              "`teacher.usage` and `meta` are JSON objects whose keys depend on the endpoint and the method.", "",
              "Licence: not set (`license: unknown` above). The problems' licence and the teacher's terms of use "
              "decide what it may be; set it before sharing this dataset.", ""]
    return "\n".join(lines)


def _count_rows(path: Path) -> int:
    return sum(1 for _ in iter_jsonl(path))


def write_card(round_dir: str | Path) -> Path:
    """Write ROUND_DIR/README.md for the STYLE.jsonl files in it (rejects counted from RUN/rejects/<round>/)."""
    round_dir = Path(round_dir)
    files = _style_files(round_dir)
    if not files:
        raise DataError(f"{round_dir}: no STYLE.jsonl rationale files to describe")
    rejects_dir = round_dir.parent.parent / "rejects" / round_dir.name
    configs = [{"config_name": "default", "data_files": [{"split": s, "path": p.name} for s, p in files.items()]}]
    splits = {f"default/{s}": _stats(_checked(p), p.stat().st_size) for s, p in files.items()}
    rejects = {f"default/{s}": _count_rows(rejects_dir / p.name) for s, p in files.items()
               if (rejects_dir / p.name).is_file()}
    total = sum(s["rows"] for s in splits.values())
    where = f"{round_dir.parent.parent.name}/rationales/{round_dir.name}"
    load = (f'datasets.load_dataset("{where}")  # a split per style; load_dataset("json", data_dir="{where}"): '
            'all in one train split')
    title = f"Rationales: {round_dir.parent.parent.name}, round {round_dir.name}"
    path = round_dir / CARD
    write_text_atomic(path, _front_matter(configs, splits, total) + "\n" + _body(title, configs, splits, rejects, load))
    return path


def _rows(path: Path) -> list[dict]:
    keys = [name for name, _ in SCHEMA]
    rows = []
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        check_rationale_record(row, where)
        extra = sorted(set(row) - set(keys))
        if extra:
            raise DataError(f"{where}: keys {extra} are not in the rationale record schema")
        teacher = row.get("teacher") or {}
        rows.append({**{k: row.get(k) for k in keys}, "meta": row.get("meta") or {},
                     "teacher": {"model": teacher.get("model"), "prompt_version": teacher.get("prompt_version"),
                                 "sample": teacher.get("sample"), "usage": teacher.get("usage") or {}}})
    return rows


def export_dataset(run_dir: str | Path, out_dir: str | Path) -> dict[str, dict[str, int]]:
    """OUT/<round>/<style>.parquet for every round of RUN/rationales, and OUT/README.md (a config per round).
    Every file is read and checked before anything is written. Returns {round: {style: rows}}."""
    run, out = Path(run_dir), Path(out_dir)
    base = run / "rationales"
    rounds = {d.name: _style_files(d) for d in sorted(base.iterdir()) if d.is_dir()} if base.is_dir() else {}
    rounds = {r: f for r, f in rounds.items() if f}
    if not rounds:
        raise DataError(f"{run}: no rationale files under rationales/<round>/ (has `teach` run?)")
    if out.resolve() == base.resolve() or base.resolve() in out.resolve().parents:
        raise DataError(f"--out {out} is inside the run's rationales; choose another directory")
    data = {r: {s: _rows(p) for s, p in files.items()} for r, files in rounds.items()}
    feats = features()
    import datasets

    counts: dict[str, dict[str, int]] = {}
    splits: dict[str, dict] = {}
    for r, styles in data.items():
        for style, rows in styles.items():
            path = out / r / f"{style}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_list(rows, features=feats).to_parquet(str(path))
            splits[f"{r}/{style}"] = _stats(rows, path.stat().st_size)
            counts.setdefault(r, {})[style] = len(rows)
    configs = [{"config_name": r, "data_files": [{"split": s, "path": f"{r}/{s}.parquet"} for s in styles]}
               for r, styles in data.items()]
    rejects = {f"{r}/{s}": _count_rows(run / "rejects" / r / p.name) for r, files in rounds.items()
               for s, p in files.items() if (run / "rejects" / r / p.name).is_file()}
    first = next(iter(rounds))
    load = (f'datasets.load_dataset("{out.name}", "{first}")  # a round, a split per style; or '
            f'load_dataset("parquet", data_dir="{out.name}/{first}")')
    total = sum(s["rows"] for s in splits.values())
    write_text_atomic(out / CARD, _front_matter(configs, splits, total) + "\n"
                      + _body(f"Rationales: {run.name}", configs, splits, rejects, load))
    return counts
