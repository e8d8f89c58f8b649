"""PaD step-wise verification (arXiv 2305.13888, section "step-by-step verification"): a learned-free scorer
of program prefixes, and a beam search over program lines that keeps the prefixes it scores best.

The paper scores each reasoning step with a scorer and keeps the top-k steps in a constrained beam search.
Here the scorer needs no model: it runs the prefix in the sandbox and checks it against the question (and,
when given, the numbers of a reference solution); see `score_partial`. The proposer of next lines is any
callable, so the eval side can plug in the student's sampler (lines with their log-probabilities).
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from distill_jax.methods.records_ops import NUMBER, question_number_counts
from distill_jax.reasoning.answers import normalize_number

_COMMON_CONSTANTS = {1.0, 100.0}  # used without being stated (e.g. `1 - pct / 100`)


_WINDOW = 4  # words either side of a number that count as its context


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def number_contexts(question: str) -> dict[float, list[set[str]]]:
    """For each number the question states (digits or words), the stemmed words around each mention."""
    tokens = re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?|[a-z]+|%", question.lower())
    out: dict[float, list[set[str]]] = {}
    for i, tok in enumerate(tokens):
        number = question_number_counts(tok)
        for v in number:
            context = tokens[max(0, i - _WINDOW):i] + tokens[i + 1:i + 1 + _WINDOW]
            out.setdefault(v, []).append({_stem(w) for w in context if not w[0].isdigit()})
    return out


def _binding(contexts: dict[float, list[set[str]]], name: str, value: float) -> float:
    """How well a given's name fits its number's context, relative to the best-fitting number (1 = best)."""
    words = {_stem(w) for w in name.lower().split("_") if len(w) > 2}
    fit = {v: max(len(words & c) for c in ctxs) for v, ctxs in contexts.items()}
    best = max(fit.values(), default=0)
    return 1.0 if best == 0 else fit.get(value, 0) / best


def _decimals(x: float) -> int:
    text = f"{x:.6f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def _instrumented(prefix: str) -> tuple[str, list[str]] | None:
    """The prefix plus prints of every assigned top-level name (in order) and a dummy `ans`; None if it
    does not parse (an unfinished line)."""
    try:
        tree = ast.parse(prefix)
    except SyntaxError:
        return None
    names: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    tail = "".join(f"print({n})\n" for n in names)
    return prefix.rstrip("\n") + "\n" + tail + "ans = 0\n", names


def _constants(tree: ast.AST) -> list[float]:
    return [float(n.value) for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) in (int, float)]


def _computed_names(tree: ast.Module) -> list[str]:
    """Names (other than `ans`) whose value comes from an expression over other values, in order."""
    out = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and not isinstance(stmt.value, (ast.Constant, ast.UnaryOp)):
            out += [t.id for t in stmt.targets if isinstance(t, ast.Name) and t.id != "ans" and t.id not in out]
    return out


def _named_constants(tree: ast.Module) -> list[tuple[str, float]]:
    """(assigned name, constant) for each number written in a top-level assignment, except 1 and 100."""
    out = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            out += [(stmt.targets[0].id, c) for c in _constants(stmt.value) if c not in _COMMON_CONSTANTS]
    return out


def _unused_share(tree: ast.Module, names: list[str]) -> float:
    """In a finished program (it sets `ans`): the share of assigned names never read afterwards."""
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assigned = [n for n in names if n != "ans"]
    return sum(n not in read for n in assigned) / len(assigned) if assigned else 0.0


def score_partials(question: str, prefixes: Sequence[str], reference_values: Iterable[float] | None = None,
                   timeout_s: float = 2.0, workers: int | None = None) -> list[float]:
    """`score_partial` for many prefixes of one question in one sandbox batch."""
    from distill_jax.reasoning.sandbox import run_programs

    stated = question_number_counts(question)
    contexts = number_contexts(question)
    numbers = set(stated)
    allowed = numbers | _COMMON_CONSTANTS
    max_dec = max([_decimals(x) for x in numbers] + [0]) + (2 if "$" in question else 0)
    reference = {round(float(v), 6) for v in reference_values} if reference_values is not None else None
    built = [_instrumented(p) for p in prefixes]
    runnable = [b[0] for b in built if b is not None]
    results = iter(run_programs(runnable, timeout_s=timeout_s, workers=workers)) if runnable else iter(())
    scores = []
    for prefix, b in zip(prefixes, built):
        if b is None:
            scores.append(0.0)
            continue
        r = next(results)
        if r.error is not None:
            scores.append(0.0)
            continue
        tree, names = ast.parse(prefix), b[1]
        printed = r.stdout.splitlines()[-len(names):] if names else []
        values = {}
        for name, text in zip(names, printed):
            num = normalize_number(text)
            values[name] = float(num) if num is not None else math.nan
        consts = _constants(tree)
        grounded = sum(c in allowed for c in consts) / len(consts) if consts else 1.0
        computed = [n for n in _computed_names(tree) if n in values]
        givens = set(names) - set(computed) - {"ans"}
        plausible = []
        for n in values:
            v = values[n]
            ok = math.isfinite(v) and v >= 0 and _decimals(v) <= max_dec
            same = [e for e in names[:names.index(n)] if values[e] == v]
            if n in computed:  # a step should add information: not a value some earlier name holds
                ok = ok and not same
            elif n in givens:  # a number the question states once is one quantity, not two
                ok = ok and len([e for e in same if e in givens]) < max(stated[v], 1)
            plausible.append(ok)
        parts = [grounded, sum(plausible) / len(plausible) if plausible else 1.0]
        bound = _named_constants(tree)
        if bound:
            parts.append(sum(_binding(contexts, n, v) for n, v in bound) / len(bound))
        if "ans" in values:
            parts.append(1.0 - _unused_share(tree, names))
        if reference is not None:
            parts.append(sum(round(values[n], 6) in reference for n in computed) / len(computed) if computed else 1.0)
        scores.append(sum(parts) / len(parts))
    return scores


def score_partial(question: str, program_prefix: str, reference_values: Iterable[float] | None = None,
                  timeout_s: float = 2.0) -> float:
    """A learned-free score in [0, 1] of a program prefix for a question (the prefix runs in the sandbox).

    0 when the prefix does not parse or fails to run (a name used before it is assigned, a division by
    zero). Otherwise the mean of:
      - grounding: the share of the prefix's numeric constants that the question states (digits or words
        like `twice`, `%`) or that are 1 or 100: a miscopied number scores lower;
      - plausibility: the share of assigned values that are finite, non-negative, have no more decimals
        than the question's numbers (+2 for money) and, when computed, differ from every earlier value
        (`x * 1` adds nothing); a given number is held by no more names than the question states it
        (`bags = 8` next to `per_bag = 8` when 8 is stated once): `48 / 5` among whole counts scores lower;
      - binding (when it writes numbers other than 1 and 100): how well the name each number is assigned
        to fits the words around that number in the question, relative to the best-fitting number
        (`times_a_month = 3` when the question says "three times as many ... 4 times a month" scores
        lower, as does `aisha_money = sofia_money * 3` for "Aisha spends four times as much money");
      - once the prefix sets `ans` (a finished program): the share of assigned names read afterwards, so
        `ans = discount` that leaves the later steps unused scores lower;
      - with `reference_values` (numbers from a reference solution, e.g. the values in a teacher's CoT, or
        those most samples agree on): the share of computed values found among them, which also catches
        a swapped operator whose result is plausible.
    A wrong-but-plausible step with no reference (`19 - 3` for `19 + 3`) is invisible to it.
    """
    return score_partials(question, [program_prefix], reference_values, timeout_s)[0]


def reference_values_from_text(text: str) -> set[float]:
    """Every number written in a text (e.g. a CoT rationale), as a reference set for `score_partial`."""
    return {float(m.group().replace(",", "")) for m in NUMBER.finditer(text)}


@dataclass(frozen=True)
class BeamResult:
    program: str
    score: float  # score_partial of the program (+ lm_weight * summed log-probabilities)
    finished: bool  # the last line assigned `ans`


CandidatesFn = Callable[[str, list[str]], Sequence]


def _finishes(line: str) -> bool:
    return re.match(r"\s*ans\s*=", line) is not None


def stepwise_beam(candidates_fn: CandidatesFn, question: str, beam: int = 4, max_steps: int = 16, *,
                  reference_values: Iterable[float] | None = None, lm_weight: float = 0.0,
                  timeout_s: float = 2.0) -> list[BeamResult]:
    """Step-wise verified beam search over program lines; results best first.

    `candidates_fn(question, lines_so_far)` proposes next lines, each a string or (line, log-probability).
    Each step extends every live prefix with its proposals, scores all extensions in one sandbox batch, and
    keeps the `beam` best (score = score_partial + lm_weight * summed log-probability; ties keep proposal
    order). A prefix whose last line assigns `ans`, or with no proposals, is finished.
    """
    if beam < 1 or max_steps < 1:
        raise ValueError("stepwise_beam: beam and max_steps must be >= 1")
    reference = set(reference_values) if reference_values is not None else None
    live: list[tuple[list[str], float]] = [([], 0.0)]  # (lines, summed log-prob)
    done: list[BeamResult] = []
    for _ in range(max_steps):
        expansions: list[tuple[list[str], float]] = []
        seen: set[tuple[str, ...]] = set()
        for lines, lp in live:
            proposals = list(candidates_fn(question, list(lines)))
            if not proposals:
                done.append(BeamResult("\n".join(lines) + "\n", score_partial(question, "\n".join(lines), reference,
                                                                              timeout_s) + lm_weight * lp, False))
                continue
            for p in proposals:
                line, line_lp = (p, 0.0) if isinstance(p, str) else (p[0], float(p[1]))
                key = tuple(lines) + (line,)
                if key not in seen:
                    seen.add(key)
                    expansions.append((lines + [line], lp + line_lp))
        if not expansions:
            break
        scores = score_partials(question, ["\n".join(l) for l, _ in expansions], reference, timeout_s)
        ranked = sorted(range(len(expansions)), key=lambda i: -(scores[i] + lm_weight * expansions[i][1]))[:beam]
        live = []
        for i in ranked:
            lines, lp = expansions[i]
            if _finishes(lines[-1]):
                done.append(BeamResult("\n".join(lines) + "\n", scores[i] + lm_weight * lp, True))
            else:
                live.append((lines, lp))
        if not live:
            break
    if not done:  # out of steps: the live prefixes are the best there is
        scores = score_partials(question, ["\n".join(l) for l, _ in live], reference, timeout_s)
        done = [BeamResult("\n".join(l) + "\n", s + lm_weight * lp, False) for (l, lp), s in zip(live, scores)]
    return sorted(done, key=lambda r: (-r.finished, -r.score))
