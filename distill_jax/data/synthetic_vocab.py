"""Words of the synthetic world: people, objects with plausible containers and prices, activities, items on sale.

Kept apart from the generator so that the vocabulary can grow without touching the logic. Everything is a
tuple so the module has no mutable state (generation must be reproducible byte for byte).
"""
from __future__ import annotations

from typing import NamedTuple


class Person(NamedTuple):
    name: str
    gender: str  # "f" | "m": picks the pronoun


class Obj(NamedTuple):
    single: str
    plural: str
    verb: str  # how one gets them (3rd person singular)
    container: str
    containers: str
    food: bool
    price: tuple[int, int]  # plausible whole-dollar unit price range


class Activity(NamedTuple):
    verb: str  # 3rd person singular
    noun: str  # what the activity produces, plural
    periods: tuple[str, ...]
    price: tuple[int, int] | None  # unit price when the product can be sold


NAMES: tuple[Person, ...] = tuple(
    Person(n, g)
    for n, g in (
        ("Tom", "m"), ("Mia", "f"), ("Sam", "m"), ("Ava", "f"), ("Leo", "m"), ("Emma", "f"), ("Ben", "m"),
        ("Lily", "f"), ("Jack", "m"), ("Zoe", "f"), ("Noah", "m"), ("Ella", "f"), ("Liam", "m"), ("Nora", "f"),
        ("Owen", "m"), ("Ruby", "f"), ("Eli", "m"), ("Grace", "f"), ("Max", "m"), ("Ivy", "f"), ("Luke", "m"),
        ("Chloe", "f"), ("Ryan", "m"), ("Hannah", "f"), ("Omar", "m"), ("Sofia", "f"), ("Adam", "m"),
        ("Julia", "f"), ("Carlos", "m"), ("Aisha", "f"), ("Ravi", "m"), ("Mei", "f"), ("Kofi", "m"),
        ("Yuki", "f"), ("Diego", "m"), ("Lena", "f"), ("Ivan", "m"), ("Priya", "f"), ("Hugo", "m"),
        ("Fatima", "f"), ("Marco", "m"), ("Anna", "f"), ("Paul", "m"), ("Rosa", "f"), ("Kai", "m"),
        ("Nina", "f"), ("Felix", "m"), ("Lucy", "f"),
    )
)

