"""The computation graph of a synthetic problem and the builder that moves write into.

A node is a plain dict (it goes into the JSONL row as is):
- given:    {"var", "op": "given", "inputs": [], "value", "sentence", "distractor"}
- computed: {"var", "op", "inputs", "value", "sentence", "ask", "claim"}
`inputs` holds variable names (str) or literal whole numbers (int) the text implies ("twice" -> 2).
`ask` is the question whose answer is the node; `claim` a sentence stating it, "{}" where the number goes.
"""
from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction

from distill_jax.data.synthetic_vocab import NAMES, OBJECTS, Obj, Person

MAX_VALUE = 1000
OPS = ("add", "sub", "mul", "div", "pct", "frac")

# 3rd person singular -> base form, for every verb a template may conjugate.
VERBS = {
    v3: base
    for v3, base in (
        ("has", "have"), ("does", "do"), ("buys", "buy"), ("gives", "give"), ("gets", "get"), ("picks", "pick"),
        ("bakes", "bake"), ("collects", "collect"), ("plants", "plant"), ("reads", "read"), ("swims", "swim"),
        ("runs", "run"), ("writes", "write"), ("folds", "fold"), ("paints", "paint"), ("knits", "knit"),
        ("washes", "wash"), ("sells", "sell"), ("makes", "make"), ("spends", "spend"), ("earns", "earn"),
        ("pays", "pay"), ("saves", "save"), ("shares", "share"), ("eats", "eat"), ("loses", "lose"),
        ("uses", "use"), ("works", "work"), ("brings", "bring"), ("wants", "want"), ("splits", "split"),
        ("puts", "put"), ("keeps", "keep"), ("fills", "fill"),
    )
}


class Retry(Exception):
    """The numbers drawn do not fit (not whole, negative, too big, not divisible): draw again."""


def apply_op(op: str, values: list[Fraction]) -> Fraction:
    if op == "add":
        return sum(values, Fraction(0))
    if op == "sub":
        return values[0] - sum(values[1:], Fraction(0))
    if op == "mul":
        out = Fraction(1)
        for v in values:
            out *= v
        return out
    if op == "div":
        return values[0] / values[1]
    if op == "pct":
        return values[0] * values[1] / 100
    if op == "frac":
        return values[0] * values[1] / values[2]
    raise ValueError(f"unknown op {op!r}")


def render_expr(op: str, terms: list[str]) -> str:
    """The arithmetic of one node as text that is valid Python, sympy and plain prose alike."""
    if op == "add":
        return " + ".join(terms)
    if op == "sub":
        return " - ".join(terms)
    if op == "mul":
        return " * ".join(terms)
    if op == "div":
        return f"{terms[0]} / {terms[1]}"
    if op == "pct":
        return f"{terms[0]} * {terms[1]} / 100"
    if op == "frac":
        return f"{terms[0]} * {terms[1]} / {terms[2]}"
    raise ValueError(f"unknown op {op!r}")


@dataclass(frozen=True)
class Subj:
    name: str
    plural: bool = False
    gender: str = "n"  # f | m | n (neuter singular like "each friend") | p (plural)

    @property
    def named(self) -> bool:
        return not self.plural and self.gender in ("f", "m")

    def words(self) -> dict[str, str]:
        """Template words for this subject: name, pronouns, and every verb conjugated to agree with it."""
        pron = {"f": "she", "m": "he"}.get(self.gender, "they" if self.plural else "it")
        pos = {"f": "her", "m": "his"}.get(self.gender, "their")
        obj = {"f": "her", "m": "him"}.get(self.gender, "them")
        if self.gender == "n":
            pron, pos, obj = self.name, f"{self.name}'s", self.name
        out = {v3: (base if self.plural else v3) for v3, base in VERBS.items()}
        out.update(S=self.name, pron=pron, Pron=pron[0].upper() + pron[1:], pos=pos, obj=obj)
        return out


def say(template: str, subj: Subj, **kw) -> str:
    text = template.format(**subj.words(), **kw)
    return text[0].upper() + text[1:]


