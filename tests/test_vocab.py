"""Rows for tokens added to a pretrained student's tokenizer: mean-initialised, trained rows untouched."""
from __future__ import annotations

import json

import numpy as np
import pytest
from flax import traverse_util
from helpers_hf import FAMILIES, make_tiny_hf_t5
from helpers_tokenizer import make_t5_like_spiece

from distill_jax.model.hf import load_hf
from distill_jax.model.tokenizer import Tokenizer
from distill_jax.model.vocab import grow_for_tokenizer, grow_rows, grown_config

PROGRAM = "n = {'a': 4}\nif n['a'] < 9:\n    ans = n['a']"


@pytest.fixture(scope="module")
def stock(data_dir, tmp_path_factory) -> Tokenizer:
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").open(encoding="utf-8")][:300]
    return Tokenizer.load(make_t5_like_spiece(tmp_path_factory.mktemp("tok"), [r["question"] for r in rows],
                                              vocab_size=250))


def _vocab_tensors(params) -> list[np.ndarray]:
    """[vocab, d_model] views of the embedding and (untied) head."""
    out = [np.asarray(params["shared"]["embedding"])]
    if "lm_head" in params:
        out.append(np.asarray(params["lm_head"]["kernel"]).T)
    return out


def test_grown_config_rounds_up_only_when_needed(stock, tmp_path) -> None:
    config, _ = load_hf(make_tiny_hf_t5(tmp_path, vocab_size=stock.vocab_size)[0])
    assert grown_config(config, stock.vocab_size) is config
    assert grown_config(config, stock.vocab_size + 1).vocab_size == 384  # 351 -> a multiple of 128


@pytest.mark.parametrize("family", FAMILIES)
def test_added_tokens_get_the_mean_of_the_trained_rows(stock, tmp_path, family) -> None:
    hf_dir, _ = make_tiny_hf_t5(tmp_path, family=family, vocab_size=stock.vocab_size)
    stock.save(hf_dir)
    config, params = load_hf(hf_dir)
    assert grow_for_tokenizer(params, config, hf_dir, stock) is params  # nothing added: the identity
    grown = stock.spelling([PROGRAM])
    added = grown.vocab_size - stock.vocab_size
    assert added > 3  # newline, indent, braces, `<` at least
    big = grown_config(config, grown.vocab_size)
    out = grow_for_tokenizer(params, big, hf_dir, grown)
    for before, after in zip(_vocab_tensors(params), _vocab_tensors(out), strict=True):
        assert after.shape == (big.vocab_size, before.shape[1])
        np.testing.assert_array_equal(after[:stock.vocab_size], before)
        np.testing.assert_allclose(after[stock.vocab_size:], np.broadcast_to(before.mean(0), after[
            stock.vocab_size:].shape), rtol=1e-6)
    flat, flat_out = (traverse_util.flatten_dict(p, sep="/") for p in (params, out))
    assert flat.keys() == flat_out.keys()
    for path in flat:
        if not path.startswith(("shared/", "lm_head/")):
            assert flat_out[path] is flat[path]  # every other weight is the loaded one


def test_grow_rows_keeps_rows_beyond_the_tokens(tmp_path) -> None:
    """A checkpoint with spare rows (T5's 32128 for 32100 tokens): only the rows of new tokens change."""
    config, params = load_hf(make_tiny_hf_t5(tmp_path, family="v1_0", vocab_size=40)[0])
    emb = np.asarray(params["shared"]["embedding"])
    out = np.asarray(grow_rows(params, config, trained=30, tokens=33)["shared"]["embedding"])
    np.testing.assert_array_equal(out[:30], emb[:30])
    np.testing.assert_allclose(out[30:33], np.broadcast_to(emb[:30].mean(0), (3, emb.shape[1])), rtol=1e-6)
    np.testing.assert_array_equal(out[33:], emb[33:])
    with pytest.raises(ValueError, match="trained rows"):
        grow_rows(params, config, trained=0, tokens=3)
