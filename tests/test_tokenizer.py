"""Tokenizers that spell code natively: a T5-like vocab given the symbols it lacks, a trained vocab, escape-era dirs."""
from __future__ import annotations

import json
import random
import string

import pytest
import sentencepiece as spm
from helpers_tokenizer import make_t5_like_spiece
from transformers import AutoTokenizer, T5TokenizerFast

from distill_jax.model.escape_era import MARKERS
from distill_jax.model.tokenizer import (META_FILE, WHITESPACE_SYMBOLS, SpellingError, Tokenizer, TokenizerError,
                                         train_tokenizer)

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
    "leading and   inner   and trailing  ",    # runs of spaces T5's pipeline would collapse
    "\n\n\nonly newlines\n\n",
    "literal markers ~n ~i ~~ $x0041 @n ^i |s `t #n &s",
    "f(x) = {x | x < 5} ∪ {y ≥ 2}, 3 × 4 ÷ 2 = 6, ﬁx café ½ €5",
    "a\u00a0b\u2003c\u200bd",               # no-break space, em space, zero-width space
    "emoji 🙂 and e\u0301 combining",
    "x<<48/2=24>>24 #### 72",
]
ALPHABET = "ab x1=+-*/(){}[]<>~^|`\\'\"#$%&@!?:;.,_\n\t  \r" + "é½×🙂\u00a0"


def _texts(data_dir, n: int = 1500) -> list[str]:
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").open(encoding="utf-8")][:n]
    return [r["question"] for r in rows] + [r["solution"] for r in rows]


@pytest.fixture(scope="module")
def t5_stock(data_dir, tmp_path_factory) -> Tokenizer:
    """T5's pipeline on a vocab without `{ } < ~ \\ ^ |` (helpers_tokenizer), 100 sentinels."""
    return Tokenizer.load(make_t5_like_spiece(tmp_path_factory.mktemp("t5_like"), _texts(data_dir)))


@pytest.fixture(scope="module")
def t5_like(t5_stock) -> Tokenizer:
    return t5_stock.spelling(TRICKY + [ALPHABET])


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory) -> Tokenizer:
    out = tmp_path_factory.mktemp("trained")
    return train_tokenizer(_texts(data_dir, 800) + TRICKY + [ALPHABET], out, vocab_size=400, model_type="bpe",
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
    rng = random.Random(0)
    texts = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40))).lstrip() for _ in range(300)]
    for text, ids in zip(texts, tok.encode_batch(texts)):
        assert tok.unk_id not in ids
        assert tok.decode(ids) == text


def test_stock_t5_pipeline_loses_code_and_growth_keeps_its_ids(t5_stock: Tokenizer, t5_like: Tokenizer) -> None:
    assert t5_stock.decode(t5_stock.encode(EOT)) != EOT  # why: T5's pre-tokenizer drops newlines
    assert t5_stock.spelling(["Tom has 3 apples."]) is t5_stock  # texts it spells: used as it is
    assert t5_stock.vocab_size == 500 + 100  # sentinels: the model's vocab must cover them
    # the base vocab and the sentinels keep their ids; new symbols take the ids after them
    plain = "Natalia sold 48 clips in May, 3.5 each."
    assert t5_like.encode(plain) == t5_stock.encode(plain)
    for sentinel in ("<extra_id_0>", "<extra_id_99>"):
        assert t5_like.hf.convert_tokens_to_ids(sentinel) == t5_stock.hf.convert_tokens_to_ids(sentinel)
    added = [t5_like.hf.convert_tokens_to_ids(s) for s in t5_like.meta["added"]]
    assert sorted(i for i in added if i >= 600) == list(range(600, t5_like.vocab_size))
    for s in ("\n", "{", "<", "    ", "é"):
        assert s in t5_like.meta["added"] or t5_stock.spells(s)
    assert [t5_like.hf.convert_ids_to_tokens(i) for i in t5_like.encode("a\n    b", add_eos=False)][1:3] == \
        ["\n", "    "]


def test_decode_stops_at_eos_and_drops_pad_and_sentinels(tok: Tokenizer) -> None:
    ids = tok.encode("x = 3\nans = x")
    garbage = tok.encode("never shown")
    assert tok.decode(ids + garbage) == "x = 3\nans = x"
    assert tok.decode([tok.pad_id] + ids[:-1] + [tok.pad_id] * 3) == "x = 3\nans = x"


def test_saved_dirs_are_what_plain_transformers_reads(tok: Tokenizer, tmp_path) -> None:
    tok.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["clean_up_tokenization_spaces"] is False
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert len(hf) == tok.vocab_size and (hf.pad_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2)
    for text in TRICKY:
        ids = hf(text)["input_ids"]
        assert ids == tok.encode(text)
        assert hf.decode(ids, skip_special_tokens=True) == text
    assert Tokenizer.load(tmp_path).encode_batch(TRICKY) == tok.encode_batch(TRICKY)


