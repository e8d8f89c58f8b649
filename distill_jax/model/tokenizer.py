"""Student tokenizers that spell rationales natively: HF tokenizer directories and SentencePiece vocabs trained here.

Rationale targets are code and equations: newlines, indentation, braces, `<`, backslashes. T5's tokenizer drops
whitespace (its pre-tokenizer splits on it) and its vocab lacks several of those characters. A native tokenizer
is a plain `tokenizers` pipeline that transformers (and TGI, vLLM) load from tokenizer.json as saved:
  - SentencePiece's whitespace rule: a space becomes `▁` and stays, nothing is collapsed, and only the first word
    gets the `▁` prefix (SentencePiece's dummy prefix); the vocab's character normaliser is kept;
  - newline, tab and one indentation level (four spaces) are tokens, and so is every character of the code
    symbols or of the training texts that the vocab cannot spell: AddedTokens that are not normalised, matched
    before the normaliser, so they come back unchanged (`with_symbols`, `spelling`);
  - tokenizer_config.json names PreTrainedTokenizerFast, so AutoTokenizer reads that pipeline (T5Tokenizer would
    rebuild T5's whitespace-dropping one from the vocab).
A trained vocab (`train_tokenizer`) comes from SentencePiece with the same rule (identity normalisation, no
whitespace removal, the whitespace symbols as user-defined pieces) and keeps SentencePiece's BPE merges as BPE.

`decode` is transformers' `decode(ids, skip_special_tokens=True)` up to the first EOS, so a plain transformers user
reads what distill-jax reads, and `decode(encode(text)) == text` for every text the tokenizer spells. What it
cannot spell is checked only where it matters: `check_targets` (training targets must come back exactly) and
`check_inputs` (no input character may read as <unk>) name the text, the character and the fix. The one
whitespace the rule loses is a leading space (the dummy prefix); inputs and rationales are stripped anyway.
Directories from before this pipeline (an `escape` key in distill_jax_tokenizer.json) load with their escape
(escape_era.py), so students trained then still read and write what they learnt.
"""
from __future__ import annotations

import json
import logging
import os
import string
from pathlib import Path
from typing import Iterable, Sequence

from distill_jax.model.escape_era import MARKERS, Escaper, hf_spellable, is_escape_era

log = logging.getLogger(__name__)

META_FILE = "distill_jax_tokenizer.json"
FORMAT = 2  # the native pipeline; escape-era metadata has no `format`
# Newline, tab and one indentation level: the whitespace of code that SentencePiece's rule cannot keep.
WHITESPACE_SYMBOLS = ("\n", "\t", "    ")
# What a tokenizer for programs and equations must spell: those, and every printable ASCII character.
CODE_SYMBOLS = WHITESPACE_SYMBOLS + tuple(c for c in string.printable if not c.isspace())
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
_METASPACE = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}
# Normalisers of T5 conversions that rewrite whitespace (strip, collapse runs); the character map stays.
_WHITESPACE_NORMALIZERS = ("Strip", "Replace")
# Rounds of `spelling`: after the characters that fail alone, those that fail only in context (a combining mark
# the normaliser composes with the letter before it) are found one per text and round.
_GROWTH_ROUNDS = 4


class TokenizerError(ValueError):
    """A tokenizer directory that cannot be loaded, or a vocab that cannot be trained."""


class SpellingError(TokenizerError):
    """A text the tokenizer cannot write verbatim, or an input character it would read as <unk>."""


def _hf_class():
    # transformers is imported on first use: `distill-jax verify/teach` never load a tokenizer.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast


def _char_name(c: str) -> str:
    return f"{c!r} (U+{ord(c):04X})"


