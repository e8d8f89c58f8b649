"""The demo's RUN/report.md: tables of what was measured, and what that shows, computed from the numbers.

Each finding of the papers is checked as a comparison of two accuracies on the same test set, with the
difference's standard error (two independent proportions): a difference under two standard errors is
reported as "within noise" rather than as a finding either way. No JAX here.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from distill_jax.methods.demo import STUDENTS, TESTS, DemoSize

_FDD_LABELS = {"r0": "round 0 (PoT student)", "r1": "round 1 (FDD feedback)", "control": "control: round-0 data only"}


def _pct(m: dict | None) -> str:
    if not m:
        return "-"
    return f"{100 * m['accuracy']:.1f}% ({round(m['accuracy'] * m['n'])}/{m['n']})"


def compare(a: dict, b: dict) -> tuple[str, float, float]:
    """(verdict, difference, standard error) of accuracy a - b: "yes", "no" or "within noise"."""
    pa, pb = a["accuracy"], b["accuracy"]
    se = math.sqrt(pa * (1 - pa) / max(a["n"], 1) + pb * (1 - pb) / max(b["n"], 1))
    diff = pa - pb
    if abs(diff) < 2 * se or (se == 0 and diff == 0):
        return "within noise", diff, se
    return ("yes" if diff > 0 else "no"), diff, se


def _claim(text: str, a: dict | None, b: dict | None) -> str:
    if not a or not b:
        return f"- {text}: not measured."
    verdict, diff, se = compare(a, b)
    return (f"- {text}: **{verdict}** ({100 * a['accuracy']:.1f}% vs {100 * b['accuracy']:.1f}%, "
            f"difference {100 * diff:+.1f} points, s.e. {100 * se:.1f}).")


def findings(results: dict[str, Any]) -> str:
    st, fdd = results["students"], results["fdd"]
    lines = ["## What this run shows", ""]
    for test in ("test_id", "test_ood"):
        cot = st["cot"].get(f"{test}/cot")
        lines.append(_claim(f"PoT student beats CoT student on {test} (calculation offloaded to Python)",
                            st["pot"].get(f"{test}/pot"), cot))
        lines.append(_claim(f"EoT student beats CoT student on {test} (calculation offloaded to sympy)",
                            st["eot"].get(f"{test}/eot"), cot))
    for test in TESTS:
        mixed = st["mixed"]
        best = max(STUDENTS["mixed"], key=lambda s: mixed.get(f"{test}/{s}", {}).get("accuracy", -1))
        vote, top = mixed.get(f"{test}/vote"), mixed.get(f"{test}/{best}")
        if vote and top:
            verdict = "yes" if vote["accuracy"] >= top["accuracy"] else compare(vote, top)[0]
            lines.append(f"- Mixed (ETD) student's vote >= its best single style ({best}) on {test}: **{verdict}** "
                         f"({_pct(vote)} vs {_pct(top)}).")
    lines.append(_claim("FDD round 1 beats round 0 on the seed problems round 0 failed (hard split)",
                        fdd["r1"].get("hard_r0/pot"), fdd["r0"].get("hard_r0/pot")))
    lines.append(_claim("... and beats the control (same extra steps on round-0 data only) there",
                        fdd["r1"].get("hard_r0/pot"), fdd["control"].get("hard_r0/pot")))
    lines.append(_claim("FDD round 1 beats the control out of distribution (test_ood; its new problems are one "
                        "step longer)", fdd["r1"].get("test_ood/pot"), fdd["control"].get("test_ood/pot")))
    lines.append(_claim("Key points (KPDD) help when every problem has a distractor fact (test_distractor)",
                        st["kp_pot"].get("test_distractor/kp_pot"), st["pot"].get("test_distractor/pot")))
    lines.append(_claim("... and in distribution (test_id)",
                        st["kp_pot"].get("test_id/kp_pot"), st["pot"].get("test_id/pot")))
    return "\n".join(lines)


def _student_table(students: dict[str, dict]) -> list[str]:
    rows = ["| student | asked for | " + " | ".join(TESTS) + " |", "|---|---|" + "---|" * len(TESTS)]
    for name, acc in students.items():
        asked = list(STUDENTS[name]) + (["vote"] if len(STUDENTS[name]) > 1 else [])
        for style in asked:
            rows.append(f"| {name} | {style} | " + " | ".join(_pct(acc.get(f"{t}/{style}")) for t in TESTS) + " |")
    return rows


def _fdd_table(fdd: dict[str, dict]) -> list[str]:
    cols = ("hard_r0", *TESTS)
    rows = ["| PoT student | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for key, acc in fdd.items():
        rows.append(f"| {_FDD_LABELS[key]} | " + " | ".join(_pct(acc.get(f"{c}/pot")) for c in cols) + " |")
    return rows


def _teacher_table(teach: dict[str, dict]) -> list[str]:
    rows = ["| style | rationales | kept after verification | rejected |", "|---|---|---|---|"]
    for style, s in teach.items():
        rejected = ", ".join(f"{k} {v}" for k, v in s["rejected"].items()) or "-"
        rows.append(f"| {style} | {s['jobs']} | {s['kept']} | {rejected} |")
    return rows


def _plot(students: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{n}/{s}" for n in students for s in (*STUDENTS[n], *(["vote"] if len(STUDENTS[n]) > 1 else []))]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(TESTS)
    for i, test in enumerate(TESTS):
        values = [100 * students[l.split("/")[0]].get(f"{test}/{l.split('/')[1]}", {}).get("accuracy", 0)
                  for l in labels]
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=test)
    ax.set_xticks([x + width for x in range(len(labels))], labels, rotation=30, ha="right")
    ax.set_ylabel("accuracy %")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_demo_report(run: Path, results: dict[str, Any], size: DemoSize, command: str, minutes: float) -> Path:
    from distill_jax.evaluate.report import write_report

    fdd_report = write_report(run / "fdd", title="FDD part of the demo (PoT student)")
    (run / "plots").mkdir(exist_ok=True)
    plot = _plot(results["students"], run / "plots" / "students.png")
    r1 = results["fdd_rounds"][0]["split"]
    new = json.loads((run / "fdd" / "stages" / "r1_new_problems.json").read_text(encoding="utf-8"))["result"]
    parts = [
        "# distill_jax demo", "",
        f"Command: `{command}` ({minutes:.1f} min on this machine, stages done by an earlier run included).", "",
        f"World: {size.n_train} synthetic training problems (1-2 steps, a distractor fact in 30%); test sets of "
        f"up to {size.n_test}: `test_id` (as training), `test_ood` (3 steps), `test_distractor` (1-2 steps, every "
        f"problem with a distractor). Students: T5 from scratch, {json.dumps(size.model)}, {size.steps} steps of "
        f"batch {size.batch_size} each; greedy decoding up to {size.max_new_tokens} tokens.", "",
        findings(results), "",
        "## Teacher (symbolic, 10% of rationales written with a mistake)", "", *_teacher_table(results["teach"]), "",
        "## Students", "", *_student_table(results["students"]), "", f"![students](plots/{plot.name})", "",
        "## FDD feedback round", "",
        f"Round 0 solved {r1['easy']} of the {r1['easy'] + r1['hard']} seed problems (easy) and failed {r1['hard']} "
        f"(hard); the teacher wrote {new['harder']} harder variants of easy ones and {new['similar']} similar "
        f"problems for hard ones (kept when its independent solutions agree). Round 1 and the control each train "
        f"{size.fdd_steps} more steps from the round-0 student.", "",
        *_fdd_table(results["fdd"]), "",
        f"Per-round details and plots: [fdd/report.md]({fdd_report.relative_to(run)}).",
        "",
    ]
    path = run / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
