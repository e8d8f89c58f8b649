"""The moves a synthetic story is made of: each states facts in a sentence and adds computed nodes.

Start moves open a story (there is no quantity yet); continue moves take the current quantity and add one
step (two or three for sums over several people and discounts). Several templates per move keep the surface
varied; `applies` says whether a continue move makes sense for the current quantity (one cannot give away
laps that were swum, or compare against "each friend").
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, NamedTuple

from distill_jax.data.synthetic_graph import Builder, Quantity, Retry, Subj, say
from distill_jax.data.synthetic_vocab import (
    ACTIVITIES, COLORS, DISTRACTOR_PLACES, FRIEND_WORDS, OBJECTS, SALE_ITEMS, SIZES, SPEND_ON,
)


class Move(NamedTuple):
    name: str
    steps: int
    run: Callable[[Builder, Quantity | None], Quantity]
    applies: Callable[[Quantity], bool] = lambda q: True


def _num(b: Builder, lo: int = 2, hi: int = 99) -> int:
    return b.rng.randint(lo, hi)


def _price(b: Builder, price: tuple[int, int]) -> int:
    # At least $2: a step that leaves the value unchanged (12 things at $1 = $12) makes a sub-question's
    # answer equal the next one's, so a decomposition that stops early would still look right.
    return b.rng.randint(max(2, price[0]), max(2, price[1]))


# ------------------------------------------------------------------------------------------ start moves
def start_groups(b: Builder, _q) -> Quantity:
    o, s = b.obj(), b.person()
    a, n = _num(b, 2, 9), _num(b, 2, 12)
    text = say(b.rng.choice((
        "{S} {get} {a} {cs} of {ps}. Each {c} has {n} {ps}.",
        "There are {n} {ps} in each {c}. {S} {get} {a} {cs}.",
        "{S} {get} {a} {cs} of {ps}, and each {c} holds {n} {ps}.",
    )), s, get=s.words()[o.verb], a=a, n=n, c=o.container, cs=o.containers, ps=o.plural)
    b.sentence(text)
    va, vn = b.given(o.containers, a, text), b.given(f"{o.plural} per {o.container}", n, text)
    q = Quantity("", 0, o.plural, s, o.verb, food=o.food, price=o.price)
    return b.compute(q, "mul", [va, vn], text)


def start_price(b: Builder, _q) -> Quantity:
    o, s = b.obj(), b.person()
    a, p = _num(b, 2, 15), _price(b, o.price)
    text = say(b.rng.choice((
        "{S} {buys} {a} {ps}. Each {p1} costs ${p}.",
        "{S} {buys} {a} {ps} for ${p} each.",
        "One {p1} costs ${p}. {S} {buys} {a} {ps}.",
    )), s, a=a, p=p, ps=o.plural, p1=o.single)
    b.sentence(text)
    va, vp = b.given(o.plural, a, text), b.given(f"price per {o.single}", p, text)
    q = Quantity("", 0, "dollars", s, "spends", money=True, tangible=False)
    return b.compute(q, "mul", [va, vp], text)


def start_rate(b: Builder, _q) -> Quantity:
    s = b.person()
    if b.pick(("activity", "activity", "activity", "pay")) == "pay":
        r, t = _num(b, 5, 25), _num(b, 2, 9)
        text = say(b.rng.choice(("{S} {earns} ${r} per hour. {Pron} {works} {t} hours.",
                                 "{S} {works} {t} hours and {earns} ${r} each hour.")), s, r=r, t=t)
        b.sentence(text)
        vr, vt = b.given("hourly pay", r, text), b.given("hours", t, text)
        q = Quantity("", 0, "dollars", s, "earns", money=True, tangible=False, repeatable=False)
        return b.compute(q, "mul", [vr, vt], text)
    act = b.rng.choice(ACTIVITIES)
    period = b.rng.choice(act.periods)
    r, t = _num(b, 2, 20), _num(b, 2, 9)
    text = say(b.rng.choice((
        "{S} {verb} {r} {noun} every {period}. {Pron} {does} this for {t} {period}s.",
        "{S} {verb} {r} {noun} per {period} for {t} {period}s.",
        "In one {period}, {S} {verb} {r} {noun}. {Pron} {keeps} going for {t} {period}s.",
    )), s, verb=s.words()[act.verb], r=r, noun=act.noun, period=period, t=t)
    b.sentence(text)
    vr, vt = b.given(f"{act.noun} per {period}", r, text), b.given(f"{period}s", t, text)
    q = Quantity("", 0, act.noun, s, act.verb, tangible=act.price is not None, price=act.price, repeatable=False)
    return b.compute(q, "mul", [vr, vt], text)


def start_combine(b: Builder, _q) -> Quantity:
    o, s = b.obj(), b.person()
    days = ("Monday", "Tuesday", "Wednesday")
    counts = [_num(b, 2, 40) for _ in range(int(b.pick(("2", "2", "3"))))]
    w = s.words()
    text = say("{S} {get} {a} {ps} on Monday and {c} {ps} on Tuesday.", s, get=w[o.verb], a=counts[0],
               c=counts[1], ps=o.plural)
    if len(counts) == 3:
        text += " " + say("On Wednesday, {pron} {get} {d} more.", s, get=w[o.verb], d=counts[2])
    b.sentence(text)
    inputs = [b.given(f"{o.plural} on {day}", c, text) for day, c in zip(days, counts)]
    q = Quantity("", 0, o.plural, s, o.verb, " in total", food=o.food, price=o.price)
    return b.compute(q, "add", inputs, text)


def _compare(b: Builder, base: Quantity, r: Subj) -> Quantity:
    """`r` has k times as many / n more / n fewer / half as many as `base`: one computed node for `r`."""
    kind = b.pick(("times", "more", "fewer") + (("half",) if base.value % 2 == 0 else ()))
    verb, noun = r.words()[base.verb], base.noun
    q = replace(base, subj=r)
    if kind == "times":
        k = b.rng.choice((2, 2, 3, 4))
        word = {2: "twice", 3: "three times", 4: "four times"}[k]
        what = "as much money" if base.money else f"as many {noun}"
        text = say("{R} {verb} {word} {what} as {S}.", base.subj, R=r.name, verb=verb, word=word, what=what)
        b.sentence(text)
        return b.compute(q, "mul", [base.var, k], text)
    if kind == "half":
        what = "as much money" if base.money else f"as many {noun}"
        text = say("{R} {verb} half {what} as {S}.", base.subj, R=r.name, verb=verb, what=what)
        b.sentence(text)
        return b.compute(q, "div", [base.var, 2], text)
    n = _num(b, 2, 30)
    if kind == "fewer" and n >= base.value:
        raise Retry
    if base.money:
        what = f"${n} more" if kind == "more" else f"${n} less"
    else:
        what = f"{n} {kind} {noun}"
    text = say("{R} {verb} {what} than {S}.", base.subj, R=r.name, verb=verb, what=what)
    b.sentence(text)
    vn = b.given(f"{kind} than {base.subj.name}", n, text)
    return b.compute(q, "add" if kind == "more" else "sub", [base.var, vn], text)


def start_compare(b: Builder, _q) -> Quantity:
    o, first = b.obj(), b.person()
    a = _num(b, 5, 60)
    text = say("{S} {has} {a} {ps}.", first, a=a, ps=o.plural)
    b.sentence(text)
    base = Quantity(b.given(f"{first.name} {o.plural}", a, text), a, o.plural, first, "has", food=o.food,
                    price=o.price)
    return _compare(b, base, b.person())


def start_discount(b: Builder, _q) -> Quantity:
    s, item = b.person(), b.rng.choice(SALE_ITEMS)
    price = 20 * _num(b, 2, 15)
    # Not 50%: the discount would equal the price paid, and so answer the wrong sub-question right.
    pct = b.rng.choice([p for p in (5, 10, 15, 20, 25, 30, 40, 60, 75) if price * p % 100 == 0])
    text = say(b.rng.choice((
        "{S} {wants} to buy a {item} that costs ${price}. The store gives a {pct}% discount.",
        "A {item} costs ${price}. {S} {buys} it during a sale with {pct}% off.",
    )), s, item=item, price=price, pct=pct)
    b.sentence(text)
    vp, vd = b.given(f"{item} price", price, text), b.given("discount percent", pct, text)
    disc = Quantity("", 0, "dollars", s, "saves", money=True, tangible=False)
    disc = b.compute(disc, "pct", [vp, vd], text, base="discount", ask="How much is the discount?",
                     claim="The discount is {} dollars.")
    paid = Quantity("", 0, "dollars", s, "pays", money=True, tangible=False)
    return b.compute(paid, "sub", [vp, disc.var], text)


# --------------------------------------------------------------------------------------- continue moves
def more(b: Builder, q: Quantity) -> Quantity:
    n, w = _num(b, 2, 30), q.subj.words()
    if q.money:
        if q.verb in ("spends", "pays"):
            text = say("{S} also {spends} ${n} on {thing}.", q.subj, n=n, thing=b.rng.choice(SPEND_ON))
            new = replace(q, verb="spends", suffix=" in total")
        else:
            text = say("Then {pron} {gets} another ${n} from {R}.", q.subj, n=n, R=b.person().name)
            new = replace(q, verb="has", suffix=" now")
    elif q.verb in ("has", "gets"):
        templates = ["{S} {gets} {n} more {noun} from {R}.", "Then {pron} {gets} {n} more {noun}."]
        if not q.subj.plural:
            templates.append("{R} gives {S} {n} more {noun}.")
        text = say(b.rng.choice(templates), q.subj, n=n, noun=q.noun, R=b.person().name)
        new = replace(q, verb="has", suffix=" now")
    else:
        text = say(b.rng.choice(("Then {pron} {verb} {n} more {noun}.", "After that, {pron} {verb} {n} more.")),
                   q.subj, verb=w[q.verb], n=n, noun=q.noun)
        new = replace(q, suffix=" in total")
    b.sentence(text)
    vn = b.given(f"more {q.noun}", n, text)
    return b.compute(new, "add", [q.var, vn], text)


def less(b: Builder, q: Quantity) -> Quantity:
    if q.money and q.verb in ("spends", "pays"):
        bill = b.rng.choice([x for x in (10, 20, 50, 100, 200, 500, 1000) if x > q.value] or [0])
        if not bill:
            raise Retry
        text = say(b.rng.choice(("{S} {brings} ${bill} to the store.", "{S} {pays} with a ${bill} bill.")),
                   q.subj, bill=bill)
        b.sentence(text)
        vb = b.given("money brought", bill, text)
        new = replace(q, verb="has", suffix=" left")
        return b.compute(new, "sub", [vb, q.var], text)
    if q.value < 3:
        raise Retry
    n = _num(b, 1, min(q.value - 1, 40))
    if q.money:
        text = say("{S} {spends} ${n} on {thing}.", q.subj, n=n, thing=b.rng.choice(SPEND_ON))
    else:
        templates = ["{S} {gives} {n} of them to {R}.", "{S} {loses} {n} of them.", "{S} {sells} {n} of them."]
        if q.food:
            templates.append("{S} {eats} {n} of them.")
        text = say(b.rng.choice(templates), q.subj, n=n, R=b.person().name)
    b.sentence(text)
    vn = b.given("money spent" if q.money else f"{q.noun} given away", n, text)
    return b.compute(replace(q, verb="has", suffix=" left"), "sub", [q.var, vn], text)


def share(b: Builder, q: Quantity) -> Quantity:
    ks = [k for k in range(2, 10) if q.value % k == 0 and q.value // k >= 2]
    if not ks:
        raise Retry
    k = b.rng.choice(ks)
    one, many = b.rng.choice(FRIEND_WORDS)
    what = "the money" if q.money else "them"
    text = say("{S} {shares} {what} equally among {k} {many}.", q.subj, what=what, k=k, many=many)
    b.sentence(text)
    vk = b.given(many, k, text)
    each = Subj(f"each {one}", False, "n")
    return b.compute(replace(q, subj=each, verb="gets", suffix=""), "div", [q.var, vk], text)


def part(b: Builder, q: Quantity) -> Quantity:
    """A fraction or percentage of the current amount: colour/size of things, or money saved."""
    v = q.value
    if b.pick(("fraction", "percent")) == "fraction":
        ds = [d for d in (2, 3, 4, 5, 10) if v % d == 0]
        if not ds:
            raise Retry
        d = b.rng.choice(ds)
        n = b.rng.randint(1, d - 1)
        while d % n == 0 and n > 1:  # keep the fraction in lowest terms (2/4 reads oddly)
            n = b.rng.randint(1, d - 1)
        frac = "half" if d == 2 else f"{n}/{d}"
        op, inputs_tail, base = "frac", [n, d], None
    else:
        ps = [p for p in (10, 20, 25, 30, 40, 50, 60, 75) if v * p % 100 == 0]
        if not ps:
            raise Retry
        pct = b.rng.choice(ps)
        frac, op, inputs_tail, base = f"{pct}%", "pct", None, pct
    if q.money:
        text = say("{S} {saves} {frac} of {pos} money.", q.subj, frac=frac)
        new = replace(q, verb="saves", suffix="")
    else:
        adj = b.rng.choice(SIZES if q.food else COLORS)
        templates = (("{Frac} of all their {noun} are {adj}.",) if q.subj.plural
                     else ("{Frac} of them are {adj}.", "Of these, {frac} are {adj}."))
        text = say(b.rng.choice(templates), q.subj, frac=frac, Frac=frac[0].upper() + frac[1:], adj=adj,
                   noun=q.noun)
        new = replace(q, noun=f"{adj} {q.noun}", adjective=True)
    b.sentence(text)
    if op == "pct":
        inputs_tail = [b.given("percent saved" if q.money else f"percent {new.noun.split()[0]}", base, text)]
    return b.compute(new, op, [q.var, *inputs_tail], text)


def times(b: Builder, q: Quantity) -> Quantity:
    k = _num(b, 2, 6)
    if b.rng.random() < 0.5:
        text, suffix, what = say("{Pron} {does} this every week for {k} weeks.", q.subj, k=k), f" in {k} weeks", "weeks"
    else:
        text, suffix, what = say("{Pron} {does} this {k} times a month.", q.subj, k=k), " in a month", "times a month"
    b.sentence(text)
    vk = b.given(what, k, text)
    return b.compute(replace(q, suffix=suffix), "mul", [q.var, vk], text)


def sell(b: Builder, q: Quantity) -> Quantity:
    p = _price(b, q.price)
    which = "the rest" if q.suffix == " left" else "them"
    text = say(b.rng.choice(("{S} {sells} {which} for ${p} each.", "{S} {sells} each of {which} for ${p}.")), q.subj,
               p=p, which=which)
    b.sentence(text)
    vp = b.given("price each", p, text)
    new = replace(q, noun="dollars", verb="earns", suffix="", money=True, tangible=False, price=None)
    return b.compute(new, "mul", [q.var, vp], text)


def compare(b: Builder, q: Quantity) -> Quantity:
    return _compare(b, q, b.person())


def _together(b: Builder, q: Quantity, others: int) -> Quantity:
    parts, last = [q], q
    for _ in range(others):
        last = _compare(b, last, b.person())
        parts.append(last)
    names = [p.subj.name for p in parts]
    group = Subj(", ".join(names[:-1]) + " and " + names[-1], True, "p")
    suffix = q.suffix.replace(" in total", "").replace(" now", "") + " together"
    new = replace(q, subj=group, suffix=suffix)
    return b.compute(new, "add", [p.var for p in parts], b.story[-1], base=f"total {q.noun}")


def together2(b: Builder, q: Quantity) -> Quantity:
    return _together(b, q, 1)


def together3(b: Builder, q: Quantity) -> Quantity:
    return _together(b, q, 2)


def add_distractor(b: Builder, at_start: bool) -> None:
    """One fact with a number the question does not need, at the start or just before the question."""
    who = b.rng.choice(b.people) if b.people and b.rng.random() < 0.5 else b.person().name
    a = _num(b, 6, 60)
    kind = b.rng.randrange(3)
    if kind == 0:
        text, base = f"{who} is {a} years old.", f"{who} age"
    elif kind == 1:
        text, base = f"{who} lives {a} miles from {b.rng.choice(DISTRACTOR_PLACES)}.", f"{who} miles"
    else:
        o = b.rng.choice([o for o in OBJECTS if o.plural not in b.objects])
        text, base = f"{who} has {a} {o.plural} at home.", f"{who} {o.plural}"
    b.sentence(text, at_start=at_start)
    b.given(base, a, text, distractor=True)


def _named(q: Quantity) -> bool:
    return q.subj.named


START_MOVES = (
    Move("groups", 1, start_groups), Move("price", 1, start_price), Move("rate", 1, start_rate),
    Move("combine", 1, start_combine), Move("compare_start", 1, start_compare), Move("discount", 2, start_discount),
)
CONTINUE_MOVES = (
    Move("more", 1, more),
    Move("less", 1, less, lambda q: q.money or q.tangible),
    Move("share", 1, share, lambda q: q.tangible or (q.money and q.verb in ("has", "earns", "saves"))),
    Move("part", 1, part, lambda q: (not q.money and q.tangible and not q.adjective)
         or (q.money and q.verb in ("has", "earns"))),
    Move("times", 1, times, lambda q: q.suffix == "" and q.repeatable and q.subj.named
         and q.verb not in ("has", "gets", "saves")),
    Move("sell", 1, sell, lambda q: not q.money and q.tangible and q.price is not None),
    Move("compare", 1, compare, _named),
    Move("together2", 2, together2, _named),
    Move("together3", 3, together3, _named),
)
MOVES = {m.name: m for m in START_MOVES + CONTINUE_MOVES}
