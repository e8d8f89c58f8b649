"""Tokenizers: reversible encoding of code-heavy targets on a T5-like vocab and on a trained one."""
from __future__ import annotations

import json
import random

import pytest
import sentencepiece as spm

from distill_jax.model.tokenizer import MARKERS, Tokenizer, TokenizerError, train_tokenizer

POT = (
    "def solution():\n"
    "    prices = {'apple': 3, 'pear': 5}\n"
    "    seen = {1, 2}\n"
    "    total = 0\n"
    "    for name, price in prices.items():\n"
    "        if price >= 4 and price != 7:\n"
    "            total += price * 2\n"
    "        elif price <= 3 or price < 1:\n"
    "            total -= price // 2 % 3\n"
    "        else:\n"
    "            while total > 100:\n"
    "                total = ~total ^ 1 | 2\n"
    "    ans = total  # done\n"
    "    return ans\n"
)
EOT = "a = 48 / 2\nb = 48 + a\nc = b * 1.5 - 3\nans = c\n"
COT = "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\n\nThe answer is 72."
TRICKY = [
    POT, EOT, COT, "",
    "\tx = '\\n'\r\n\ty = \"a\\tb\"",          # tabs, CR, backslashes
    "  leading and   inner   and trailing  ",  # runs of spaces SentencePiece would collapse
    "\n\n\nonly newlines\n\n",
    "literal markers ~n ~i ~~ $x0041 @n ^i |s `t #n &s",
    "specials </s> <pad> <unk> <extra_id_0> <extra_id_99>",
    "f(x) = {x | x < 5} ∪ {y ≥ 2}, 3 × 4 ÷ 2 = 6, ﬁx café ½ €5",
    "a\u00a0b\u2003c\u200bd",               # no-break space, em space, zero-width space
    "emoji 🙂 and e\u0301 combining",
    "x<<48/2=24>>24 #### 72",
]


def _texts(data_dir, n: int = 1500) -> list[str]:
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").open(encoding="utf-8")][:n]
    return [r["question"] for r in rows] + [r["solution"] for r in rows]


@pytest.fixture(scope="module")
def t5_like(data_dir, tmp_path_factory) -> Tokenizer:
    """Stand-in for t5's spiece.model: unigram, nmt_nfkc, no `{ } < ~ \\ ^ |` and no newline in the vocab,
    loaded from a bare spiece.model (so through the sentinel-adding T5 path, extra_ids=100)."""
    out = tmp_path_factory.mktemp("t5_like")
    banned = str.maketrans("", "", "{}<~\\^|`")
    texts = [t.translate(banned) for t in _texts(data_dir)] + ["def f(x): return x * 2 == 3 != 4 >= 5 > 1 # @ & $ %"]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(out / "spiece"), vocab_size=500,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, normalization_rule_name="nmt_nfkc", minloglevel=2)
    return Tokenizer.load(out)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory) -> Tokenizer:
    out = tmp_path_factory.mktemp("trained")
    return train_tokenizer(_texts(data_dir, 800) + [POT, EOT, COT], out, vocab_size=400, model_type="bpe",
                           split_digits=True)


@pytest.fixture(params=["t5_like", "trained"])
def tok(request) -> Tokenizer:
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("text", TRICKY, ids=range(len(TRICKY)))
def test_round_trip_exact(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert ids[-1] == tok.eos_id and tok.unk_id not in ids
    assert tok.decode(ids) == text


def test_random_round_trip(tok: Tokenizer) -> None:
    alphabet = "ab x1=+-*/(){}[]<>~^|`\\'\"#$%&@!?:;.,_\n\t  \r" + "é½×🙂\u00a0"
    rng = random.Random(0)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(300)]
    for text, ids in zip(texts, tok.encode_batch(texts)):
        assert tok.unk_id not in ids
        assert tok.decode(ids) == text, (text, tok.escape(text))


def test_t5_like_escapes_what_it_cannot_spell(t5_like: Tokenizer) -> None:
    assert t5_like.vocab_size == 500 + 100  # sentinels: the model's vocab must cover them
    assert (t5_like.pad_id, t5_like.eos_id, t5_like.unk_id) == (0, 1, 2)
    escaped = t5_like.escape(POT)
    assert not set("{}<~\\^|\n") & set(escaped)
    assert "  " not in escaped and escaped == escaped.strip()


def test_decode_stops_at_eos_and_drops_pad(tok: Tokenizer) -> None:
    ids = tok.encode("x = 3\nans = x")
    garbage = tok.encode("never shown")
    assert tok.decode(ids + garbage) == "x = 3\nans = x"
    assert tok.decode([tok.pad_id] + ids[:-1] + [tok.pad_id] * 3) == "x = 3\nans = x"


def test_trained_layout_loads_in_transformers(trained: Tokenizer) -> None:
    from transformers import AutoTokenizer, T5TokenizerFast

    for hf in (T5TokenizerFast.from_pretrained(trained.path), AutoTokenizer.from_pretrained(trained.path)):
        assert len(hf) == trained.vocab_size == 400
        assert (hf.pad_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2)
        escaped = trained.escape(POT)
        assert hf(escaped, add_special_tokens=True)["input_ids"] == trained.encode(POT)


def test_trained_markers_single_tokens_and_digits_split(trained: Tokenizer) -> None:
    marker_ids = {trained.hf.convert_tokens_to_ids(m) for m in MARKERS}
    assert trained.unk_id not in marker_ids
    ids = trained.encode("a\n    b", add_eos=False)
    assert sum(i in marker_ids for i in ids) == 2  # newline, one indent level
    pieces = trained.hf.convert_ids_to_tokens(trained.encode("12345", add_eos=False))
    assert [p.lstrip("▁") for p in pieces if p.lstrip("▁")] == list("12345")


def test_reload_gives_same_ids(trained: Tokenizer, tmp_path) -> None:
    trained.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.encode_batch(TRICKY) == trained.encode_batch(TRICKY)
    assert again.escaper.esc == trained.escaper.esc


def test_load_errors_name_the_path(tmp_path) -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing")
    with pytest.raises(TokenizerError, match=str(tmp_path)):
        Tokenizer.load(tmp_path)


def test_train_rejects_bad_model_type(tmp_path) -> None:
    with pytest.raises(TokenizerError, match="model_type"):
        train_tokenizer(["a b c"], tmp_path, vocab_size=50, model_type="wordpiece")
