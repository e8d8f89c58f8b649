"""The final number of a rationale: extraction from free text, canonical form, and comparison with gold.

Extraction (`extract_answer`) reads text as LLMs and students really write it. Explicit markers win over
the last number in the text: `\\boxed{...}`, `#### N`, `The (final) answer is N`, `Answer: N` (also bold
`**Answer:** N`). When several markers occur, the last one in the text wins (a model's final word
overrides an earlier draft); a marker whose segment holds no number is skipped. Within a marker's segment
(up to the end of its line) the number after the last `=` is taken, so `The answer is 12 * 3 = 36.`
gives 36. Without a usable marker, the last number in the text is the answer.

A number may carry a sign (`-`, `−`), a currency sign (`$`, `\\$`, `€`, `£`), thousands commas (`1,080`,
only in exact groups of three), decimals, scientific notation (`1.5e3`, `1.5 \\times 10^{3}`), a
fraction (`3/4`, `\\frac{3}{4}`), a mixed number (`2 1/2`, `2\\frac{1}{2}`; only proper fractions, so
`12 3/4` is 12.75 but `3 6/2` is not a mixed number) and trailing units or words (`18 dollars`).

Percentages: `25%` reads as 25, not 0.25. Gold answers of "what percent" questions are written as the
percent number (GSM8K: "#### 25" for 25%), and a teacher that writes `25%` means that number.

Canonical form (`normalize_number`), as the shared data's README defines it: integers without `.0`,
otherwise the shortest exact decimal, no exponent, no `+`, no `-0`. Values are handled as Fractions and
Decimals, never binary floats. A fraction whose decimal does not terminate (1/3) is rounded half-even to
16 significant digits (`0.3333333333333333`), the precision of the float-derived gold answers in AddSub
and SingleEq; `answers_match` absorbs the rounding. Values whose integer part has more than 100 digits
are rejected (None): no word problem needs them and they would only cost time.

Cut-off texts (`cut_off`): a rationale that ends right after its answer marker, inside `\\boxed{`, on a dangling
operator or separator, or (with no marker at all) mid-sentence or on an operation without its result is a
reject, not a last-number guess: a teacher reply truncated at max_tokens or a student stopped at max_new_tokens.

Comparison (`answers_match`): two numbers match when |pred - gold| <= 1e-6 (absolute) OR
|pred - gold| <= 1e-4 * |gold| (relative). Why: AddSub/SingleEq gold answers are binary-float decimals
such as `0.6666666666666666`, `1.8333333333333335` or `0.8333333333333334` (see the data README's known
issues), so an exact `2/3` or `11/6` differs from them in the 16th digit; the absolute term covers golds
near zero, the relative term large golds with float noise. A prediction rounded to 2 decimals (`0.67`)
still does not match 2/3: rounding is an error in the answer, not noise. Non-numeric gold answers (AQuA
option letters) compare as stripped, case-insensitive strings.
"""
from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from fractions import Fraction

SIGNIFICANT_DIGITS = 16
MAX_INT_DIGITS = 100
REL_TOL = Fraction(1, 10**4)
ABS_TOL = Fraction(1, 10**6)

# --- one number token -------------------------------------------------------------------------------
# A minus is a sign only where it cannot be a binary operator or a hyphen (`10-3`, `3-4 days`).
_SIGN = r"(?P<sign>(?<![\w)\]}.])[-−–])?"
_CUR = r"(?:(?:\\?\$|€|£)\s?)?"
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
_EXP = r"(?:[eE](?P<e1>[-+]?\d+)|\s?(?:[x×*]|\\times|\\cdot)\s?10\s?(?:\^|\*\*)\s?\{?\s?(?P<e2>[-−]?\d+)\s?\}?)"


def _latex_frac(num: str, den: str) -> str:
    return rf"\\[dt]?frac\s?\{{\s?(?P<{num}>\d+)\s?\}}\s?\{{\s?(?P<{den}>\d+)\s?\}}"


_NUMBER = re.compile(
    _SIGN
    + _CUR
    + r"(?:"
    + rf"(?P<whole>\d+)\s?{_latex_frac('mn', 'md')}"  # 2\frac{1}{2}
    + rf"|{_latex_frac('fn', 'fd')}"
    + r"|(?P<mixw>\d+)\s(?P<mixn>\d+)/(?P<mixd>\d+)(?!\d|[.,/]\d)"  # 2 1/2 (proper fraction checked later)
    + rf"|(?P<num>{_DIGITS})(?P<exp>{_EXP})?(?:\s?/\s?(?P<den>\d+(?:\.\d+)?)(?!\d|\.\d))?"
    + r")"
    + r"(?P<pct>\s?\\?%)?"
)