def test_trained_whitespace_symbols_are_single_pieces_and_digits_split(trained: Tokenizer) -> None:
    symbol_ids = {trained.hf.convert_tokens_to_ids(s) for s in WHITESPACE_SYMBOLS}
    assert max(symbol_ids) < 400 and trained.vocab_size == 400  # user-defined pieces: no added ids
    ids = trained.encode("a\n    b", add_eos=False)
    assert sum(i in symbol_ids for i in ids) == 2  # newline, one indent level
    pieces = trained.hf.convert_ids_to_tokens(trained.encode("12345", add_eos=False))
    assert [p.lstrip("▁") for p in pieces if p.lstrip("▁")] == list("12345")
    assert trained.meta["format"] == 2 and trained.meta["split_digits"] is True


def test_check_targets_names_the_text_character_and_fix(t5_stock: Tokenizer, trained: Tokenizer) -> None:
    trained.check_targets(TRICKY, [f"r{i}" for i in range(len(TRICKY))])
    with pytest.raises(SpellingError, match=r"row 2: .*'\\n' \(U\+000A\) at position 1.*Fix: add it"):
        t5_stock.check_targets(["ok", "a\nb"], ["row 1", "row 2"])
    with pytest.raises(SpellingError, match="leading whitespace.*Fix: strip"):
        trained.check_targets([" x = 1"], ["f.jsonl:3"])


def test_check_inputs_names_unknown_characters_only(t5_stock: Tokenizer) -> None:
    t5_stock.check_inputs(["Tom has 3\napples.", "a\u00a0b ﬁx"], ["q1", "q2"])  # normalised, not lost
    with pytest.raises(SpellingError, match=r"q2: .*no token for '\{' \(U\+007B\).*Fix: replace"):
        t5_stock.check_inputs(["fine", "x = {1}"], ["q1", "q2"])
    with pytest.raises(SpellingError, match=r"q1: .*'½'"):  # NFKC makes it 1⁄2, and ⁄ has no token
        t5_stock.check_inputs(["½ cup"], ["q1"])


def test_escape_era_dirs_still_encode_and_decode_as_they_were_trained(data_dir, tmp_path) -> None:
    """A vocab trained before the native pipeline (escape markers as pieces, nmt_nfkc): its students wrote the
    escaped form, so it keeps escaping inputs and unescaping outputs exactly as then."""
    texts = [t.replace("\n", " ~n ") for t in _texts(data_dir, 300)]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(tmp_path / "spiece"),
                                   vocab_size=300, model_type="bpe", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   user_defined_symbols=list(MARKERS), normalization_rule_name="nmt_nfkc",
                                   required_chars="".join(c for c in string.printable if not c.isspace()),
                                   minloglevel=2)
    T5TokenizerFast.from_pretrained(str(tmp_path), extra_ids=0).save_pretrained(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"model_type": "bpe", "vocab_size": 300, "split_digits": True,
                                                  "escape": "~"}))
    old = Tokenizer.load(tmp_path)
    assert old.escaper is not None
    # the escaped forms the escape-era code wrote (golden strings)
    text = "def f(x):\n    return {x: 1} if x < 2 else ~x"
    assert old.escaper.escape(text) == "def f(x): ~n~i return {x: 1} if x < 2 else ~ex"
    assert old.escaper.escape("a  b\tc ~n") == "a ~s~s b ~t c ~en"
    student_output = old.hf("def f(x): ~n~i return {x: 1} if x < 2 else ~ex", add_special_tokens=False)["input_ids"]
    assert old.decode(student_output + [old.eos_id]) == text
    assert old.decode(old.encode(POT)) == POT
    old.check_inputs(["{x} ~n"], ["q"])
    with pytest.raises(TokenizerError, match="escape-era"):
        old.with_symbols(["{"])


def test_load_errors_name_the_path(tmp_path) -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing")
    with pytest.raises(TokenizerError, match=str(tmp_path)):
        Tokenizer.load(tmp_path)


def test_train_rejects_bad_model_type(tmp_path) -> None:
    with pytest.raises(TokenizerError, match="model_type"):
        train_tokenizer(["a b c"], tmp_path, vocab_size=50, model_type="wordpiece")


def test_trained_unigram_with_extra_symbols(data_dir, tmp_path) -> None:
    tok = train_tokenizer(_texts(data_dir, 300) + [POT, EOT], tmp_path, vocab_size=300, model_type="unigram",
                          split_digits=False, symbols=("**",))
    assert tok.meta["symbols"] == [*WHITESPACE_SYMBOLS, "**"] and tok.meta["model_type"] == "unigram"
    for text in (POT, EOT, COT, "x = 2 ** 10"):
        assert tok.decode(tok.encode(text)) == text
    assert "**" in tok.hf.convert_ids_to_tokens(tok.encode("x = 2 ** 10", add_eos=False))
