"""`distill-jax show RUN`: what a run directory holds, without reading it by hand.

Stages done (fingerprint, finish time, seconds, the config each ran under), the config history, checkpoints,
the latest training metrics and every eval result, for any run: a training run (`train`), a method pipeline
(`distill`, `fdd`) or the demo (with FDD inside). Everything is read from files; no JAX, nothing is written.
Superseded outputs (RUN/superseded/, moved there when a changed input reran a stage) are listed, not shown.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from distill_jax.config import ConfigError
from distill_jax.methods.stages import read_markers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="a run directory (distill, fdd, demo or train)")


def _current(run: Path, pattern: str) -> list[Path]:
    """Matches of `pattern` under RUN, outside RUN/superseded/."""
    return sorted(p for p in run.glob(pattern) if "superseded" not in p.relative_to(run).parts)


def _rel(run: Path, path: Path) -> str:
    return str(path.relative_to(run)) or "."


def _stages(console: Console, run: Path) -> None:
    for stages_dir in _current(run, "**/stages"):
        markers = read_markers(stages_dir.parent)
        if not markers:
            continue
        table = Table(title=f"stages ({_rel(run, stages_dir)})", title_justify="left")
        for col in ("stage", "status", "fingerprint", "finished", "seconds", "config"):
            table.add_column(col, justify="right" if col == "seconds" else "left")
        for name, m in markers.items():
            table.add_row(name, m.get("status", "done"), m.get("fingerprint", "-"), m.get("finished", "-"),
                          str(m.get("seconds", "-")), m.get("config") or "-")
        console.print(table)


def _configs(console: Console, run: Path) -> None:
    for history in _current(run, "**/configs"):
        entries = sorted(history.glob("[0-9][0-9][0-9].yaml"))
        lines = []
        for path in entries:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            lines.append(f"  {path.stem}  {doc.get('time', '?')}  ran: {', '.join(doc.get('stages', [])) or '-'}")
        if lines:
            console.print(f"configs ({_rel(run, history)}; {_rel(run, history.parent / 'config.yaml')} is the "
                          f"latest):", *lines, sep="\n", highlight=False)


def _checkpoints(console: Console, run: Path) -> None:
    lines = []
    for ckpt in _current(run, "**/ckpt"):
        steps = sorted(int(p.name) for p in ckpt.iterdir() if p.is_dir() and p.name.isdigit())
        lines.append(f"  {_rel(run, ckpt)}: " + (f"steps {', '.join(map(str, steps))}" if steps else "none"))
    if lines:
        console.print("checkpoints:", *lines, sep="\n", highlight=False)


def _metrics(console: Console, run: Path) -> None:
    lines = []
    for path in _current(run, "**/logs/metrics.jsonl"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        train = [r for r in rows if "loss" in r]
        evals = [r for r in rows if "eval_loss" in r]
        parts = []
        if train:
            last = train[-1]
            parts.append(f"step {last['step']} loss {last['loss']:.4f}"
                         + (f", {last['tokens_per_second']:,.0f} tok/s" if "tokens_per_second" in last else ""))
        if evals:
            parts.append(f"eval loss {evals[-1]['eval_loss']} at step {evals[-1]['step']}")
        lines.append(f"  {_rel(run, path.parent.parent)}: " + ("; ".join(parts) or "no rows"))
    if lines:
        console.print("latest metrics:", *lines, sep="\n", highlight=False)


def _evals(console: Console, run: Path) -> None:
    found = _current(run, "**/eval/*/*/*/metrics.json")
    if not found:
        return
    table = Table(title="eval results", title_justify="left")
    for col in ("run", "step", "test set", "style", "decoding", "accuracy", "correct / n"):
        table.add_column(col, justify="right" if col in ("accuracy", "correct / n", "step") else "left")
    for path in found:
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue  # a half-written result of a killed eval: the next eval redoes it
        table.add_row(_rel(run, path.parents[4]), str(m["step"]), m["benchmark"], m["style"], m["decoding"],
                      f"{100 * m['accuracy']:.1f}%", f"{m['correct']} / {m['n']}")
    console.print(table)


def run(args: argparse.Namespace) -> int:
    run_dir: Path = args.run
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory")
    console = Console(soft_wrap=True, width=max(Console().width, 150))  # tables whole, also in a pipe
    console.print(f"[bold]{run_dir}[/bold]")
    for show in (_configs, _stages, _checkpoints, _metrics, _evals):
        show(console, run_dir)
    superseded = sorted(p.name for p in (run_dir / "superseded").glob("*") if p.is_dir())
    if superseded:
        console.print(f"superseded (outputs a rerun replaced): {', '.join(superseded)} in {run_dir / 'superseded'}",
                      highlight=False)
    for name in ("report.md", "results.json"):
        if (run_dir / name).is_file():
            console.print(f"{name}: {run_dir / name}", highlight=False)
    return 0
