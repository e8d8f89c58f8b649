"""Student tokenizers: HF tokenizer directories (offline) and SentencePiece vocabs trained from scratch.

Rationale targets are code and equations: newlines, indentation, braces, `<`, backslashes. T5's
SentencePiece vocab cannot spell several of these and its normaliser collapses whitespace, so every text
goes through a reversible escape chosen for the tokenizer in use (`Escaper`): characters are probed once
(does the character survive encode -> decode?) and only the ones that do not are escaped. `decode` is the
exact inverse of `encode` for any text.

Escaped form, with `E` the first of `ESCAPE_CANDIDATES` the vocab spells (`~` for our own vocabs):
  whitespace other than one space between two words -> markers `En` newline, `Ei` four spaces,
    `Es` one space, `Et` tab, `Ewhhhh` any other whitespace; spaces next to a marker carry no meaning
    (HF tokenizers drop them around user-defined symbols), so a run of markers reads the same with or
    without them;
  `E` itself -> `Ee` (not `EE`: `EEn` would hold the marker `En`, which HF splits out as one token); an unspellable character -> a short code (`E(` for `{`, `El` for `<`, ...) or
    `Exhhhh` / `Eyhhhhhh` (hex code point);
  text that would read as a special token (`</s>`, `<extra_id_0>`) has its first character escaped.
"""
from __future__ import annotations

import functools
import json
import os
import re
import string
import unicodedata
from pathlib import Path
from typing import Callable, Iterable, Sequence

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
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


class TokenizerError(ValueError):
    """A tokenizer directory that cannot be loaded or a vocab that cannot carry the escape."""


class Escaper:
    """Reversible text <-> spellable text, given a predicate saying which characters the vocab spells."""

    def __init__(self, spellable: Callable[[str], bool], special_tokens: Iterable[str] = ()) -> None:
        self._spellable = functools.lru_cache(maxsize=None)(spellable)
        esc = next((c for c in ESCAPE_CANDIDATES if self._spellable(c)), None)
        if esc is None:
            raise TokenizerError(f"the vocab spells none of the escape candidates {ESCAPE_CANDIDATES!r}")
        for needed in "entiswxy0123456789abcdef":
            if not self._spellable(needed):
                raise TokenizerError(f"the vocab cannot spell {needed!r}, which the reversible escape needs")
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


def _hf_spellable(hf) -> Callable[[str], bool]:
    unk = hf.unk_token_id

    def spellable(c: str) -> bool:
        if c.isspace():
            return False
        ids = hf.encode(c, add_special_tokens=False)
        return unk not in ids and hf.decode(ids, clean_up_tokenization_spaces=False) == c

    return spellable