# --- markers -------------------------------------------------------------------------------------------
_MARKERS = re.compile(
    r"(?:####|(?:the\s+)?(?:final\s+)?answer\s*(?:is|=|:)|\*\*\s*(?:final\s+)?answer\s*:?\s*\*\*\s*:?)",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LATEX_NOISE = [
    (re.compile(r"\\(?:text|mathrm|textbf|mathbf|operatorname)\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\[,!;:]|\\quad|\\qquad|~"), ""),
    (re.compile(r"\\left|\\right"), ""),
    (re.compile(r"\^\s*\{?\\circ\}?"), ""),
]


def _clean(text: str) -> str:
    """Remove LaTeX spacing/text wrappers and markdown emphasis that sit between a marker and its number."""
    for pattern, repl in _LATEX_NOISE:
        text = pattern.sub(repl, text)
    return text.replace("**", " ").replace("__", " ").replace("`", " ")


def _value(m: re.Match) -> Fraction | None:
    """The exact value of one `_NUMBER` match, or None when the match is not a sensible number."""
    g = m.groupdict()
    try:
        if g["whole"] is not None or g["mixw"] is not None:
            whole = int(g["whole"] if g["whole"] is not None else g["mixw"])
            n, d = (int(g["mn"]), int(g["md"])) if g["whole"] is not None else (int(g["mixn"]), int(g["mixd"]))
            if d == 0 or n >= d:
                return None
            value = whole + Fraction(n, d)
        elif g["fn"] is not None:
            if int(g["fd"]) == 0:
                return None
            value = Fraction(int(g["fn"]), int(g["fd"]))
        else:
            digits = g["num"].replace(",", "")
            if len(digits.split(".")[0]) > MAX_INT_DIGITS:
                return None
            value = Fraction(digits)
            if g["exp"]:
                power = int((g["e1"] or g["e2"]).replace("−", "-"))
                if abs(power) > MAX_INT_DIGITS:
                    return None
                value *= Fraction(10) ** power
            if g["den"]:
                den = Fraction(g["den"])
                if den == 0:
                    return None
                value /= den
    except (ValueError, ZeroDivisionError):
        return None
    return -value if g["sign"] else value


def canonical(value: Fraction | Decimal | int) -> str | None:
    """The canonical string of an exact value (see the module docstring), None when it is too large."""
    value = Fraction(value)
    if abs(value) >= Fraction(10) ** MAX_INT_DIGITS:
        return None
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1:  # terminating: exact
        dec = Context(prec=MAX_INT_DIGITS * 3).divide(Decimal(value.numerator), Decimal(value.denominator))
    else:
        dec = Context(prec=SIGNIFICANT_DIGITS, rounding=ROUND_HALF_EVEN).divide(
            Decimal(value.numerator), Decimal(value.denominator)
        )
    text = format(dec, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _numbers(text: str) -> list[Fraction]:
    out = []
    for m in _NUMBER.finditer(text):
        value = _value(m)
        if value is not None:
            out.append(value)
        elif m.group("mixw") is not None and int(m.group("mixd")):  # `8 10/2` is two numbers, not a mixed one
            out += [Fraction(int(m.group("mixw"))), Fraction(int(m.group("mixn")), int(m.group("mixd")))]
    return out


def normalize_number(s: str) -> str | None:
    """Canonical string of a text that is exactly one number (with optional `$`, `%`, commas, trailing `.`).

    Accepts Python reprs too (`18.0`, `1e-05`, `-0.0`); anything else (words, two numbers, `nan`) is None.
    """
    if s is None:
        return None
    text = _clean(str(s)).strip().rstrip(".").strip()
    if text.startswith("+"):
        text = text[1:]
    m = _NUMBER.fullmatch(text)
    if not m:
        return None
    value = _value(m)
    return None if value is None else canonical(value)


def _segment_answer(segment: str) -> Fraction | None:
    """The number a marker's segment states: after the last `=` if any, else the first number."""
    line = _clean(segment.lstrip(" \t*:\n")).split("\n", 1)[0]
    if "=" in line:
        after = line.rsplit("=", 1)[1]
        found = _numbers(after)
        if found:
            return found[0]
    found = _numbers(line)
    return found[0] if found else None


_BRACE = re.compile(r"[{}]")
_MAX_CANDIDATES = 32  # markers tried, latest first: a real answer is among the last few, garbage repeats them
_TAIL = 2_000  # characters searched first for the last number (an output can be long garbage)


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    """(position, inner text) of each `\\boxed{...}`, nested braces matched in one linear pass."""
    starts = {m.end() - 1: m.start() for m in _BOXED.finditer(text)}  # position of its `{` -> of `\\boxed`
    out, stack = [], []
    for m in _BRACE.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            opened = stack.pop()
            if opened in starts:
                out.append((starts[opened], text[opened + 1 : m.start()]))
    return out


def _last_number(text: str) -> Fraction | None:
    for tail in (text[-_TAIL:], text) if len(text) > _TAIL else (text,):
        found = _numbers(_clean(tail))
        if found:
            return found[-1]
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a free-text rationale as a canonical number string, or None when there is none."""
    if not text:
        return None
    candidates: list[tuple[int, str]] = _boxed_contents(text)
    candidates += [(m.start(), text[m.end() : m.end() + 200]) for m in _MARKERS.finditer(text)]
    for _, segment in sorted(candidates, key=lambda c: -c[0])[:_MAX_CANDIDATES]:
        value = _segment_answer(segment)
        if value is not None:
            return canonical(value)
    value = _last_number(text)
    return None if value is None else canonical(value)


# --- cut-off texts -----------------------------------------------------------------------------------------
# A text's last character when an equation or a sentence was cut (`**` closes markdown bold: not an operator).
_DANGLING_OPERATOR = re.compile(r"(?:[=+\-−–/×÷^(\[{]|(?<!\*)\*|\\times|\\cdot|\\div|\\frac)\s*$")
_DANGLING_SEPARATOR = re.compile(r"[,:;]\s*$")
# `... 48 + 24` at the end: an operation whose result never came (a fraction `3/4` has no spaces around `/`).
_OPEN_OPERATION = re.compile(
    r"[\d)]\s*(?:[+\-−*×÷^]|\s/\s|\\times|\\cdot)\s*\(?\s*\\?\$?\s?\d[\d,]*(?:\.\d+)?\s*$")
_LAST_WORD = re.compile(r"[A-Za-z]+\s*$")
_MARKER_TAIL = " \t\n*:$\\"  # what may sit between a marker and its number


def _open_boxed(text: str) -> bool:
    """Whether the last `\\boxed{` is never closed."""
    found = list(_BOXED.finditer(text))
    if not found:
        return False
    depth = 0
    for m in _BRACE.finditer(text, found[-1].end() - 1):
        depth += 1 if m.group() == "{" else -1
        if depth == 0:
            return False
    return True


def cut_off(text: str) -> str | None:
    """Why a free-text rationale reads as cut off before its final answer (a teacher reply truncated at
    max_tokens, a student stopped at max_new_tokens), or None. Only endings a finished text does not have:
    - an answer marker with nothing after it (`... The answer is`), or a `\\boxed{` never closed;
    - a dangling operator, `=`, `,`, `:` or `(` at the very end (`... 48 + 24 =`, `The answer is 1,`);
    - without any answer marker: a sentence's last word (`... so she has 72 apples in`), or an operation
      without its result (`... she sold 48 + 24`). With a marker a last word is the answer's unit
      (`The answer is 72 apples`)."""
    stripped = text.rstrip()
    if not stripped:
        return None
    if _open_boxed(stripped):
        return "cut off: inside \\boxed{"
    markers = list(_MARKERS.finditer(stripped))
    if markers and not stripped[markers[-1].end():].strip(_MARKER_TAIL):
        return f"cut off: after {markers[-1].group().strip()!r}"
    for pattern, where in ((_DANGLING_OPERATOR, "mid-equation"), (_DANGLING_SEPARATOR, "mid-sentence")):
        dangling = pattern.search(stripped)
        if dangling:
            return f"cut off: {where} (ends with {dangling.group().strip()!r})"
    if markers or _boxed_contents(stripped):  # the answer is stated: `The answer is 72 apples` is finished
        return None
    if _OPEN_OPERATION.search(stripped):
        return "cut off: mid-equation (an operation without its result)"
    word = _LAST_WORD.search(stripped)
    if word:
        return f"cut off: mid-sentence (ends with {word.group().strip()!r})"
    return None


def _as_fraction(s: str) -> Fraction | None:
    canon = normalize_number(s)
    if canon is None:
        return None
    try:
        return Fraction(Decimal(canon))
    except InvalidOperation:
        return None


def answers_match(pred: str | None, gold: str | None) -> bool:
    """Numeric equality within the tolerance in the module docstring; non-numeric golds compare as text."""
    if pred is None or gold is None:
        return False
    p, g = _as_fraction(str(pred)), _as_fraction(str(gold))
    if g is None:
        return str(pred).strip().upper() == str(gold).strip().upper()
    if p is None:
        return False
    diff = abs(p - g)
    return diff <= ABS_TOL or diff <= REL_TOL * abs(g)
