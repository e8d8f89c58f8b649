"""Escape-era tokenizer directories: read and decode students trained before the tokenizer spelled code natively.

Until the native tokenizer (model/tokenizer.py), every text went through a reversible escape chosen for the
vocab: whitespace other than one space between words became markers (`~n` newline, `~i` four spaces, `~s`
one space, `~t` tab, `~whhhh` any other), the escape character itself `~e`, and characters the vocab could not
spell short codes (`~(` for `{`, `~l` for `<`, ...) or hex code points (`~xhhhh`, `~yhhhhhh`); text that
would read as a special token had its first character escaped. `E` is the first of ESCAPE_CANDIDATES the
vocab spells (`~` for a trained vocab). A student trained that way writes escaped text, so its tokenizer
keeps escaping inputs and unescaping outputs; nothing new is written in this form. Such a directory is told
by its distill_jax_tokenizer.json: an `escape` key and no `format` (`is_escape_era`).
"""
from __future__ import annotations

import functools
import re
import string
import unicodedata
from typing import Callable, Iterable


class EscapeError(ValueError):
    """A vocab that cannot carry the escape."""


# Preference order: characters rare in math word problems and their rationales first.
ESCAPE_CANDIDATES = "~^|@`#&*$%"
_WS_CODES = {"\n": "n", "\t": "t"}
_INDENT = 4
# Short codes for characters T5's vocab is known to lack; used only when the code character is spellable.
_SHORT_CODES = {"{": "(", "}": ")", "<": "l", ">": "g", "\\": "/", "~": "-", "^": "v", "|": "!", "`": "'"}
_RESERVED_CODES = set("entiswxy")
_WS_RUN = re.compile(r"\s+")
# The markers a trained vocab gets as single pieces (with the escape character `~` it is trained for).
MARKERS = ("~n", "~i", "~s", "~t")


class Escaper:
    """Reversible text <-> spellable text, given a predicate saying which characters the vocab spells."""

    def __init__(self, spellable: Callable[[str], bool], special_tokens: Iterable[str] = ()) -> None:
        self._spellable = functools.lru_cache(maxsize=None)(spellable)
        esc = next((c for c in ESCAPE_CANDIDATES if self._spellable(c)), None)
        if esc is None:
            raise EscapeError(f"the vocab spells none of the escape candidates {ESCAPE_CANDIDATES!r}")
        for needed in "entiswxy0123456789abcdef":
            if not self._spellable(needed):
                raise EscapeError(f"the vocab cannot spell {needed!r}, which the reversible escape needs")
        self.esc = esc
        self._short = {c: code for c, code in _SHORT_CODES.items() if code not in _RESERVED_CODES
                       and self._spellable(code)}
        self._unshort = {code: c for c, code in self._short.items()}
        self._specials = tuple(sorted((s for s in special_tokens if s), key=len, reverse=True))
        self._special_starts = {s[0] for s in self._specials}

    # -- escape ------------------------------------------------------------------------------------
    def _char(self, c: str) -> str:
        if c == self.esc:
            return self.esc + "e"
        if unicodedata.combining(c) == 0 and self._spellable(c):
            return c
        if c in self._short:
            return self.esc + self._short[c]
        cp = ord(c)
        return f"{self.esc}x{cp:04x}" if cp <= 0xFFFF else f"{self.esc}y{cp:06x}"

    def _content(self, chunk: str) -> str:
        out = []
        for i, c in enumerate(chunk):
            if c in self._special_starts and any(chunk.startswith(s, i) for s in self._specials):
                cp = ord(c)
                out.append(self.esc + self._short[c] if c in self._short else f"{self.esc}x{cp:04x}")
            else:
                out.append(self._char(c))
        return "".join(out)

    def _whitespace(self, run: str) -> str:
        out, i = [], 0
        while i < len(run):
            c = run[i]
            if c == " ":
                j = i
                while j < len(run) and run[j] == " ":
                    j += 1
                n = j - i
                out.append((self.esc + "i") * (n // _INDENT) + (self.esc + "s") * (n % _INDENT))
                i = j
                continue
            out.append(self.esc + _WS_CODES[c] if c in _WS_CODES else f"{self.esc}w{ord(c):04x}")
            i += 1
        return "".join(out)

    def escape(self, text: str) -> str:
        pieces, pos = [], 0
        for m in _WS_RUN.finditer(text):
            pieces.append(self._content(text[pos:m.start()]))
            run = m.group()
            interior = m.start() > 0 and m.end() < len(text)
            if run == " " and interior:
                pieces.append(" ")
            else:
                # Spaces around the markers keep the next word's SentencePiece "▁" prefix, so a line
                # starts with the same tokens wherever it sits; the decoder drops them.
                pieces.append((" " if m.start() > 0 else "") + self._whitespace(run)
                              + (" " if m.end() < len(text) else ""))
            pos = m.end()
        pieces.append(self._content(text[pos:]))
        return "".join(pieces)

    # -- unescape ----------------------------------------------------------------------------------
    def unescape(self, text: str) -> str:
        esc, out, i, n = self.esc, [], 0, len(text)
        after_marker = False
        while i < n:
            c = text[i]
            if c != esc or i + 1 >= n:
                if c == " " and (after_marker or self._marker_at(text, i + 1)):
                    i += 1
                    continue
                out.append(c)
                after_marker = False
                i += 1
                continue
            code = text[i + 1]
            value, width, is_ws = self._decode_code(text, i, code)
            if value is None:  # malformed escape (a model can emit one): keep the text as it is
                out.append(c)
                after_marker = False
                i += 1
                continue
            out.append(value)
            after_marker = is_ws
            i += width
        return "".join(out)

    def _decode_code(self, text: str, i: int, code: str) -> tuple[str | None, int, bool]:
        if code == "e":
            return self.esc, 2, False
        if code == "n":
            return "\n", 2, True
        if code == "t":
            return "\t", 2, True
        if code == "i":
            return " " * _INDENT, 2, True
        if code == "s":
            return " ", 2, True
        if code in "wxy":
            width = 6 if code == "y" else 4
            digits = text[i + 2:i + 2 + width]
            if len(digits) == width and all(d in string.hexdigits for d in digits):
                return chr(int(digits, 16)), 2 + width, code == "w"
            return None, 0, False
        if code in self._unshort:
            return self._unshort[code], 2, False
        return None, 0, False

    def _marker_at(self, text: str, i: int) -> bool:
        return i + 1 < len(text) and text[i] == self.esc and (
            text[i + 1] in "ntis" or (text[i + 1] == "w" and i + 6 <= len(text)))


def hf_spellable(hf) -> Callable[[str], bool]:
    unk = hf.unk_token_id

    def spellable(c: str) -> bool:
        if c.isspace():
            return False
        ids = hf.encode(c, add_special_tokens=False)
        return unk not in ids and hf.decode(ids, clean_up_tokenization_spaces=False) == c

    return spellable


def is_escape_era(meta: dict) -> bool:
    """Whether a directory's distill_jax_tokenizer.json was written by the escape-era tokenizer."""
    return "escape" in meta and "format" not in meta