class Tokenizer:
    """A HF tokenizer plus the reversible escape chosen for its vocab. Ids: pad 0, eos 1, unk 2 (T5)."""

    def __init__(self, hf, path: str | None = None) -> None:
        self.hf = hf
        self.path = path
        self.pad_id = int(hf.pad_token_id)
        self.eos_id = int(hf.eos_token_id)
        self.unk_id = int(hf.unk_token_id) if hf.unk_token_id is not None else None
        self.vocab_size = len(hf)  # includes sentinels: the model's vocab must cover it
        specials = set(hf.all_special_tokens) | set(getattr(hf, "added_tokens_encoder", {}))
        specials -= set(MARKERS)
        self.escaper = Escaper(_hf_spellable(hf), specials)
        self._drop = {self.pad_id, self.eos_id}

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Tokenizer":
        """Load a HF tokenizer directory (spiece.model and/or tokenizer.json) without the network."""
        path = Path(directory)
        if not path.is_dir():
            raise TokenizerError(f"tokenizer directory {path} does not exist")
        if not any((path / f).is_file() for f in ("spiece.model", "tokenizer.json")):
            raise TokenizerError(f"{path} holds neither spiece.model nor tokenizer.json")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer, T5TokenizerFast

        try:
            hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (ValueError, OSError):
            # A bare spiece.model without tokenizer_config.json: AutoTokenizer cannot tell the class.
            hf = T5TokenizerFast.from_pretrained(str(path), local_files_only=True)
        if hf.pad_token_id is None or hf.eos_token_id is None:
            raise TokenizerError(f"{path}: tokenizer has no pad or eos token")
        return cls(hf, str(path))

    def save(self, directory: str | os.PathLike) -> None:
        """Write the tokenizer so that `Tokenizer.load` and transformers' `from_pretrained` read it."""
        self.hf.save_pretrained(str(directory))

    def escape(self, text: str) -> str:
        return self.escaper.escape(text)

    def unescape(self, text: str) -> str:
        return self.escaper.unescape(text)

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        return self.encode_batch([text], add_eos)[0]

    def encode_batch(self, texts: Sequence[str], add_eos: bool = True) -> list[list[int]]:
        escaped = [self.escaper.escape(t) for t in texts]
        rows = self.hf(escaped, add_special_tokens=False)["input_ids"] if escaped else []
        return [list(r) + [self.eos_id] if add_eos else list(r) for r in rows]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids up to the first EOS, pads dropped, escape undone."""
        kept = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in self._drop:
                kept.append(i)
        return self.escaper.unescape(self.hf.decode(kept, clean_up_tokenization_spaces=False))

    def decode_batch(self, rows: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(r) for r in rows]


def _train_escaper() -> Escaper:
    """The escape a trained vocab will have: `~` spelled, every NFKC-stable character spelled."""
    return Escaper(lambda c: not c.isspace() and unicodedata.normalize("NFKC", c) == c)


def train_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int,
                    model_type: str = "bpe", split_digits: bool = True,
                    character_coverage: float = 1.0) -> Tokenizer:
    """Train a SentencePiece vocab on `texts` and write a HF T5 tokenizer directory to `out_dir`.

    split_digits=True is deliberate: every digit is its own piece, so a small student copies numbers
    from the question digit by digit instead of having to learn hundreds of number-chunk pieces (a
    unigram vocab on arithmetic text spends most of its pieces on them). It costs length: on GSM8K
    questions + solutions (BPE trained on 3000 train problems, measured on 500 test problems) 11% more
    tokens at 600 pieces, 18% more at 2000. BPE is the default: unigram refuses vocab sizes
    above what templated text supports ("must be <= 202" for 600 pieces).
    The texts are escaped as they will be at encode time, and the escape markers are single pieces.
    """
    if model_type not in ("bpe", "unigram"):
        raise TokenizerError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    escaper = _train_escaper()
    sentences = [escaper.escape(t) for t in texts if t and not t.isspace()]
    if not sentences:
        raise TokenizerError("train_tokenizer: no non-empty texts")
    # Every printable ASCII character is required so code the corpus never showed still spells.
    required = "".join(c for c in string.printable if not c.isspace())
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_prefix=str(out / "spiece"), vocab_size=vocab_size,
            model_type=model_type, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
            pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", character_coverage=character_coverage,
            split_digits=split_digits, user_defined_symbols=list(MARKERS), required_chars=required,
            normalization_rule_name="nmt_nfkc", max_sentence_length=1 << 16, minloglevel=2,
            num_threads=2)
    except RuntimeError as e:
        raise TokenizerError(f"SentencePiece refused vocab_size={vocab_size} ({model_type}): {e}") from e
    (out / "spiece.vocab").unlink(missing_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import T5TokenizerFast

    # No sentinels: a student trained from scratch never sees span corruption.
    hf = T5TokenizerFast.from_pretrained(str(out), extra_ids=0, local_files_only=True)
    tok = Tokenizer(hf, str(out))
    tok.save(out)
    (out / "distill_jax_tokenizer.json").write_text(json.dumps(
        {"model_type": model_type, "vocab_size": vocab_size, "split_digits": split_digits,
         "escape": tok.escaper.esc}, indent=2) + "\n")
    return Tokenizer.load(out)
