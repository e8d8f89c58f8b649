"""A stand-in for T5's own spiece.model, shared by the tokenizer and round-trip tests (no torch needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import sentencepiece as spm

# What t5's vocab cannot spell (and newline, which its pipeline drops): the symbols growth must add.
T5_MISSING = "{}<~\\^|`"


def make_t5_like_spiece(out_dir: Path, texts: Iterable[str], vocab_size: int = 500) -> Path:
    """Unigram, nmt_nfkc, none of T5_MISSING in the vocab: a directory holding a bare spiece.model, which
    transformers loads as T5Tokenizer with T5's whitespace-dropping pipeline and 100 sentinels."""
    banned = str.maketrans("", "", T5_MISSING)
    texts = [t.translate(banned) for t in texts] + ["[pot] def f(x): return x * 2 == 3 != 4 >= 5 > 1 # @ & $ %"]
    out_dir.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(out_dir / "spiece"),
                                   vocab_size=vocab_size, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, character_coverage=1.0, normalization_rule_name="nmt_nfkc",
                                   minloglevel=2)
    (out_dir / "spiece.vocab").unlink(missing_ok=True)
    return out_dir