OBJECTS: tuple[Obj, ...] = tuple(
    Obj(*row)
    for row in (
        ("apple", "apples", "picks", "bag", "bags", True, (1, 3)),
        ("orange", "oranges", "buys", "bag", "bags", True, (1, 3)),
        ("pear", "pears", "picks", "basket", "baskets", True, (1, 3)),
        ("peach", "peaches", "picks", "basket", "baskets", True, (1, 4)),
        ("lemon", "lemons", "buys", "bag", "bags", True, (1, 2)),
        ("tomato", "tomatoes", "picks", "basket", "baskets", True, (1, 3)),
        ("potato", "potatoes", "buys", "sack", "sacks", True, (1, 2)),
        ("carrot", "carrots", "picks", "bunch", "bunches", True, (1, 2)),
        ("cookie", "cookies", "bakes", "tray", "trays", True, (1, 3)),
        ("cupcake", "cupcakes", "bakes", "box", "boxes", True, (2, 5)),
        ("muffin", "muffins", "bakes", "tray", "trays", True, (2, 4)),
        ("donut", "donuts", "buys", "box", "boxes", True, (1, 3)),
        ("bagel", "bagels", "buys", "bag", "bags", True, (1, 3)),
        ("egg", "eggs", "collects", "carton", "cartons", True, (1, 2)),
        ("candy bar", "candy bars", "buys", "box", "boxes", True, (1, 3)),
        ("lollipop", "lollipops", "buys", "jar", "jars", True, (1, 2)),
        ("pencil", "pencils", "buys", "box", "boxes", False, (1, 3)),
        ("crayon", "crayons", "buys", "box", "boxes", False, (1, 2)),
        ("marker", "markers", "buys", "pack", "packs", False, (2, 4)),
        ("eraser", "erasers", "buys", "pack", "packs", False, (1, 2)),
        ("notebook", "notebooks", "buys", "pack", "packs", False, (2, 6)),
        ("sticker", "stickers", "collects", "sheet", "sheets", False, (1, 2)),
        ("marble", "marbles", "collects", "bag", "bags", False, (1, 2)),
        ("seashell", "seashells", "collects", "bucket", "buckets", False, (1, 3)),
        ("stamp", "stamps", "collects", "album", "albums", False, (1, 4)),
        ("baseball card", "baseball cards", "collects", "pack", "packs", False, (1, 5)),
        ("book", "books", "buys", "box", "boxes", False, (4, 15)),
        ("comic book", "comic books", "buys", "stack", "stacks", False, (2, 6)),
        ("toy car", "toy cars", "buys", "box", "boxes", False, (3, 9)),
        ("balloon", "balloons", "buys", "pack", "packs", False, (1, 2)),
        ("candle", "candles", "buys", "box", "boxes", False, (2, 6)),
        ("flower", "flowers", "picks", "bunch", "bunches", False, (1, 4)),
        ("tulip", "tulips", "plants", "row", "rows", False, (1, 3)),
        ("rose", "roses", "buys", "bouquet", "bouquets", False, (2, 5)),
        ("button", "buttons", "collects", "jar", "jars", False, (1, 2)),
        ("bead", "beads", "buys", "bag", "bags", False, (1, 2)),
        ("bottle of water", "bottles of water", "buys", "case", "cases", False, (1, 2)),
        ("can of soup", "cans of soup", "buys", "case", "cases", True, (1, 3)),
        ("battery", "batteries", "buys", "pack", "packs", False, (1, 3)),
        ("light bulb", "light bulbs", "buys", "box", "boxes", False, (2, 5)),
        ("postcard", "postcards", "buys", "pack", "packs", False, (1, 2)),
        ("rock", "rocks", "collects", "bucket", "buckets", False, (1, 3)),
        ("acorn", "acorns", "collects", "bag", "bags", False, (1, 1)),
        ("feather", "feathers", "collects", "box", "boxes", False, (1, 2)),
        ("puzzle", "puzzles", "buys", "box", "boxes", False, (5, 12)),
        ("shirt", "shirts", "buys", "box", "boxes", False, (8, 20)),
        ("cup", "cups", "buys", "box", "boxes", False, (2, 5)),
        ("plate", "plates", "buys", "stack", "stacks", False, (2, 6)),
    )
)

ACTIVITIES: tuple[Activity, ...] = tuple(
    Activity(*row)
    for row in (
        ("reads", "pages", ("hour", "day"), None),
        ("swims", "laps", ("day", "week"), None),
        ("runs", "miles", ("day", "week"), None),
        ("writes", "pages", ("day", "week"), None),
        ("bakes", "cookies", ("hour", "day"), (1, 3)),
        ("folds", "paper cranes", ("hour", "day"), None),
        ("paints", "pictures", ("day", "week"), (5, 20)),
        ("knits", "scarves", ("week", "month"), (6, 15)),
        ("plants", "trees", ("day", "week"), None),
        ("washes", "cars", ("day", "week"), None),
        ("sells", "tickets", ("hour", "day"), None),
        ("makes", "bracelets", ("hour", "day"), (2, 8)),
    )
)

# Things bought one at a time at a round price, so that percentage discounts come out in whole dollars.
SALE_ITEMS: tuple[str, ...] = (
    "jacket", "bike", "lamp", "backpack", "video game", "watch", "chair", "desk", "tent", "guitar",
    "scooter", "pair of shoes", "coat", "camera", "helmet", "skateboard",
)

COLORS: tuple[str, ...] = ("red", "blue", "green", "yellow", "white", "black", "purple", "orange")
SIZES: tuple[str, ...] = ("small", "large", "fresh")
SPEND_ON: tuple[str, ...] = (
    "lunch", "a movie ticket", "a new toy", "snacks", "a magazine", "bus fare", "a gift", "school supplies",
)
FRIEND_WORDS: tuple[tuple[str, str], ...] = (("friend", "friends"), ("cousin", "cousins"), ("classmate", "classmates"))
DISTRACTOR_PLACES: tuple[str, ...] = ("the park", "the library", "the store", "school", "the beach")
