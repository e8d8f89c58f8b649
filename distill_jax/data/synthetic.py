"""The synthetic GSM8K-style world: word problems generated from small computation graphs.

A problem is a story told by a sequence of *moves* (synthetic_moves.py). A move states one or two facts in
a sentence and adds one or more computed nodes to the graph; the question asks for the last computed node.
Every node is serialised into the Problem row (`graph`), so a symbolic teacher can write any rationale style
from it, and so the world can make a harder variant (one more move) or a similar problem (the same plan of
moves, redrawn with new people, objects, numbers and templates).

Numbers are drawn so that every intermediate is a whole number in [1, MAX_VALUE]; a draw that breaks this is
redrawn (deterministically: all randomness comes from one `random.Random`).

Row keys besides id/question/answer/source ("synthetic"): `graph` (nodes, see synthetic_graph.py), `target`
(the asked node's var), `steps` (computed nodes), `has_distractor`, `distractor` (start|end|null), `split`,
`plan` (move names), `variants` (the op-deciding choices), `story` (sentences before the question), `final`
(the asked quantity, to continue the story), `people`, `objects`, and `parent` for harder/similar problems.
"""
from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Callable

from distill_jax.data.problems import Problem
from distill_jax.data.synthetic_graph import Builder, Retry
from distill_jax.data.synthetic_moves import CONTINUE_MOVES, MOVES, START_MOVES, add_distractor

SOURCE = "synthetic"
_MAX_TRIES = 500


def generate(n: int, seed: int, min_steps: int = 1, max_steps: int = 3, distractor_rate: float = 0.0,
             split: str = "all", progress: Callable[[int], None] | None = None) -> list[Problem]:
    """`n` problems with min_steps..max_steps computed steps; the same arguments give the same problems.

    `distractor_rate` is the share of problems with one fact the question does not need; `split` is the tag
    written into every row; `progress(i)` is called after each problem.
    """
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}..{max_steps}")
    if not 0.0 <= distractor_rate <= 1.0:
        raise ValueError(f"distractor_rate must be in [0, 1], got {distractor_rate}")
    rng = random.Random(f"synthetic-{seed}")
    problems = []
    for i in range(n):
        steps = rng.randint(min_steps, max_steps)
        distractor = rng.choice(("start", "end")) if rng.random() < distractor_rate else None
        problems.append(_realise(rng, f"synth-{seed}-{i:06d}", steps=steps, plan=None, distractor=distractor,
                                 split=split))
        if progress is not None:
            progress(i + 1)
    return problems


def _realise(rng: random.Random, pid: str, *, steps: int, plan: list[str] | None, distractor: str | None,
             split: str, variants: list[str] | None = None) -> Problem:
    for _ in range(_MAX_TRIES):
        b = Builder(rng, replay=None if variants is None else list(variants))
        try:
            moves = _play(b, steps, plan)
            if distractor:
                add_distractor(b, at_start=distractor == "start")
        except Retry:
            continue
        return _problem(b, pid, moves, distractor, split)
    raise RuntimeError(f"{pid}: no valid numbers found for plan {plan} after {_MAX_TRIES} draws")


def _play(b: Builder, steps: int, plan: list[str] | None) -> list[str]:
    """Run the given plan of moves, or draw one with exactly `steps` computed steps."""
    if plan is not None:
        q = None
        for name in plan:
            move = MOVES[name]
            if q is not None and not move.applies(q):
                raise Retry
            q = move.run(b, q)
        return list(plan)
    starts = [m for m in START_MOVES if m.steps <= steps]
    move = b.rng.choice(starts)
    q, played, left = move.run(b, None), [move.name], steps - move.steps
    while left:
        options = [m for m in CONTINUE_MOVES if m.steps <= left and m.applies(q)]
        move = b.rng.choice(options)
        q = move.run(b, q)
        played.append(move.name)
        left -= move.steps
    return played


def _problem(b: Builder, pid: str, plan: list[str], distractor: str | None, split: str) -> Problem:
    final = b.current
    question = " ".join(b.story + [final.ask()])
    steps = sum(1 for node in b.nodes if node["op"] != "given")
    extra = {
        "graph": b.nodes,
        "target": final.var,
        "steps": steps,
        "has_distractor": distractor is not None,
        "distractor": distractor,
        "split": split,
        "plan": plan,
        "variants": b.variants,
        "story": b.story,
        "final": final.to_dict(),
        "people": b.people,
        "objects": b.objects,
    }
    # Through JSON once, so that a problem equals itself read back from its JSONL row (tuples become lists).
    return Problem(pid, question, str(final.value), SOURCE, json.loads(json.dumps(extra)))


def harder_variant(problem: Problem, rng: random.Random, new_id: str | None = None) -> Problem:
    """The same story with one more move (one more step), a new question and a different answer."""
    for _ in range(_MAX_TRIES):
        b = Builder.resume(rng, problem.extra)
        q = b.current
        options = [m for m in CONTINUE_MOVES if m.steps == 1 and m.applies(q)]
        move = rng.choice(options)
        try:
            new_q = move.run(b, q)
        except Retry:
            continue
        if new_q.value == q.value:
            continue
        out = _problem(b, new_id or f"{problem.id}-harder", problem.extra["plan"] + [move.name],
                       problem.extra.get("distractor"), problem.extra.get("split", "all"))
        return replace(out, extra={**out.extra, "parent": problem.id})
    raise RuntimeError(f"{problem.id}: could not extend the story by one step")


def similar_problem(problem: Problem, rng: random.Random, new_id: str | None = None) -> Problem:
    """The same plan of moves (same graph structure and step count), with new people, objects, numbers, text."""
    out = _realise(rng, new_id or f"{problem.id}-similar", steps=problem.extra["steps"],
                   plan=list(problem.extra["plan"]), distractor=problem.extra.get("distractor"),
                   split=problem.extra.get("split", "all"), variants=problem.extra["variants"])
    return replace(out, extra={**out.extra, "parent": problem.id})


def split_by_steps(problems: list[Problem], max_train_steps: int) -> tuple[list[Problem], list[Problem]]:
    """(in-distribution: steps <= max_train_steps, out-of-distribution: more steps), tagged `split` id / ood."""
    ind, ood = [], []
    for p in problems:
        if "steps" not in p.extra:
            raise ValueError(f"{p.id}: not a synthetic problem (no 'steps')")
        is_ood = p.extra["steps"] > max_train_steps
        tagged = replace(p, extra={**p.extra, "split": "ood" if is_ood else "id"})
        (ood if is_ood else ind).append(tagged)
    return ind, ood