@dataclass
class Quantity:
    """What the story currently talks about: the last computed node and how to speak about it."""

    var: str
    value: int
    noun: str  # plural noun phrase ("red pencils"); "dollars" for money
    subj: Subj
    verb: str  # 3rd person singular key of VERBS
    suffix: str = ""  # " left", " now", " in total", ...
    money: bool = False
    tangible: bool = True  # a thing one can give away or split (not laps or miles)
    food: bool = False
    price: tuple[int, int] | None = None
    adjective: bool = False  # the noun already carries a colour/size
    repeatable: bool = True  # "does this every week" reads well (not after "... for 5 days")

    def conj(self) -> str:
        return VERBS[self.verb] if self.subj.plural else self.verb

    def ask(self) -> str:
        does = "do" if self.subj.plural else "does"
        what = "How much money" if self.money else f"How many {self.noun}"
        return f"{what} {does} {self.subj.name} {VERBS[self.verb]}{self.suffix}?"

    def claim(self) -> str:
        unit = "dollars" if self.money else self.noun
        text = f"{self.subj.name} {self.conj()} {{}} {unit}{self.suffix}."
        return text[0].upper() + text[1:]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Quantity":
        d = dict(d)
        d["subj"] = Subj(**d["subj"])
        d["price"] = tuple(d["price"]) if d.get("price") else None
        return cls(**d)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


@dataclass
class Builder:
    """Collects story sentences and graph nodes while moves run; draws people and objects without repeats."""

    rng: random.Random
    nodes: list[dict] = field(default_factory=list)
    story: list[str] = field(default_factory=list)
    people: list[str] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    current: Quantity | None = None
    # Choices that decide a node's op (compare kind, fraction or percent, ...): recorded while generating,
    # replayed by similar_problem so that the graph keeps its structure.
    variants: list[str] = field(default_factory=list)
    replay: list[str] | None = None

    @classmethod
    def resume(cls, rng: random.Random, extra: dict) -> "Builder":
        """A builder holding an existing problem's story and graph, ready for one more move."""
        b = cls(rng, [dict(n) for n in extra["graph"]], list(extra["story"]), list(extra["people"]),
                list(extra["objects"]), variants=list(extra["variants"]))
        b.current = Quantity.from_dict(extra["final"])
        return b

    def pick(self, options: list[str] | tuple[str, ...]) -> str:
        if self.replay is not None:
            if not self.replay or self.replay[0] not in options:
                raise Retry
            choice = self.replay.pop(0)
        else:
            choice = self.rng.choice(options)
        self.variants.append(choice)
        return choice

    def values(self) -> dict[str, Fraction]:
        return {n["var"]: Fraction(n["value"]) for n in self.nodes}

    def person(self) -> Subj:
        p: Person = self.rng.choice([p for p in NAMES if p.name not in self.people])
        self.people.append(p.name)
        return Subj(p.name, False, p.gender)

    def obj(self) -> Obj:
        o: Obj = self.rng.choice([o for o in OBJECTS if o.plural not in self.objects])
        self.objects.append(o.plural)
        return o

    def var(self, base: str) -> str:
        name, taken, k = slug(base) or "x", {n["var"] for n in self.nodes}, 2
        if name[0].isdigit():
            name = "n_" + name
        out = name
        while out in taken:
            out, k = f"{name}_{k}", k + 1
        return out

    def sentence(self, text: str, at_start: bool = False) -> str:
        if at_start:
            self.story.insert(0, text)
        else:
            self.story.append(text)
        return text

    def given(self, base: str, value: int, sentence: str, distractor: bool = False) -> str:
        var = self.var(base)
        node = {"var": var, "op": "given", "inputs": [], "value": str(value), "sentence": sentence,
                "distractor": distractor}
        # Distractors go first so that the last node is always the question's target.
        self.nodes.insert(0, node) if distractor else self.nodes.append(node)
        return var

    def compute(self, q: Quantity, op: str, inputs: list, sentence: str, *, base: str | None = None,
                ask: str | None = None, claim: str | None = None) -> Quantity:
        """Add a computed node for `q` (its var and value are filled in here); Retry when the value is unfit."""
        vals = self.values()
        value = apply_op(op, [vals[x] if isinstance(x, str) else Fraction(x) for x in inputs])
        if value.denominator != 1 or not 1 <= value <= MAX_VALUE:
            raise Retry
        # Every step changes the value: otherwise a rationale (or decomposition) that stops one step early
        # would still reach the right number.
        if self.current is not None and value == self.current.value:
            raise Retry
        q.value = int(value)
        q.var = self.var(base or f"{q.subj.name} {'money' if q.money else q.noun}{q.suffix}")
        self.nodes.append({"var": q.var, "op": op, "inputs": list(inputs), "value": str(q.value),
                           "sentence": sentence, "ask": ask or q.ask(), "claim": claim or q.claim()})
        self.current = q
        return q