class Tokenizer:
    """A HF tokenizer with T5's ids (pad 0, eos 1, unk 2) and the spelling checks; `meta` is distill_jax_tokenizer.json."""

    def __init__(self, hf, path: str | None = None, meta: dict | None = None) -> None:
        self.hf = hf
        self.path = path
        self.meta = dict(meta or {})
        self.pad_id = int(hf.pad_token_id)
        self.eos_id = int(hf.eos_token_id)
        self.unk_id = int(hf.unk_token_id) if hf.unk_token_id is not None else None
        self.vocab_size = len(hf)  # includes sentinels and added symbols: the model's vocab must cover it
        self._spelled: dict[str, bool] = {}
        self.escaper = None
        if is_escape_era(self.meta):
            specials = set(hf.all_special_tokens) | set(getattr(hf, "added_tokens_encoder", {}))
            self.escaper = Escaper(hf_spellable(hf), specials - set(MARKERS))

    # -- load / save -------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Tokenizer":
        """Load a HF tokenizer directory (tokenizer.json and/or spiece.model) without the network."""
        path = Path(directory)
        if not path.is_dir():
            raise TokenizerError(f"tokenizer directory {path} does not exist")
        if not any((path / f).is_file() for f in ("spiece.model", "tokenizer.json")):
            raise TokenizerError(f"{path} holds neither spiece.model nor tokenizer.json")
        meta = read_meta(path)
        _hf_class()
        from transformers import AutoTokenizer, T5TokenizerFast

        try:
            hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (ValueError, OSError):
            # A bare spiece.model without tokenizer_config.json: AutoTokenizer cannot tell the class.
            hf = T5TokenizerFast.from_pretrained(str(path), local_files_only=True)
        if hf.pad_token_id is None or hf.eos_token_id is None:
            raise TokenizerError(f"{path}: tokenizer has no pad or eos token")
        tok = cls(hf, str(path), meta)
        if tok.escaper is not None:
            log.warning("%s is an escape-era tokenizer: distill-jax escapes its inputs and unescapes its outputs as "
                        "the student learnt them, but plain transformers shows the escaped form (~n for a newline); "
                        "a student trained with a new tokenizer writes text natively", path)
        return tok

    def save(self, directory: str | os.PathLike) -> None:
        """Write the tokenizer so that `Tokenizer.load` and transformers' AutoTokenizer read it as it is."""
        out = Path(directory)
        self.hf.save_pretrained(str(out))
        if self.escaper is None and self.meta.get("format") == FORMAT:
            config_path = out / "tokenizer_config.json"
            config = json.loads(config_path.read_text(encoding="utf-8"))
            # transformers 5 writes its internal class name; PreTrainedTokenizerFast is the public alias that
            # every transformers version (and TGI, vLLM) reads as "the pipeline in tokenizer.json".
            config.update(tokenizer_class="PreTrainedTokenizerFast", clean_up_tokenization_spaces=False)
            config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if self.meta:
            (out / META_FILE).write_text(json.dumps(self.meta, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")

    # -- encode / decode ---------------------------------------------------------------------------------------------
    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        return self.encode_batch([text], add_eos)[0]

    def encode_batch(self, texts: Sequence[str], add_eos: bool = True) -> list[list[int]]:
        texts = [self.escaper.escape(t) for t in texts] if self.escaper else list(texts)
        rows = self.hf(texts, add_special_tokens=False)["input_ids"] if texts else []
        return [list(r) + [self.eos_id] if add_eos else list(r) for r in rows]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ids up to the first EOS, special tokens dropped (the escape undone for an escape-era vocab)."""
        kept = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i != self.pad_id:
                kept.append(i)
        if self.escaper is not None:
            return self.escaper.unescape(self.hf.decode(kept, clean_up_tokenization_spaces=False))
        return self.hf.decode(kept, skip_special_tokens=True)

    def decode_batch(self, rows: Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(r) for r in rows]

    # -- spelling ----------------------------------------------------------------------------------------------------
    def _mismatch(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """(text index, first position that does not come back) of every text not written verbatim."""
        out = []
        for n, (text, back) in enumerate(zip(texts, self.decode_batch(self.encode_batch(texts)))):
            if back != text:
                out.append((n, next((i for i, (a, b) in enumerate(zip(text, back)) if a != b),
                                    min(len(text), len(back)))))
        return out

    def check_targets(self, texts: Sequence[str], names: Sequence[str]) -> None:
        """Raise SpellingError naming the first text (by `names`) that does not decode back to itself."""
        bad = self._mismatch(texts)
        if not bad:
            return
        n, i = bad[0]
        text = texts[n]
        back = self.decode(self.encode(text))
        if i >= len(text):
            raise SpellingError(f"{names[n]}: {text!r} decodes as {back!r} (the tokenizer adds text at the end)")
        what = ("leading whitespace (SentencePiece's dummy prefix drops it)" if i == 0 and text[0].isspace()
                else _char_name(text[i]))
        fix = ("strip the text" if i == 0 and text[0].isspace() else
               f"add it to the tokenizer (Tokenizer.with_symbols([{text[i]!r}]); training does so for every "
               "character of its texts) or replace it in the text")
        raise SpellingError(f"{names[n]}: the tokenizer cannot write {what} at position {i} verbatim: "
                            f"{text[max(i - 20, 0):i + 20]!r} decodes as {back[max(i - 20, 0):i + 20]!r}. Fix: {fix}")

    def check_inputs(self, texts: Sequence[str], names: Sequence[str]) -> None:
        """Raise SpellingError naming the first input (by `names`) with a character the tokenizer reads as <unk>.

        Inputs are the tokenizer's business up to normalisation (a no-break space read as a space is what the
        model was trained on), but a character without a token is lost to the student."""
        if self.unk_id is None or self.escaper is not None:
            return  # no unknown token, or the escape spells every character
        for n, ids in enumerate(self.encode_batch(texts, add_eos=False)):
            if self.unk_id in ids:
                enc = self.hf(texts[n], add_special_tokens=False, return_offsets_mapping=True)
                start, end = next(o for i, o in zip(enc["input_ids"], enc["offset_mapping"]) if i == self.unk_id)
                char = texts[n][start:end][:1] or "?"
                raise SpellingError(
                    f"{names[n]}: the tokenizer has no token for {_char_name(char)}, so the student would read <unk> "
                    f"there. Fix: replace or remove it in the input, or use a student whose tokenizer spells it "
                    f"(training adds every character of its texts to the tokenizer)")

    def spells(self, symbol: str) -> bool:
        """Whether `symbol` alone encodes without <unk> and decodes back to itself."""
        if symbol not in self._spelled:
            ids = self.encode(symbol, add_eos=False)
            self._spelled[symbol] = self.unk_id not in ids and self.decode(ids) == symbol
        return self._spelled[symbol]

    def with_symbols(self, symbols: Iterable[str]) -> "Tokenizer":
        """A native copy: SentencePiece's whitespace rule, and each of `symbols` it does not spell as a token.

        Ids of the existing vocab are unchanged; new tokens get the next ids (grow the model's rows with
        model/vocab.py). The whitespace symbols always become tokens (an existing piece keeps its id)."""
        if self.escaper is not None:
            raise TokenizerError(f"{self.path}: an escape-era tokenizer cannot be extended; train a new one")
        symbols = list(dict.fromkeys(symbols))
        native = self if self.meta.get("format") == FORMAT else _native(self)
        new = [s for s in symbols if s in WHITESPACE_SYMBOLS or not native.spells(s)]
        if not new and native is self:
            return self
        hf = native.hf if native is not self else _copy(self.hf)
        from tokenizers import AddedToken

        before = len(hf)
        hf.add_tokens([AddedToken(s, normalized=False, special=False) for s in new])
        meta = {**native.meta, "added": [*native.meta.get("added", []), *(s for s in new if s not in
                                                                           native.meta.get("added", []))]}
        if len(hf) > before:
            log.info("tokenizer: %d new tokens %s", len(hf) - before, [s for s in new if hf.convert_tokens_to_ids(s)
                                                                        >= before])
        return Tokenizer(hf, None, meta)

    def spelling(self, texts: Sequence[str]) -> "Tokenizer":
        """This tokenizer when it writes every text verbatim; else a native copy with the code symbols and every
        character of `texts` it cannot spell as tokens. Texts it still cannot write fail in `check_targets`."""
        if self.escaper is not None or not self._mismatch(texts):
            return self
        tok = self.with_symbols(CODE_SYMBOLS)
        for _ in range(_GROWTH_ROUNDS):
            bad = tok._mismatch(texts)
            chars = sorted({c for n, _ in bad for c in set(texts[n]) if c != " " and not tok.spells(c)})
            if not chars:  # each character spelled alone: take the first one that fails in its text
                chars = sorted({texts[n][i] for n, i in bad if i < len(texts[n]) and texts[n][i] != " "} -
                               set(tok.meta.get("added", [])))
            if not chars:
                break
            tok = tok.with_symbols(chars)
        return tok


def read_meta(directory: str | os.PathLike) -> dict:
    """A tokenizer directory's distill_jax_tokenizer.json ({} when it has none)."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}: invalid JSON: {e}") from e


def _copy(hf):
    """A PreTrainedTokenizerFast around a copy of `hf`'s pipeline, with its special tokens."""
    from tokenizers import Tokenizer as Backend

    return _wrap(Backend.from_str(hf.backend_tokenizer.to_str()), hf)


def _wrap(backend, like=None, model_max_length: int | None = None):
    names = {k: getattr(like, k, None) if like is not None else None for k in ("pad_token", "eos_token", "unk_token")}
    extra = [t for t in (like.all_special_tokens if like is not None else []) if t not in names.values()]
    return _hf_class()(tokenizer_object=backend, pad_token=names["pad_token"] or "<pad>",
                       eos_token=names["eos_token"] or "</s>", unk_token=names["unk_token"] or "<unk>",
                       extra_special_tokens=extra, clean_up_tokenization_spaces=False,
                       model_max_length=model_max_length or getattr(like, "model_max_length", None) or 10 ** 30)


def _native(tok: Tokenizer) -> Tokenizer:
    """`tok` with SentencePiece's whitespace rule in place of its pre-tokenizer, decoder and whitespace normalisers."""
    spec = json.loads(tok.hf.backend_tokenizer.to_str())
    if "Metaspace" not in json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")]):
        # A byte-level or WordPiece pipeline has its own whitespace handling: only symbols are added to it.
        return Tokenizer(_copy(tok.hf), None, {**tok.meta, "format": FORMAT, "source": tok.path,
                                               "source_size": tok.vocab_size})
    norm = spec.get("normalizer")
    parts = norm["normalizers"] if norm and norm.get("type") == "Sequence" else [norm] if norm else []
    parts = [p for p in parts if p.get("type") not in _WHITESPACE_NORMALIZERS]
    spec["normalizer"] = None if not parts else parts[0] if len(parts) == 1 else {"type": "Sequence",
                                                                                  "normalizers": parts}
    spec["pre_tokenizer"] = dict(_METASPACE)
    spec["decoder"] = dict(_METASPACE)
    from tokenizers import Tokenizer as Backend

    hf = _wrap(Backend.from_str(json.dumps(spec)), tok.hf)
    return Tokenizer(hf, None, {**tok.meta, "format": FORMAT, "source": tok.path, "source_size": tok.vocab_size})


def _spm_backend(model_file: Path, model_type: str):
    """The `tokenizers` model of a SentencePiece file (BPE with its merges, or Unigram with its scores), native."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import processors
    from tokenizers.models import BPE, Unigram
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    if model_type == "bpe":
        kw = SentencePieceExtractor(str(model_file)).extract(BPE)
        backend = Backend(BPE(kw["vocab"], kw["merges"], unk_token="<unk>", fuse_unk=True))
    else:
        kw = SentencePieceExtractor(str(model_file)).extract(Unigram)
        backend = Backend(Unigram(kw["vocab"], unk_id=UNK_ID))
    spec = json.loads(backend.to_str())
    spec["pre_tokenizer"] = dict(_METASPACE)
    spec["decoder"] = dict(_METASPACE)
    backend = Backend.from_str(json.dumps(spec))
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", EOS_ID)])
    return backend


def train_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int,
                    model_type: str = "bpe", split_digits: bool = True,
                    character_coverage: float = 1.0, symbols: Sequence[str] = ()) -> Tokenizer:
    """Train a SentencePiece vocab on `texts` and write a native HF tokenizer directory to `out_dir`.

    The whitespace symbols (and `symbols`, e.g. names or operators worth one token each; like SentencePiece's
    user-defined pieces they are split out wherever they occur, inside words too) are user-defined pieces;
    every printable ASCII character is a piece, so code the corpus never showed still spells; text is kept as it is
    (identity normalisation, no whitespace removal). Whitespace-only pieces stay off: the pipeline splits at every
    space, so SentencePiece pieces like "▁▁▁" would never be used.
    split_digits=True is deliberate: every digit is its own piece, so a small student copies numbers from the
    question digit by digit instead of having to learn hundreds of number-chunk pieces (a unigram vocab on
    arithmetic text spends most of its pieces on them). It costs length: on GSM8K questions + solutions (BPE
    trained on 3000 train problems, measured on 500 test problems) 11% more tokens at 600 pieces, 18% more at
    2000. BPE is the default: unigram refuses vocab sizes above what templated text supports ("must be <= 202"
    for 600 pieces).
    """
    if model_type not in ("bpe", "unigram"):
        raise TokenizerError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sentences = [t for t in texts if t and not t.isspace()]
    if not sentences:
        raise TokenizerError("train_tokenizer: no non-empty texts")
    pieces = list(dict.fromkeys([*WHITESPACE_SYMBOLS, *symbols]))
    required = "".join(c for c in string.printable if not c.isspace())
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_prefix=str(out / "spiece"), vocab_size=vocab_size,
            model_type=model_type, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
            pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", character_coverage=character_coverage,
            split_digits=split_digits, user_defined_symbols=pieces, required_chars=required,
            normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
            allow_whitespace_only_pieces=False, max_sentence_length=1 << 16, minloglevel=2, num_threads=2)
    except RuntimeError as e:
        raise TokenizerError(f"SentencePiece refused vocab_size={vocab_size} ({model_type}): {e}") from e
    (out / "spiece.vocab").unlink(missing_ok=True)
    meta = {"format": FORMAT, "model_type": model_type, "vocab_size": vocab_size, "split_digits": split_digits,
            "symbols": pieces}
    tok = Tokenizer(_wrap(_spm_backend(out / "spiece.model", model_type)), str(out), meta).with_symbols(pieces)
    tok.save(out)
    return Tokenizer.load(out)
