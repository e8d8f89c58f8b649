"""RUN/report.md and RUN/plots/*.png from every `metrics.json` under RUN/eval (no JAX).

Tables: one per benchmark, rows = style (and votes), columns = checkpoint step, cells = accuracy in percent
with the count. Plots: accuracy vs step per benchmark and style; accuracy per style at the last step;
accuracy per FDD round when the run has rounds (RUN/fdd/rounds.json written by the FDD pipeline); the
training loss (and eval loss) vs step of every training run in RUN (its logs/metrics.jsonl).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def collect_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every metrics.json under RUN/eval (and RUN/train/<round>/eval for pipelines, whose steps are then
    labelled `<round>/<step>`), sorted by (benchmark, style, decoding, step)."""
    run_dir = Path(run_dir)
    rows = []
    sources = [(None, p) for p in sorted(run_dir.glob("eval/*/*/*/metrics.json"))]
    sources += [(p.parts[-6], p) for p in sorted(run_dir.glob("train/*/eval/*/*/*/metrics.json"))]
    for round_name, path in sources:
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a half-written file from a killed eval is re-done by the next eval run
        if round_name is not None:
            m["step"] = f"{round_name}/{m['step']}"
        rows.append(m)
    return sorted(rows, key=lambda m: (m["benchmark"], m["style"], m["decoding"], _step_key(m["step"])))


def by_test_and_style(metrics: list[dict[str, Any]], fields: tuple[str, ...] = ("accuracy", "n")) -> dict[str, dict]:
    """`benchmark/style` -> the given fields of each metrics dict: the shape the pipelines keep their results in."""
    return {f"{m['benchmark']}/{m['style']}": {f: m[f] for f in fields} for m in metrics}


def _step_key(step: Any) -> tuple[int, Any]:
    return (0, step) if isinstance(step, int) else (1, str(step))


def _cell(m: dict) -> str:
    return f"{100 * m['accuracy']:.1f} ({m['correct']}/{m['n']})"


def markdown_tables(rows: list[dict]) -> str:
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for m in rows:
        by_bench[m["benchmark"]].append(m)
    out = []
    for bench, ms in by_bench.items():
        steps = sorted({m["step"] for m in ms}, key=_step_key)
        lines = {}
        for m in ms:
            lines.setdefault((m["style"], m["decoding"]), {})[m["step"]] = _cell(m)
        data = ms[0].get("data", {})
        out.append(f"### {bench}")
        out.append(
            f"{data.get('count', '?')} problems from `{data.get('file', '?')}` "
            f"(sha256 {str(data.get('sha256', '?'))[:12]}); cells: accuracy % (correct/n)."
        )
        out.append("")
        out.append("| style | decoding | " + " | ".join(f"step {s}" for s in steps) + " |")
        out.append("|---|---|" + "---|" * len(steps))
        for (style, decoding), cells in sorted(lines.items(), key=lambda kv: (kv[0][0] == "vote", kv[0])):
            out.append(f"| {style} | {decoding} | " + " | ".join(cells.get(s, "") for s in steps) + " |")
        out.append("")
    return "\n".join(out)


def _plot_accuracy_vs_step(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for m in rows:
        if isinstance(m["step"], int):
            by_bench[m["benchmark"]].append(m)
    for bench, ms in by_bench.items():
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for m in ms:
            series[f"{m['style']} ({m['decoding']})"].append((m["step"], 100 * m["accuracy"]))
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{bench}: accuracy vs step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out / f"accuracy_vs_step_{bench}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _plot_bars(title: str, labels: list[str], values: list[float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(labels) + 2), 4))
    ax.bar(labels, values, color="#4C72B0")
    for i, v in enumerate(values):
        ax.text(i, v + 0.5, f"{v:.1f}", ha="center", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.set_ylim(0, max(100, max(values, default=0) + 5))
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_per_style(rows: list[dict], out: Path) -> list[Path]:
    written = []
    by_bench: dict[str, dict[str, dict]] = defaultdict(dict)
    for m in rows:
        label = f"{m['style']} ({m['decoding']})"
        prev = by_bench[m["benchmark"]].get(label)
        if prev is None or _step_key(m["step"]) > _step_key(prev["step"]):
            by_bench[m["benchmark"]][label] = m
    for bench, latest in by_bench.items():
        labels = sorted(latest)
        values = [100 * latest[k]["accuracy"] for k in labels]
        written.append(_plot_bars(f"{bench}: accuracy per style (last step)", labels, values,
                                  out / f"accuracy_per_style_{bench}.png"))
    return written


def _loss_curves(run_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """training run (`.` for RUN itself, else its path under RUN) -> {"loss": [(step, v)], "eval_loss": [...]}"""
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    logs = [run_dir / "logs" / "metrics.jsonl"] + sorted(run_dir.glob("train/*/logs/metrics.jsonl"))
    for path in logs:
        if not path.is_file():
            continue
        name = str(path.parent.parent.relative_to(run_dir))
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            for key in ("loss", "eval_loss"):
                if isinstance(row.get(key), (int, float)):
                    series[key].append((int(row["step"]), float(row[key])))
        if series:
            curves[name] = dict(series)
    return curves


def _plot_loss(run_dir: Path, out: Path) -> list[Path]:
    curves = _loss_curves(run_dir)
    if not curves:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, series in curves.items():
        label = "" if name == "." else f"{name} "
        for key, style in (("loss", "-"), ("eval_loss", "o--")):
            pts = sorted(series.get(key, []))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{label}{key.replace('_', ' ')}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (per target token)")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out / "loss.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def _rounds_section(run_dir: Path, out: Path) -> tuple[str, list[Path]]:
    path = run_dir / "fdd" / "rounds.json"
    if not path.is_file():
        return "", []
    rounds = json.loads(path.read_text(encoding="utf-8"))
    lines = ["## FDD rounds", "", "| round | split | accuracy | n |", "|---|---|---|---|"]
    labels, values = [], []
    for r in rounds:
        for split, m in sorted(r.get("accuracy", {}).items()):
            lines.append(f"| {r['round']} | {split} | {100 * m['accuracy']:.1f} | {m['n']} |")
            labels.append(f"r{r['round']} {split}")
            values.append(100 * m["accuracy"])
    plots = [_plot_bars("accuracy per FDD round", labels, values, out / "fdd_rounds.png")] if labels else []
    return "\n".join(lines) + "\n", plots


def write_report(run_dir: str | Path, title: str | None = None, preamble: str = "") -> Path:
    """(Re)write RUN/report.md and RUN/plots/ from what RUN/eval holds; returns the report path."""
    run_dir = Path(run_dir)
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    rows = collect_metrics(run_dir)
    plots = _plot_accuracy_vs_step(rows, plots_dir) + _plot_per_style(rows, plots_dir) + _plot_loss(run_dir, plots_dir)
    rounds_md, round_plots = _rounds_section(run_dir, plots_dir)
    plots += round_plots
    parts = [f"# {title or 'distill_jax report: ' + run_dir.name}", ""]
    if preamble:
        parts += [preamble.rstrip(), ""]
    parts += ["## Accuracy", "", markdown_tables(rows) or "(no evaluations yet)", ""]
    if rounds_md:
        parts += [rounds_md, ""]
    if rows:
        settings = {m["decoding"]: m.get("settings", {}) for m in rows}
        parts += ["## Decoding settings", ""]
        parts += [f"- `{tag}`: {json.dumps(s, sort_keys=True)}" for tag, s in sorted(settings.items())]
        parts += [""]
    if plots:
        parts += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    path = run_dir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
