"""ETD / EoTD mixed-thought sets (arXiv 2401.11864): CoT, PoT and EoT rationales merged into one training set.

One student learns several styles; each record keeps its style, so its input is
`styles.student_input(question, style)` (`[cot] ...`, `[pot] ...`, `[eot] ...`) and the student can be asked
for any of them at inference. The mixture weights fix each style's share of the set:
n_style = total * w_style / sum(w) (largest-remainder rounding, so the counts add up to `total`).
A style with fewer records than its share is repeated (whole passes, then a sample of the rest); one with
more is sampled without replacement. Without `total`, it is the largest set no style has to repeat for.
Everything is deterministic given `seed`.
"""
from __future__ import annotations

import copy
import math
import random
from pathlib import Path
from typing import Mapping, Sequence

from distill_jax.data.records import write_jsonl
from distill_jax.methods.records_ops import load_records
from distill_jax.reasoning.styles import get_style


def mixture_counts(available: Mapping[str, int], weights: Mapping[str, float], total: int | None = None) -> dict[str, int]:
    """Records per style for the given weights (styles with weight 0 get none)."""
    missing = [s for s in weights if s not in available]
    if missing:
        raise ValueError(f"etd: weights name styles with no records: {missing}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"etd: weights must be >= 0 with a positive sum, got {dict(weights)}")
    norm = sum(weights.values())
    share = {s: w / norm for s, w in weights.items()}
    if total is None:
        total = min(math.floor(available[s] / share[s] + 1e-9) for s in share if share[s] > 0)
    if total < 0:
        raise ValueError(f"etd: total must be >= 0, got {total}")
    exact = {s: total * share[s] for s in share}
    counts = {s: math.floor(exact[s]) for s in share}
    for s in sorted(share, key=lambda s: (-(exact[s] - counts[s]), s))[:total - sum(counts.values())]:
        counts[s] += 1
    return counts


def mix(records_by_style: Mapping[str, Sequence[dict]], weights: Mapping[str, float], total: int | None = None,
        seed: int = 0) -> list[dict]:
    """The mixed set, shuffled; each record gets `meta.etd` = {share, copy} (copy > 0 for a repeat)."""
    for style, recs in records_by_style.items():
        get_style(style)
        wrong = [r.get("style") for r in recs if r.get("style") != style]
        if wrong:
            raise ValueError(f"etd: the {style!r} records include style {wrong[0]!r}")
    counts = mixture_counts({s: len(r) for s, r in records_by_style.items()}, weights, total)
    norm = sum(weights.values())
    out = []
    for style in sorted(counts):
        recs, n = list(records_by_style[style]), counts[style]
        if n and not recs:
            raise ValueError(f"etd: style {style!r} has no records for its {n} slots")
        rng = random.Random(f"etd|{seed}|{style}")
        passes, rest = divmod(n, len(recs)) if recs else (0, 0)
        picked = [(r, k) for k in range(passes) for r in recs] + [(r, passes) for r in rng.sample(recs, rest)]
        for rec, k in picked:
            row = copy.deepcopy(rec)
            row["meta"] = {**(row.get("meta") or {}), "etd": {"share": weights[style] / norm, "copy": k}}
            out.append(row)
    random.Random(f"etd|{seed}|order").shuffle(out)
    return out


def mix_files(files_by_style: Mapping[str, Sequence[str | Path]], weights: Mapping[str, float], out_path: str | Path,
              total: int | None = None, seed: int = 0, only_correct: bool = True) -> dict[str, int]:
    """Read each style's rationale files, mix, write `out_path` atomically; returns the counts per style."""
    records = {s: load_records(files, styles=[s], only_correct=only_correct) for s, files in files_by_style.items()}
    mixed = mix(records, weights, total, seed)
    write_jsonl(out_path, mixed)
    counts: dict[str, int] = {}
    for r in mixed:
        counts[r["style"]] = counts.get(r["style"], 0) + 1
    return counts
